"""Real processes on loopback: crash safety under kill -9, two workers on one database, SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest
import requests
import yaml

from s360bridge.core.pipeline.ingest import ingest

from .conftest import API_KEY, SECRETS_ENV, Journal, base_config, bridge_of, write_config
from .helpers import ledger
from .helpers.processes import S360BRIDGE, checks, free_port, healthy, start, wait_until


def warehouse_keys(path: Path) -> list[str]:
    if not path.exists():
        return []
    with sqlite3.connect(path) as conn:
        try:
            return [r[0] for r in conn.execute("SELECT check_key FROM ticket_checks")]
        except sqlite3.OperationalError:  # the table is created with the first delivery
            return []


@pytest.fixture
def crash_config(tmp_path):
    cfg = base_config(tmp_path)
    cfg["engine"]["sqlite_synchronous"] = "FULL"
    cfg["engine"]["lease_seconds"] = 5  # a batch claimed when the process was killed comes back
    cfg["targets"]["journal"]["dedupe"] = True  # a push repeated after a crash is dropped
    return write_config(tmp_path, cfg)


def start_run(config: Path, log: Path, port: int | None = None, role: str = "run"):
    """`s360bridge run` (or `serve`) in a process group of its own, once its receiver
    answers."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start([role, "-c", str(config), "--port", str(port)], log)
    wait_until(lambda: healthy(url), 30, "the receiver to be ready", proc)
    return proc, url, port


def role_pids(log: Path, role: str) -> list[int]:
    """The pids `run` started ``role`` with, in order (its log says "receiver started (pid N)")."""
    return [int(line.rsplit("(pid ", 1)[1].rstrip(")")) for line in log.read_text().splitlines()
            if f" {role} started (pid " in line]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


def targets_of(tmp_path: Path, stream: str = "ticketchecks"):
    """The ledger's view of the warehouse table and the journal of the test configuration."""
    return lambda: [ledger.sqlite_rows(tmp_path / "warehouse.db", "ticket_checks", "check_key"),
                    ledger.journal(tmp_path / "journal.jsonl", stream)]


