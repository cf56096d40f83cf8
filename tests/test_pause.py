"""Pause and resume of a target: nothing reaches it while it is paused, its records wait (held,
not failed, not retried), the other targets go on, and on resume every record reaches it once.
Under `s360bridge run` with real HTTP both ways, and the races and corners in process."""

from __future__ import annotations

import getpass
import json
import os
import signal
import sqlite3
import subprocess
import threading
from collections import Counter

import pytest
import requests

from s360bridge.core.operations import admin, pause, retention
from s360bridge.core.operations.audit import Actor, entries
from s360bridge.core.pipeline.receiver import create_app
from s360bridge.core.pipeline.worker import Worker
from s360bridge.core.storage.rawsql import index_plans_only, run

from .conftest import (
    SECRETS_ENV,
    Journal,
    base_config,
    bridge_of,
    drain,
    fixture,
    post,
    write_config,
)
from .helpers import ledger
from .helpers.processes import S360BRIDGE, free_port, healthy, start, wait_until
from .helpers.records import numbered_orders

ME = Actor("tester")


def crm_config(tmp_path, crm, others=("datx",), **engine) -> object:
    """Orders go to the warehouse (or ``others``) and to the reference CRM over HTTP."""
    cfg = base_config(tmp_path)
    cfg["targets"]["crm"] = {"type": "http_crm", "orders": {"url": f"{crm.url}/api/orders"},
                             "timeout_seconds": 30}
    cfg["streams"]["orders"]["targets"] = [*others, "crm"]
    cfg["engine"].update(engine)
    return write_config(tmp_path, cfg)


def cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, **SECRETS_ENV}
    env.pop("S360BRIDGE_DATABASE_URL", None)
    done = subprocess.run([S360BRIDGE, *args], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done


def test_a_target_paused_during_a_burst_gets_nothing_until_resumed_then_all_once(
        tmp_path, crm, secrets_env):
    """`s360bridge run` takes orders from two posting threads and delivers them to the
    warehouse and the reference CRM; `s360bridge pause` stops the CRM mid-burst. No order that
    arrived after the pause reaches the CRM, the warehouse gets every order, and each order is
    either at the CRM or held for it, exactly, none failed or retried; `s360bridge resume`
    then brings the CRM every held order, once."""
    path = crm_config(tmp_path, crm, poll_interval_seconds=0.05, batch_size=50)
    bridge_of(path).close()
    engine_db, warehouse = tmp_path / "engine.db", tmp_path / "warehouse.db"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "run.log"
    proc = start(["run", "-c", str(path), "--port", str(port)], log)
    wait_until(lambda: healthy(url) and "worker started" in log.read_text(), 30,
               "the receiver and the worker to be ready", proc)
    book, stop = ledger.Ledger(), threading.Event()

    def post_orders(thread_no: int):
        session = requests.Session()
        for batch in range(1000):
            if stop.is_set():
                return
            body = numbered_orders(50_000_000 + thread_no * 100_000 + batch * 10, 10)
            book.answer(10, session.post(f"{url}/s360/orders/testvenue", json=body, timeout=10))

    threads = [threading.Thread(target=post_orders, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()

    def at_crm() -> set[str]:
        return {str(k) for (s, k) in crm.pushes() if s == "orders"}

    def inbox() -> dict[str, int]:
        with sqlite3.connect(engine_db) as conn:
            return dict(conn.execute("SELECT record_key, id FROM inbox"))

    try:
        wait_until(lambda: len(at_crm()) >= 100, 60, "the CRM to get orders", proc)
        said = cli("pause", "-c", str(path), "--institution", "testvenue", "--target", "crm")
        assert said.stdout == "paused testvenue/crm: its records wait for the resume\n"
        last_before = max(inbox().values())  # every later order was claimed after the pause
        wait_until(lambda: sum(seq > last_before for seq in inbox().values()) >= 200, 60,
                   "200 orders stored after the pause", proc)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    accepted = book.accepted
    assert book.refused == {} and book.unanswered == 0

    bridge = bridge_of(path)

    def held() -> int:
        return sum(p["held"] for p in pause.paused(bridge))

    # the warehouse gets everything meanwhile; each order is at the CRM or held for it
    wait_until(lambda: len(ledger.sqlite_rows(warehouse, "orders", "order_id").pushes)
               == accepted and held() + len(at_crm()) == accepted, 60, "the held orders", proc)
    while_paused = at_crm()
    after_pause = {k for k, seq in inbox().items() if seq > last_before}
    print(f"\npause: accepted={accepted} at_crm={len(while_paused)} held={held()} "
          f"arrived_after_pause={len(after_pause)}")
    assert len(after_pause) >= 200 and not after_pause & while_paused
    assert held() == accepted - len(while_paused) >= 200
    status = json.loads(cli("status", "-c", str(path), "--json").stdout)["testvenue"]
    assert status["paused"]["crm"]["held"] == held()
    assert status["streams"]["orders"]["states"] == {"done": len(while_paused),
                                                     "pending": held()}
    with sqlite3.connect(engine_db) as conn:  # held is neither a failure nor a retry
        assert conn.execute("SELECT count(*) FROM inbox WHERE attempts > 0 OR last_error "
                            "IS NOT NULL OR state != 'accepted'").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM queue").fetchone() == (0,)

    said = cli("resume", "-c", str(path), "--institution", "testvenue", "--target", "crm")
    assert said.stdout == \
        f"resumed testvenue/crm: {accepted - len(while_paused)} held record(s) queued\n"
    figures = book.settle(ledger.engine_url(path), "orders", lambda: [
        ledger.sqlite_rows(warehouse, "orders", "order_id"), ledger.crm(crm, "orders")])
    assert figures["delivered[crm]"] == figures["delivered[datx]"] == accepted
    assert crm.repeated == 0  # no order pushed twice, even where the CRM would drop it
    with sqlite3.connect(engine_db) as conn:  # one attempt per order and target, delivered
        assert Counter(dict(((t, o), n) for t, o, n in conn.execute(
            "SELECT target, outcome, count(*) FROM attempt GROUP BY target, outcome"))) == \
            {("datx", "delivered"): accepted, ("crm", "delivered"): accepted}
    trail = [(e["action"], e["actor"], e["via"], e["detail"]) for e in reversed(entries(bridge))]
    assert trail == [("pause", getpass.getuser(), "cli", {"target": "crm"}),
                     ("resume", getpass.getuser(), "cli",
                      {"target": "crm", "requeued": accepted - len(while_paused)})]
    bridge.close()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql")])
def test_a_resume_while_a_batch_is_delivered_leaves_nothing_held(tmp_path, secrets_env,
                                                                backend, request):
    """The worker claimed while the journal was paused; the resume comes before the batch is
    completed, so it finds nothing held yet: the completion sees that the journal is no longer
    paused and keeps the records queued instead of holding them, and they reach the journal.
    On PostgreSQL the completion locks the pauses it reads, against a concurrent resume."""
    bridge = request.getfixturevalue("pg_bridge") if backend == "postgresql" \
        else bridge_of(write_config(tmp_path, base_config(tmp_path)))
    journal = Journal(tmp_path / "journal.jsonl")
    post(create_app(bridge).test_client(), "orders", fixture("order_sale.json"))
    assert pause.pause(bridge, "testvenue", "journal", actor=ME)
    pushed, original = [], bridge.hooks.push

    def push_then_resume(inst, stream, target, items):
        pushed.append(target.name)
        if pushed == ["datx"]:  # after the claim, before the completion
            assert pause.resume(bridge, "testvenue", "journal", actor=ME) == 0
        return original(inst, stream, target, items)

    bridge.hooks.push = push_then_resume
    assert Worker(bridge).run_once() == 2
    assert pushed == ["datx"] and journal.pushes() == {}
    assert pause.paused(bridge) == []
    assert drain(bridge) == 2
    assert pushed == ["datx", "journal"]
    assert journal.pushes() == {"10000815533": 1, "10000815601": 1}
    assert admin.status(bridge)["testvenue"]["streams"]["orders"]["states"] == {"done": 2}
    bridge.close()


def test_held_records_outlast_retention_and_a_dead_letter_waits_for_its_replay(
        tmp_path, crm, secrets_env):
    """Paused journal, and a CRM that refuses one order for good: that order is a dead letter,
    the others reach the CRM, and all are held for the journal. The retention purge keeps them
    however old; the resume queues the three that wait (not the dead letter), which reach the
    journal alone; the replay of the dead letter, once the CRM takes it, reaches both."""
    crm.poison["60000001"] = 422
    bridge = bridge_of(crm_config(tmp_path, crm, others=("journal",)))
    journal = Journal(tmp_path / "journal.jsonl")
    post(create_app(bridge).test_client(), "orders", numbered_orders(60_000_000, 4))
    assert pause.pause(bridge, "testvenue", "journal", actor=ME)
    assert not pause.pause(bridge, "testvenue", "journal", actor=ME)  # paused already
    assert drain(bridge) == 4
    assert journal.pushes() == {}
    assert set(k for (_, k) in crm.received) == {60_000_000, 60_000_002, 60_000_003}
    held = pause.paused(bridge)
    assert [(p["target"], p["paused_by"], p["held"]) for p in held] == [("journal", "tester", 3)]
    assert admin.status(bridge)["testvenue"]["streams"]["orders"]["states"] == \
        {"pending": 3, "dead": 1}
    far = held[0]["paused_at"] + bridge.settings.engine.retention_hours * 3600 * 10
    assert retention.purge(bridge, now=far) == 0

    assert pause.resume(bridge, "testvenue", "journal", actor=ME) == 3
    assert pause.resume(bridge, "testvenue", "journal", actor=ME) is None  # not paused now
    assert drain(bridge) == 3
    assert journal.pushes() == {"60000000": 1, "60000002": 1, "60000003": 1}
    assert crm.received["orders", 60_000_000] == 1  # the CRM had them: not pushed again
    crm.poison.clear()
    assert admin.replay(bridge, "testvenue", actor=ME) == 1
    assert drain(bridge) == 1
    assert journal.pushes()["60000001"] == 1 and crm.received["orders", 60_000_001] == 1
    assert [e["action"] for e in entries(bridge)] == ["replay", "resume", "pause"]
    bridge.close()


def test_pause_names_what_it_cannot_pause(invoke):
    unknown = invoke("pause", "--institution", "testvenue", "--target", "nowhere")
    assert unknown.exit_code == 2
    assert unknown.output.endswith(
        "error: institution testvenue has no target 'nowhere' (its targets: datx, journal)\n")
    assert invoke("pause", "--institution", "elsewhere", "--target", "datx").output.endswith(
        "error: unknown institution 'elsewhere' (configured: testvenue)\n")
    assert invoke("resume", "--institution", "testvenue", "--target", "datx").output == \
        "testvenue/datx was not paused\n"
    assert invoke("pause", "--institution", "testvenue", "--target", "datx").output == \
        "paused testvenue/datx: its records wait for the resume\n"
    assert invoke("pause", "--institution", "testvenue", "--target", "datx").output == \
        "testvenue/datx was paused already\n"
    assert "target datx: sql sqlite:///" in invoke("status").output
    assert "PAUSED since" in invoke("status").output


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_held_records_are_read_from_their_partial_index(tmp_path, secrets_env, backend,
                                                           request):
    """What waits for paused targets (the status, and /metrics beside the queue) and the view's
    probe per record read the partial index of held deliveries, never all of them; on
    PostgreSQL without statistics too."""
    bridge = request.getfixturevalue("pg_bridge") if backend == "postgresql" \
        else bridge_of(write_config(tmp_path, base_config(tmp_path)))
    post(create_app(bridge).test_client(), "orders", fixture("order_sale.json"))
    assert pause.pause(bridge, "testvenue", "journal", actor=ME)
    drain(bridge)
    with bridge.engine.connect() as conn:
        index_plans_only(conn)
        assert pause.held(conn)[("testvenue", "journal")][0] == 2
        if backend == "sqlite":
            held = [r[-1] for r in run(conn, "EXPLAIN QUERY PLAN " + pause.HELD["sqlite"])]
            view = [r[-1] for r in run(conn, "EXPLAIN QUERY PLAN SELECT state FROM inbox_state")]
            assert held[:2] == ["SCAN d USING INDEX ix_delivery_held",
                                "SEARCH i USING INTEGER PRIMARY KEY (rowid=?)"], held
            assert any("ix_delivery_held (inbox_id=?)" in step for step in view), view
        else:
            plan = json.dumps(run(conn, "EXPLAIN (FORMAT JSON) " + pause.HELD["postgresql"]))
            assert '"Index Name": "ix_delivery_held"' in plan and "inbox_pkey" in plan, plan
            assert "Seq Scan" not in plan, plan
        conn.rollback()
    bridge.close()
