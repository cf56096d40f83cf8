"""The PostgreSQL server of the tests: .ci/run starts one and sets S360BRIDGE_TEST_POSTGRES_URL.
Each test works in schemas of its own, dropped with all they hold when it ends."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine

PG = os.environ.get("S360BRIDGE_TEST_POSTGRES_URL")
NOT_SET = "S360BRIDGE_TEST_POSTGRES_URL is not set (.ci/run sets it up)"
needs_pg = pytest.mark.skipif(not PG, reason=NOT_SET)
# the queue rows, and those whose hash is not the one of their inbox row's key
QUEUED_AND_WRONG_HASHES = """SELECT count(*), count(*) FILTER (WHERE q.key_hash IS DISTINCT
    FROM hashtextextended(concat_ws(chr(31), i.institution, i.stream, i.record_key), 0))
    FROM queue q JOIN inbox i ON i.id = q.id"""


class Schemas:
    """New schemas on demand, each answered as the URL of a database that uses it."""

    def __init__(self):
        self.admin = create_engine(PG, isolation_level="AUTOCOMMIT")
        self.names: list[str] = []

    def new(self, label: str) -> str:
        self.names.append(f"t_{uuid.uuid4().hex[:10]}_{label}")
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{self.names[-1]}"')
        return f"{PG}?options=-csearch_path%3D{self.names[-1]}"

    def drop(self) -> None:
        with self.admin.connect() as conn:
            conn.exec_driver_sql("SET lock_timeout = '10s'")  # a killed process's session
            for name in self.names:
                conn.exec_driver_sql(f'DROP SCHEMA "{name}" CASCADE')
        self.admin.dispose()


@contextmanager
def schemas() -> Iterator[Schemas]:
    """Schemas dropped at the end of the block; the test is skipped without a server."""
    if not PG:
        pytest.skip(NOT_SET)
    made = Schemas()
    try:
        yield made
    finally:
        made.drop()


def warehouse(bridge, sql: str) -> list[tuple]:
    """The rows of ``sql`` in the test institution's ``datx`` warehouse."""
    target = bridge.target(bridge.institution("testvenue"), "datx")
    with target.engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(sql)]


def stop_cluster(pg) -> None:
    """A private cluster (bench/pgcluster.py) stopped fast: its connections are cut."""
    _pg_ctl(pg, "-m", "fast", "stop")


def start_cluster(pg) -> None:
    """A private cluster stopped by ``stop_cluster`` started again, on its port and folder."""
    options = f"-p {pg.port} -k {pg.folder} -c listen_addresses=127.0.0.1"
    _pg_ctl(pg, "-l", str(pg.folder / "server.log"), "-o", options, "start")


def _pg_ctl(pg, *args: str) -> None:
    pg._run(str(pg.bin / "pg_ctl"), "-D", str(pg.data), "-w", *args)