def burst(url: str, book: ledger.Ledger, stop: threading.Event, threads: int = 4):
    """Threads posting batches of 20 ticket checks until ``stop``; a batch whose connection is
    lost counts as unanswered (it may have been stored: S-360 would send it again)."""

    def one(thread_no: int):
        session = requests.Session()
        for batch in range(1000):
            if stop.is_set():
                return
            body = checks(10_000_000_000 + thread_no * 1_000_000 + batch * 20, 20)
            try:
                resp = session.post(f"{url}/s360/ticketchecks/testvenue", json=body,
                                    headers={"x-api-key": API_KEY}, timeout=10)
            except requests.RequestException:
                book.answer(len(body), None)
                if stop.wait(0.05):
                    return
                continue  # the receiver is gone for a while: try the next batch
            book.answer(len(body), resp)

    workers = [threading.Thread(target=one, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    return workers


def end_burst(stop: threading.Event, threads: list[threading.Thread]) -> None:
    stop.set()
    for t in threads:
        t.join(30)


def settle_burst(book: ledger.Ledger, config: Path, tmp_path: Path) -> None:
    """Every record that got a 200 delivered once, and no request refused."""
    figures = book.settle(ledger.engine_url(config), "ticketchecks", targets_of(tmp_path),
                          exact=False, timeout=120)
    assert figures["accepted"] >= 1700 and figures["refused"] == {}


@pytest.fixture
def pg_crash_config(crash_config, pg_schemas):
    """The crash configuration with its engine database in a PostgreSQL schema of its own."""
    cfg = yaml.safe_load(crash_config.read_text("utf-8"))
    cfg["engine"]["database_url"] = pg_schemas.new("crash")
    crash_config.write_text(yaml.safe_dump(cfg), "utf-8")
    return crash_config


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.parametrize("killed", ["run", "receiver", "worker"])
def test_kill_9_mid_burst_loses_nothing_that_got_a_200(tmp_path, request, killed, backend,
                                                       secrets_env):
    """`s360bridge run` (receiver and worker in one), or the receiver (`serve`) or the worker
    beside the other, killed with SIGKILL while four clients post: once it is back, every
    record that got a 200 is delivered exactly once to the warehouse and the journal. On
    PostgreSQL too (the engine's database, where the worker claims ahead and completes in the
    background; the warehouse stays a SQLite file)."""
    crash_config = request.getfixturevalue(
        "pg_crash_config" if backend == "postgresql" else "crash_config")
    log = tmp_path / "run.log"
    bridge_of(crash_config).close()  # `db upgrade`: `serve` and `worker` refuse to upgrade
    proc, url, port = start_run(crash_config, log, role="run" if killed == "run" else "serve")
    worker = None if killed == "run" else start(["worker", "-c", str(crash_config)],
                                                 tmp_path / "worker.log")
    if worker is not None:  # polling before the burst: it delivers from its first batches
        wlog = tmp_path / "worker.log"
        wait_until(lambda: wlog.exists() and "worker started" in wlog.read_text(), 60,
                   "the worker to start", worker)
    victim = {"run": proc, "receiver": proc, "worker": worker}[killed]
    book, stop = ledger.Ledger(), threading.Event()
    threads = burst(url, book, stop)
    try:
        wait_until(lambda: book.accepted >= 1500, 60, "1,500 acknowledged records")
        if killed == "worker":  # something claimed, then the worker dies mid-delivery
            wait_until(lambda: warehouse_keys(tmp_path / "warehouse.db"), 30,
                       "the worker to deliver", worker)
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(10)
        assert victim.returncode == -signal.SIGKILL
        if killed == "worker":  # the receiver goes on taking records while no worker runs
            taken = book.accepted
            wait_until(lambda: book.accepted >= taken + 200, 60, "200 more acknowledged", proc)
            worker = start(["worker", "-c", str(crash_config)], tmp_path / "worker.log")
        else:
            proc, url, port = start_run(crash_config, log, port,
                                        "run" if killed == "run" else "serve")
            taken = book.accepted
            wait_until(lambda: book.accepted >= taken + 200, 60, "200 more acknowledged", proc)
    finally:
        end_burst(stop, threads)
    settle_burst(book, crash_config, tmp_path)
    for p in (proc, worker):
        if p is not None:
            p.send_signal(signal.SIGTERM)
            assert p.wait(30) == 0


@pytest.mark.parametrize("victim", ["supervisor", "receiver", "worker"])
def test_kill_9_of_runs_supervisor_or_of_a_child_loses_nothing(tmp_path, crash_config, victim,
                                                                secrets_env):
    """kill -9 of `run`'s supervisor alone (its children stop by themselves, and `run` is
    started again) or of one of its children (the supervisor starts it again) while four
    clients post: every record that got a 200 is delivered exactly once."""
    log = tmp_path / "run.log"
    proc, url, port = start_run(crash_config, log)
    book, stop = ledger.Ledger(), threading.Event()
    threads = burst(url, book, stop)
    try:
        wait_until(lambda: book.accepted >= 1500, 60, "1,500 acknowledged records")
        children = role_pids(log, "receiver") + role_pids(log, "worker")
        if victim == "supervisor":
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(10) == -signal.SIGKILL
            wait_until(lambda: not any(map(alive, children)), 30, "the children to stop")
            proc, url, port = start_run(crash_config, log, port)
        else:
            os.kill(role_pids(log, victim)[0], signal.SIGKILL)
            wait_until(lambda: len(role_pids(log, victim)) == 2, 30, f"a new {victim}", proc)
            wait_until(lambda: healthy(url), 30, "the receiver to answer again", proc)
        taken = book.accepted
        wait_until(lambda: book.accepted >= taken + 200, 60, "200 more acknowledged", proc)
    finally:
        end_burst(stop, threads)
    settle_burst(book, crash_config, tmp_path)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_two_worker_processes_never_push_a_record_twice(tmp_path, secrets_env):
    cfg = base_config(tmp_path)
    cfg["engine"]["batch_size"] = 50
    cfg["engine"]["poll_interval_seconds"] = 0.01  # both poll while the records arrive
    cfg["streams"]["ticketchecks"]["targets"] = ["journal"]
    path = write_config(tmp_path, cfg)
    bridge = bridge_of(path)
    inst, stream = bridge.institution("testvenue"), bridge.stream("ticketchecks")
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    workers = [start(["worker", "-c", str(path), "--no-scheduler"], log) for log in logs]
    for w, log in zip(workers, logs, strict=True):  # both polling before the records come
        wait_until(lambda log=log: log.exists() and "worker started" in log.read_text(), 60,
                   "the worker to start", w)
    book = ledger.Ledger()
    for i in range(40):
        book.ingested(100, ingest(bridge, inst, stream, checks(30_000_000_000 + i * 100, 100)))
    bridge.close()
    journal = Journal(tmp_path / "journal.jsonl")
    wait_until(lambda: len(journal.lines()) >= 4000, 120, "4,000 pushes")
    figures = book.settle(ledger.engine_url(path), "ticketchecks",
                          lambda: [ledger.journal(journal.path, "ticketchecks")])
    for w in workers:
        w.send_signal(signal.SIGTERM)
    assert [w.wait(30) for w in workers] == [0, 0]

    assert figures["accepted"] == figures["delivered[journal]"] == 4000
    pushes = journal.pushes()
    assert len(pushes) == 4000
    assert set(pushes.values()) == {1}
    handled = [sum(int(line.split("handled ")[1].split(",")[0])
                   for line in log.read_text().splitlines() if "handled " in line)
               for log in logs]
    assert sum(handled) == 4000
    assert min(handled) > 0, f"one worker did all the work: {handled}"


def test_sigterm_stops_cleanly_and_releases_nothing_half_done(tmp_path, crash_config):
    log = tmp_path / "run.log"
    proc, url, _ = start_run(crash_config, log)
    resp = requests.post(f"{url}/s360/ticketchecks/testvenue", json=checks(40_000_000_000, 50),
                         headers={"x-api-key": API_KEY}, timeout=10)
    assert resp.status_code == 200
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    text = log.read_text()
    assert "stopping: finishing in-flight work" in text and "stopped" in text
    with sqlite3.connect(tmp_path / "engine.db") as conn:
        leased = conn.execute("SELECT count(*) FROM queue WHERE lease_owner IS NOT NULL")
        assert leased.fetchone()[0] == 0


def test_a_busy_port_is_one_clear_line(tmp_path, crash_config):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = start(["run", "-c", str(crash_config), "--port", str(port)], tmp_path / "p.log")
        assert proc.wait(30) == 2
    assert f"error: cannot listen on 127.0.0.1:{port}: Address already in use" \
        in (tmp_path / "p.log").read_text()


def test_receiver_under_gunicorn_with_several_workers(tmp_path, crash_config, secrets_env):
    """The production layout: `core.wsgi` under gunicorn (forked workers share one SQLite
    file) and a separate `s360bridge worker` delivering what they stored."""
    port = free_port()
    env = {**os.environ, **SECRETS_ENV, "S360BRIDGE_CONFIG": str(crash_config)}
    env.pop("S360BRIDGE_DATABASE_URL", None)
    bridge_of(crash_config).close()  # `db upgrade` before the servers, which refuse to upgrade
    server = subprocess.Popen(
        [str(Path(S360BRIDGE).with_name("gunicorn")), "-w", "3", "-b", f"127.0.0.1:{port}",
         "s360bridge.core.wsgi:app_from_env()"], env=env, stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "gunicorn.log").open("ab"), start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: healthy(url), 30, "gunicorn to be ready", server)
        session = requests.Session()
        answers = [session.post(f"{url}/s360/ticketchecks/testvenue", timeout=10,
                                json=checks(60_000_000_000 + i * 10, 10),
                                headers={"x-api-key": API_KEY}).status_code for i in range(30)]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    assert answers == [200] * 30
    worker = start(["worker", "-c", str(crash_config)], tmp_path / "w.log")
    warehouse = tmp_path / "warehouse.db"
    wait_until(lambda: len(warehouse_keys(warehouse)) == 300, 60, "300 records delivered",
               worker)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
