"""Faults a real `s360bridge worker` meets while it drains a backlog on a private PostgreSQL
cluster, in full claims, each next one claimed in the background: the server stopped and
started again, and the connection of a running claim ended. docs/guarantees.md names what each
proves."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import create_engine

from .conftest import Journal, base_config, write_config
from .helpers.postgres import needs_pg, start_cluster, stop_cluster
from .helpers.processes import start, stop, wait_until
from .test_faults import LIMITS

# fills the inbox in a process of its own: a Bridge on the private cluster's URL would make this
# process remember its user name ("postgres") as a secret, and mask it in every later test
_FILL = """
import sys
from pathlib import Path

from s360bridge.core.pipeline.ingest import ingest
from tests.conftest import bridge_of
from tests.helpers.processes import checks

bridge = bridge_of(Path(sys.argv[1]))
for first in range(0, int(sys.argv[2]), 1000):
    ingest(bridge, bridge.institution("testvenue"), bridge.stream("ticketchecks"),
           checks(80_000_000_000 + first, 1000))
bridge.close()
"""


def _draining_worker(tmp_path: Path, pg, records: int):
    """A worker started on a backlog of ``records`` ticket checks, in claims of 50 (each next
    one claimed ahead, in the background), once it has delivered 500 of them."""
    cfg = base_config(tmp_path)
    cfg["engine"].update(database_url=pg.url("faults"), batch_size=50, **LIMITS)
    cfg["streams"]["ticketchecks"]["targets"] = ["journal"]
    config = write_config(tmp_path, cfg)
    subprocess.run([sys.executable, "-c", _FILL, str(config), str(records)], check=True,
                   cwd=Path(__file__).resolve().parent.parent, timeout=300)
    journal, log = Journal(tmp_path / "journal.jsonl"), tmp_path / "worker.log"
    proc = start(["worker", "-c", str(config)], log)
    wait_until(lambda: len(journal.pushes()) >= 500, 60, "500 records delivered", proc)
    return proc, journal, log


def _delivered_once_and_queue_empty(pg, proc, journal: Journal, records: int) -> None:
    wait_until(lambda: len(journal.pushes()) == records, 120, "every record delivered", proc)
    queued = create_engine(pg.url("faults"))
    try:
        wait_until(lambda: _scalar(queued, "SELECT count(*) FROM queue") == 0, 30,
                   "every batch completed", proc)
    finally:
        queued.dispose()
    assert stop(proc) == 0
    assert sorted(journal.pushes().values()) == [1] * records


@needs_pg
def test_postgresql_stopped_while_the_worker_claims_ahead(tmp_path, secrets_env,
                                                         private_cluster):
    """A backlog drained in full claims, each next one claimed in the background as on
    PostgreSQL, when the server stops, and starts again at the worker's first sign of it: the
    claim or the completion it cut is made again once the server is back, every record is
    delivered once and the queue empties."""
    pg, records = private_cluster, 30_000  # 600 claims of 50: the outage comes mid-drain
    proc, journal, log = _draining_worker(tmp_path, pg, records)
    stop_cluster(pg)
    assert len(journal.pushes()) <= records - 2 * 50  # claims were still to be made
    wait_until(lambda: any(sign in log.read_text() for sign in (
        "engine database unavailable", "could not complete a batch")), 30,
        "the worker to notice", proc)
    start_cluster(pg)
    _delivered_once_and_queue_empty(pg, proc, journal, records)


@needs_pg
def test_a_claim_ahead_whose_connection_the_server_ends_is_made_afresh(tmp_path, secrets_env,
                                                                       private_cluster):
    """The server ends the connection of a claim running in the background (an operator's
    ``pg_terminate_backend``, a pooler's restart): the worker claims afresh and delivers every
    record once. (A claim ahead that failed was once kept and raised again at every round:
    the worker delivered nothing more until it was restarted.)"""
    pg, records = private_cluster, 30_000
    proc, journal, log = _draining_worker(tmp_path, pg, records)
    admin, deadline = create_engine(pg.url("faults")), time.monotonic() + 30
    try:  # a claim of 50 runs for a millisecond or so: asked without a pause between
        while not _scalar(admin, "SELECT count(pg_terminate_backend(pid)) FROM "
                                 "pg_stat_activity WHERE datname = 'faults' AND "
                                 "state = 'active' AND query LIKE 'WITH leased AS%%'"):
            assert time.monotonic() < deadline, "no claim caught running in 30 s"
            assert proc.poll() is None
    finally:
        admin.dispose()
    assert len(journal.pushes()) <= records - 2 * 50
    _delivered_once_and_queue_empty(pg, proc, journal, records)
    assert "engine database unavailable" in log.read_text()


def _scalar(engine, sql: str):
    with engine.connect() as conn:
        return conn.exec_driver_sql(sql).scalar()
