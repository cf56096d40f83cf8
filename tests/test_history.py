"""Initial import: history through the webhooks' path, resumable (reconcile:
tests/test_reconcile.py)."""

from __future__ import annotations

import copy
import os
import signal
import sqlite3
import subprocess
import time

from s360bridge.simulator.export import write_csv, write_jsonl

from .conftest import SECRETS_ENV
from .helpers.history import ZURICH, generated, run, warehouse_count
from .helpers.postgres import needs_pg, warehouse
from .helpers.processes import S360BRIDGE


def test_import_loads_history_through_the_webhook_path(tmp_path, invoke, journal):
    orders = generated("orders", 120)
    old = copy.deepcopy(orders[0])
    old["orderDetailsData"]["orderId"] += 1
    old["orderDetailsData"]["creationDateTime"] = "2015-05-05T10:00:00.000+00:00"
    path = tmp_path / "orders.jsonl"
    write_jsonl([*orders, old], path)
    with path.open("ab") as f:
        f.write(b"{not json\n")
    code, out = run(invoke, "import", "--institution", "testvenue", "--stream", "orders",
                    str(path))
    assert code == 0, out
    assert "122 lines: 120 stored, 0 already there, 1 older than the history cut-off " \
           "2019-01-01 (left out), 1 quarantined" in out
    assert warehouse_count(tmp_path, "orders") == 120
    assert sum(journal.pushes("orders").values()) == 120
    code, out = run(invoke, "import", "--institution", "testvenue", "--stream", "orders",
                    str(path))
    assert "already imported (122 lines)" in out
    code, out = run(invoke, "import", "--institution", "testvenue", "--stream", "orders",
                    "--again", str(path))
    assert "0 stored, 120 already there" in out
    assert sum(journal.pushes("orders").values()) == 120


def test_an_imported_file_run_again_delivers_what_is_still_queued(tmp_path, invoke):
    """An import stopped while it delivered (or run with --no-deliver) is finished by running
    it again: the file is not read again, its records still queued are delivered."""
    path = tmp_path / "orders.jsonl"
    write_jsonl(generated("orders", 40), path)
    args = ("import", "--institution", "testvenue", "--stream", "orders")
    code, out = run(invoke, *args, "--no-deliver", str(path))
    assert code == 0 and "40 stored" in out and "delivered" not in out
    code, out = run(invoke, *args, str(path))
    assert code == 0, out
    assert "already imported (40 lines)" in out and "delivered 40 record(s)" in out
    assert warehouse_count(tmp_path, "orders") == 40


@needs_pg
def test_an_import_on_postgresql_stores_and_delivers_each_record_once(tmp_path, pg_bridge):
    """The batches commit with ``synchronous_commit = off``, set in their own transaction."""
    from s360bridge.core.operations.history_import import run_import
    from s360bridge.core.operations.repair import deliver

    path = tmp_path / "orders.jsonl"
    write_jsonl(generated("orders", 60), path)
    inst, stream = pg_bridge.institution("testvenue"), pg_bridge.stream("orders")
    assert run_import(pg_bridge, inst, stream, path, "jsonl", batch=25).totals.accepted == 60
    assert deliver(pg_bridge) == 60
    assert warehouse(pg_bridge, "SELECT count(*) FROM orders") == [(60,)]
    with pg_bridge.engine.connect() as conn:  # the setting did not outlive its transactions
        assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"


def test_import_of_a_csv_data_export(tmp_path, invoke):
    checks = generated("ticketchecks", 50)
    path = tmp_path / "checks.csv"
    write_csv("ticketchecks", checks, path, ZURICH)
    code, out = run(invoke, "import", "--institution", "testvenue", "--stream",
                    "ticketchecks", str(path))
    assert code == 0, out
    assert "50 lines: 50 stored" in out
    assert warehouse_count(tmp_path, "ticket_checks") == 50
    code, out = run(invoke, "import", "--institution", "testvenue", "--stream", "contacts",
                    str(path))
    assert code == 2 and "takes JSON lines only" in out


def test_an_import_killed_half_way_resumes_and_loads_every_record_once(
        tmp_path, config_path, journal):
    orders = generated("orders", 30_000, seed=9)
    path = tmp_path / "orders.jsonl"
    write_jsonl(orders, path)
    env = {**os.environ, **SECRETS_ENV}
    args = [S360BRIDGE, "import", "-c", str(config_path),
            "--institution", "testvenue", "--stream", "orders", "--batch", "100"]
    first = subprocess.Popen([*args, "--no-deliver", str(path)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    engine_db = tmp_path / "engine.db"
    lines = 0
    try:
        deadline = time.monotonic() + 60
        while lines < 3000 and time.monotonic() < deadline and first.poll() is None:
            try:
                with sqlite3.connect(engine_db, timeout=5) as conn:
                    lines = conn.execute("SELECT lines FROM import_progress").fetchone()[0]
            except (sqlite3.OperationalError, TypeError):
                pass
            time.sleep(0.005)
        lock = sqlite3.connect(engine_db, timeout=30, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")  # the import now waits at its next commit
        stopped_at = lock.execute("SELECT lines FROM import_progress").fetchone()[0]
        first.send_signal(signal.SIGKILL)
        first.wait()
        lock.execute("ROLLBACK")
        lock.close()
    finally:
        if first.poll() is None:
            first.kill()
    assert 0 < stopped_at < 30_000, "the import was not interrupted half-way"
    with sqlite3.connect(engine_db) as conn:
        assert conn.execute("SELECT count(*) FROM inbox").fetchone()[0] == stopped_at
    second = subprocess.run([*args, str(path)], env=env, capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 0, second.stderr
    assert f"resumed after line {stopped_at}" in second.stdout
    assert f"{30_000 - stopped_at} stored, 0 already there" in second.stdout
    with sqlite3.connect(engine_db) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT record_key) FROM inbox_state "
                            "WHERE state = 'done'").fetchone() == (30_000, 30_000)
    assert warehouse_count(tmp_path, "orders") == 30_000
    assert set(journal.pushes("orders").values()) == {1}


def test_the_delivery_of_an_import_claims_at_the_configured_level(tmp_path, monkeypatch,
                                                                  runner, secrets_env):
    """The import's batches commit without an fsync, but no target may get a record before it
    is on disk: each claim of its delivery commits at the configured level (FULL here), which
    flushes the log with the batches before it."""
    from s360bridge.core.cli.main import cli
    from s360bridge.core.pipeline import worker

    from .conftest import base_config, bridge_of, write_config

    data = base_config(tmp_path)
    data["engine"]["sqlite_synchronous"] = "FULL"
    config = write_config(tmp_path, data)
    bridge_of(config).close()  # upgraded, as `s360bridge db upgrade`
    levels, claim = [], worker.claim

    def claim_noting_the_level(engine, *args, **kwargs):
        with engine.connect() as conn:
            levels.append(conn.exec_driver_sql("PRAGMA synchronous").scalar())
        return claim(engine, *args, **kwargs)

    monkeypatch.setattr(worker, "claim", claim_noting_the_level)
    path = tmp_path / "orders.jsonl"
    write_jsonl(generated("orders", 30), path)
    result = runner.invoke(cli, ["import", "--institution", "testvenue", "--stream", "orders",
                                 str(path), "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert "delivered 30 record(s)" in result.output
    assert levels and set(levels) == {2}  # FULL
    assert warehouse_count(tmp_path, "orders") == 30
