"""Faults a real `s360bridge run` meets, each settled on the ledger (tests/helpers/ledger.py):
PostgreSQL stopped and restarted mid-burst (a private cluster, never the shared one; mid-drain:
test_faults_drain.py), the
SQLite engine database's disk full (a size-limited tmpfs), and hostile HTTP (huge headers, path
tricks, unknown methods, oversized bodies). docs/guarantees.md names what each proves."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import types
from pathlib import Path

import pytest
import requests

from .conftest import API_KEY, base_config, bridge_of, write_config
from .helpers import ledger
from .helpers.postgres import needs_pg, start_cluster, stop_cluster
from .helpers.processes import checks, free_port, healthy, start, stop, wait_until
from .helpers.stored import totals

LIMITS = {"request_timeout_seconds": 1, "postgres_connect_timeout_seconds": 2,
          "postgres_statement_timeout_seconds": 2, "pool_timeout_seconds": 1,
          "ready_within_seconds": 1, "backoff_base_seconds": 0.2, "backoff_max_seconds": 1,
          "max_attempts": 1000}


def journal_targets(tmp_path: Path, stream: str = "ticketchecks"):
    return lambda: [ledger.journal(tmp_path / "journal.jsonl", stream)]


def config_for(tmp_path: Path, database_url: str, **engine) -> Path:
    """Ticket checks to a deduplicating journal only, the engine database at ``database_url``."""
    cfg = base_config(tmp_path)
    cfg["engine"].update(database_url=database_url, **engine)
    cfg["targets"]["journal"]["dedupe"] = True
    cfg["streams"]["ticketchecks"]["targets"] = ["journal"]
    return write_config(tmp_path, cfg)


def start_run(config: Path, log: Path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(["run", "-c", str(config), "--port", str(port)], log)
    wait_until(lambda: healthy(url), 30, "the receiver to be ready", proc)
    return proc, url


class Sender:
    """Posts batches of 10 ticket checks the way S-360 does: a batch refused (503) or cut off is
    sent again until it gets a 200, each answer in the ledger; ``stop`` ends it between
    batches, so that every batch it began is answered 200 in the end."""

    def __init__(self, url: str, book: ledger.Ledger, first_id: int, threads: int = 2):
        self.url, self.book, self.stopping = url, book, threading.Event()
        self.batches = 0
        self.threads = [threading.Thread(target=self._run, args=(first_id + i * 10**6,))
                        for i in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self, first_id: int):
        session = requests.Session()
        batch = 0
        while not self.stopping.is_set():
            body = checks(first_id + batch * 10, 10)
            while True:  # until a 200
                try:
                    resp = session.post(f"{self.url}/s360/ticketchecks/testvenue", json=body,
                                        headers={"x-api-key": API_KEY}, timeout=30)
                except requests.RequestException:
                    resp = None
                self.book.answer(len(body), resp)
                if resp is not None and resp.status_code == 200:
                    break
                self.stopping.wait(0.1)  # S-360 waits M minutes; the test, a tenth of a second
            batch += 1
            self.batches += 1

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(120)
        assert not any(t.is_alive() for t in self.threads)


@needs_pg
def test_postgresql_stopped_and_restarted_mid_burst(tmp_path, secrets_env, private_cluster):
    """The engine's PostgreSQL stops (fast shutdown: its connections are cut) while two clients
    post: the receiver answers 503 and stays up; once the server is back, the batches S-360
    sends again are stored, and the worker resumes by itself and delivers each version once."""
    pg = private_cluster
    config = config_for(tmp_path, pg.url("faults"), **LIMITS)
    proc, url = start_run(config, tmp_path / "run.log")
    book = ledger.Ledger()
    sender = Sender(url, book, 1_000_000)
    try:
        wait_until(lambda: book.accepted >= 200, 30, "200 records acknowledged", proc)
        stop_cluster(pg)
        wait_until(lambda: book.refused[503] >= 50, 30, "503s while the database is down", proc)
        assert requests.get(f"{url}/health/ready", timeout=10).status_code == 503
        assert requests.get(f"{url}/health/live", timeout=5).status_code == 200
        start_cluster(pg)
        taken = book.accepted
        wait_until(lambda: book.accepted >= taken + 200, 60, "200s again", proc)
    finally:
        sender.stop()
    figures = book.settle(pg.url("faults"), "ticketchecks", journal_targets(tmp_path),
                          timeout=60)
    assert set(book.refused) == {503} and book.unanswered == 0
    assert figures["accepted"] + figures["duplicates"] == sender.batches * 10
    wait_until(lambda: healthy(url), 10, "ready again", proc)
    assert stop(proc) == 0


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of 1 MiB for the engine database; ``grow()`` gives it room again."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here: {mounted.stderr.strip()}")

    def grow():
        subprocess.run(["mount", "-o", "remount,size=64m", str(folder)], check=True)

    yield types.SimpleNamespace(path=folder, grow=grow)
    subprocess.run(["umount", "-l", str(folder)], check=False)


def test_sqlite_disk_full_answers_503_stores_nothing_half_and_recovers(tmp_path, secrets_env,
                                                                      small_disk):
    """The engine database's filesystem fills up under a burst: each refused request is a 503
    with nothing of it stored, the process stays up, and once there is room again S-360's
    resends are stored and everything accepted is delivered once."""
    config = config_for(tmp_path, f"sqlite:///{small_disk.path}/engine.db", **LIMITS)
    bridge = bridge_of(config)  # the schema, as `db upgrade` makes it
    bridge.close()
    proc, url = start_run(config, tmp_path / "run.log")
    book = ledger.Ledger()
    sender = Sender(url, book, 5_000_000)
    try:
        wait_until(lambda: book.refused[503] >= 20, 60, "503s once the disk is full", proc)
        statvfs = os.statvfs(small_disk.path)
        print(f"disk full: {statvfs.f_bavail} blocks free, {book.accepted} accepted before")
        assert requests.get(f"{url}/health/live", timeout=5).status_code == 200
        small_disk.grow()
        taken = book.accepted
        wait_until(lambda: book.accepted >= taken + 100, 60, "200s again", proc)
    finally:
        sender.stop()
    figures = book.settle(f"sqlite:///{small_disk.path}/engine.db", "ticketchecks",
                          journal_targets(tmp_path), timeout=60)
    assert set(book.refused) == {503} and book.unanswered == 0
    # nothing of a refused request was stored: its resend is new, never a duplicate
    assert figures["duplicates"] == 0 and figures["accepted"] == sender.batches * 10
    assert "database or disk is full" in (tmp_path / "run.log").read_text()
    assert stop(proc) == 0


def raw(port: int, request: bytes) -> int:
    """Send ``request`` as written on a socket of its own; answer the status code, or 0 when
    the server closed the connection without an answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:  # the server answered and closed before the whole request was read
            pass
        answer = b""
        try:
            while chunk := s.recv(65536):
                answer += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0


