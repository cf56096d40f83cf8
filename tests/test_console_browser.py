"""The operator's console walked in a real browser (Debian's Chromium, tests/helpers/browser.py)
against a real ``s360bridge run`` with its operator listener: a visitor without credentials
sees nothing; a quarantined ticket check is found by its key, reprocessed after the config is
fixed and seen delivered; a target paused during a burst gets nothing until it is resumed, then
every record once. Screenshots go to the test's temporary folder."""

from __future__ import annotations

import socket
import sqlite3
import threading

import requests
from selenium.webdriver.common.by import By

from .conftest import SECRETS_ENV, Journal, base_config, write_config
from .helpers.browser import chromium, page_text, shows, snap, wait_for
from .helpers.metrics import OPERATOR_AUTH, OPERATOR_ENV, operator_settings
from .helpers.processes import checks, free_port, healthy, start, stop, wait_until

CHECK_ID = 10228845124401
EXPORT_KEY = {"x-api-key": SECRETS_ENV["TEST_EXPORT_KEY"]}


def listening(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 401
    except requests.RequestException:
        return False


def in_warehouse(tmp_path) -> int:
    path = tmp_path / "warehouse.db"
    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        try:
            return db.execute("SELECT count(*) FROM ticket_checks").fetchone()[0]
        except sqlite3.OperationalError:  # not made yet
            return 0


def named_as_the_venue_does(first: int, n: int) -> list[dict]:
    """Ticket checks whose id column is ``scan_id``, as the venue's export query names it."""
    rows = checks(first, n)
    for row in rows:
        row["scan_id"] = row.pop("ticket_check_id")
    return rows




def test_an_operator_walks_the_console_in_chromium(tmp_path, monkeypatch, secrets_env):
    for k, v in OPERATOR_ENV.items():
        monkeypatch.setenv(k, v)
    cfg = base_config(tmp_path)
    port, ops_port = free_port(), free_port()
    cfg["engine"]["operator"] = operator_settings(ops_port)
    path = write_config(tmp_path, cfg)
    url, console = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{ops_port}"
    journal, shots = Journal(tmp_path / "journal.jsonl"), tmp_path / "screenshots"

    def run():
        proc = start(["run", "-c", str(path), "--port", str(port)], tmp_path / "run.log")
        wait_until(lambda: healthy(url) and listening(console), 60, "the bridge", proc)
        return proc

    proc = run()
    try:
        # a body bigger than the console's forms is refused before it is read, credentials
        # or not (waitress's 413, not 100 MB read first)
        with socket.create_connection(("127.0.0.1", ops_port), timeout=10) as raw:
            raw.sendall(b"POST /replay HTTP/1.1\r\nHost: console\r\n"
                        b"Content-Length: 100000000\r\n\r\n")
            assert raw.recv(64).startswith(b"HTTP/1.1 413")
        with chromium(screenshots=shots) as visitor:  # no credentials: nothing at all
            visitor.get(f"{console}/")
            assert page_text(visitor) == "" and not visitor.find_elements(By.TAG_NAME, "nav")
        with chromium(OPERATOR_AUTH, shots) as browser:
            # a ticket check the venue's export names differently: quarantined
            held = requests.post(f"{url}/s360/ticketchecks/testvenue",
                                 json=named_as_the_venue_does(CHECK_ID, 1),
                                 headers=EXPORT_KEY, timeout=10)
            assert held.json()["quarantined"] == 1
            browser.get(f"{console}/search")
            browser.find_element(By.NAME, "key").send_keys(str(CHECK_ID))
            browser.find_element(By.ID, "search").click()
            wait_for(browser, shows("quarantined (ticketchecks, held"), "the record found")
            snap(browser, "1-found-in-quarantine")

            # the fix: the venue's column mapped; the bridge started again with it
            stop(proc)
            cfg["streams"]["ticketchecks"]["options"] = {
                "columns": {"ticket_check_id": "scan_id"}}
            write_config(tmp_path, cfg)
            proc = run()
            browser.get(f"{console}/problems")
            browser.find_element(By.ID, "reprocess").click()
            wait_for(browser, shows("1 would be accepted"), "the dry run")
            snap(browser, "2-reprocess-dry-run")
            browser.find_element(By.ID, "confirm").click()
            wait_for(browser, shows("reprocessed: 1 accepted"), "the reprocess")
            wait_until(lambda: str(CHECK_ID) in journal.pushes(), 30, "the delivery", proc)
            browser.get(f"{console}/search?institution=testvenue&key={CHECK_ID}")
            delivered = [d.text.split()[:2]
                         for d in browser.find_elements(By.CSS_SELECTOR, "tr.delivery")]
            assert delivered == [["datx", "done"], ["journal", "done"]], delivered
            assert "quarantined (ticketchecks, reprocessed" in page_text(browser)
            snap(browser, "3-delivered")

            # the journal paused during a burst, then resumed: nothing lost, nothing twice
            sent = []

            def burst(first: int, batches: int):
                for b in range(batches):
                    batch = named_as_the_venue_does(first + 25 * b, 25)
                    r = requests.post(f"{url}/s360/ticketchecks/testvenue", json=batch,
                                      headers=EXPORT_KEY, timeout=30)
                    assert r.status_code == 200
                    sent.extend(str(c["scan_id"]) for c in batch)
            sender = threading.Thread(target=burst, args=(20000, 40))
            sender.start()
            wait_until(lambda: len(sent) >= 100, 30, "the burst to begin")
            browser.get(f"{console}/")
            browser.find_element(By.CSS_SELECTOR, "#target-testvenue-journal button").click()
            wait_for(browser, shows("testvenue/journal paused"), "the pause")
            sender.join()
            wait_until(lambda: in_warehouse(tmp_path) == 1 + len(sent), 60,
                       "the burst in the warehouse", proc)
            before = len(journal.lines())
            burst(30000, 2)  # after the pause, for sure: these stay held
            wait_until(lambda: in_warehouse(tmp_path) == 1 + len(sent), 60,
                       "the last batches in the warehouse", proc)
            assert len(journal.lines()) == before < 1 + len(sent)
            browser.get(f"{console}/")
            row = browser.find_element(By.ID, "target-testvenue-journal").text
            waiting = 1 + len(sent) - before
            assert f"{waiting} held" in row, row
            snap(browser, "4-paused-during-a-burst")
            browser.find_element(By.CSS_SELECTOR, "#target-testvenue-journal button").click()
            wait_for(browser, shows(f"resumed: {waiting} record(s) queued again"), "the resume")
            wait_until(lambda: len(journal.lines()) == 1 + len(sent), 60,
                       "every held record at the journal", proc)
            pushes = journal.pushes("ticketchecks")
            assert set(pushes) == {str(CHECK_ID), *sent} and set(pushes.values()) == {1}
            browser.get(f"{console}/audit")
            trail = page_text(browser)
            assert all(f"ops console {action}" in trail
                       for action in ("pause", "resume", "reprocess"))
            snap(browser, "5-audit-trail")
    finally:
        stop(proc)
    print(f"screenshots: {shots}")