def http(method: str, path: str, body: bytes = b"[]", headers: dict | None = None) -> bytes:
    head = {"Host": "127.0.0.1", "x-api-key": API_KEY, "Content-Type": "application/json",
            "Content-Length": str(len(body)), "Connection": "close", **(headers or {})}
    lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in head.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


VALID = b'[{"ticket_check_id": 1, "barcode": "01", "access_time": "2024-03-14 19:21:07", ' \
        b'"check_flow": "IN", "result": "OK"}]'
HOSTILE = {
    "path with ..": http("POST", "/s360/../s360/ticketchecks/testvenue", VALID),
    "path with .. to another stream": http("POST", "/s360/orders/../ticketchecks/testvenue",
                                           VALID),
    # the server decodes %2F before routing (WSGI's PATH_INFO): the canonical route, its checks
    "encoded slash, no key": http("POST", "/s360/ticketchecks%2Ftestvenue", VALID,
                                  {"x-api-key": ""}),
    "encoded slash in the institution": http("POST", "/s360/ticketchecks/testvenue%2F..%2Fx",
                                             VALID),
    "encoded dots": http("POST", "/s360/%2e%2e/ticketchecks/testvenue", VALID),
    "double slash": http("POST", "/s360//ticketchecks/testvenue", VALID),
    "unknown method": http("BREW", "/s360/ticketchecks/testvenue", VALID),
    "PUT": http("PUT", "/s360/ticketchecks/testvenue", VALID),
    "huge header": http("POST", "/s360/ticketchecks/testvenue", VALID,
                        {"X-Padding": "a" * 300_000}),
    "many headers": http("POST", "/s360/ticketchecks/testvenue", VALID,
                         {f"X-H{i}": "b" * 100 for i in range(3000)}),
    "oversized body": http("POST", "/s360/ticketchecks/testvenue",
                           b"[" + b" " * 70_000 + VALID[1:]),
    "Content-Length beyond the limit": http("POST", "/s360/ticketchecks/testvenue", VALID,
                                            {"Content-Length": str(10**12)}),
    "wrong key": http("POST", "/s360/ticketchecks/testvenue", VALID, {"x-api-key": "nope"}),
    "key of another stream's header": http("POST", "/s360/contacts/testvenue", VALID,
                                           {"Authorization": f"Basic {API_KEY}"}),
    "unknown institution": http("POST", "/s360/ticketchecks/othervenue", VALID),
}


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=needs_pg)])
def test_hostile_http_against_a_real_server_is_4xx_and_stores_nothing(tmp_path, secrets_env,
                                                                      request, backend):
    """Requests written byte by byte against `s360bridge run`: each is refused with a 4xx (or
    its connection closed unanswered, never a 200 or a 5xx), nothing of them is stored, and
    the server goes on answering a legitimate call. On both engine databases."""
    engine_url = f"sqlite:///{tmp_path}/engine.db" if backend == "sqlite" else \
        request.getfixturevalue("pg_schemas").new("hostile")
    config = config_for(tmp_path, engine_url, max_body_bytes=65_536)
    bridge = bridge_of(config)
    proc, url = start_run(config, tmp_path / "run.log")
    port = int(url.rsplit(":", 1)[1])
    try:
        answers = {name: raw(port, request) for name, request in HOSTILE.items()}
        print(f"hostile HTTP: {answers}")
        # a double slash is redirected (308, werkzeug's merge_slashes) to the canonical path,
        # where every check applies again; nothing else gets past a 4xx
        assert answers.pop("double slash") == 308
        assert all(400 <= code < 500 or code == 0 for code in answers.values()), answers
        assert answers["unknown method"] == answers["PUT"] == 405
        assert answers["oversized body"] == 413
        assert answers["wrong key"] == answers["unknown institution"] == 401
        assert answers["encoded slash, no key"] == 401
        assert answers["huge header"] == answers["many headers"] == 431
        assert totals(bridge) == (0, 0)
        book = ledger.Ledger()
        book.answer(1, requests.post(f"{url}/s360/ticketchecks/testvenue", data=VALID,
                                     headers={"x-api-key": API_KEY}, timeout=10))
        figures = book.settle(engine_url, "ticketchecks", journal_targets(tmp_path), timeout=30)
        assert figures["accepted"] == 1
    finally:
        bridge.close()
        assert stop(proc) == 0
