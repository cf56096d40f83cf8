"""A real PostgreSQL hot standby for tests: a private primary (bench/pgcluster.py, never the
machine's shared server) and a streaming standby made from it with ``pg_basebackup -R``, on a
port of its own, as docs/production.md sets one up."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine

PASSWORD = "standby-test-password"


@contextmanager
def primary_and_standby(database: str) -> Iterator[tuple[str, str, Callable[[], None]]]:
    """URLs of ``database`` on the primary and on its standby, and ``caught_up()``, which
    waits until the standby has replayed what the primary wrote so far."""
    from bench.pgcluster import USER, PrivateCluster, _free_port, binaries

    if binaries() is None:
        pytest.skip("PostgreSQL's server binaries are not installed")
    with PrivateCluster() as primary:
        # a role with a password: a URL with a user alone makes the user name a secret that
        # this test process would mask everywhere after (core/redact.py), "postgres" included
        primary.sql(f"CREATE ROLE bridge LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
        url = primary.url(database).replace(f"//{USER}@", f"//bridge:{PASSWORD}@")
        data, port = primary.folder / "standby", _free_port()
        primary._run(str(primary.bin / "pg_basebackup"), "-D", str(data), "-R", "-X", "stream",
                     "-c", "fast", "-h", "127.0.0.1", "-p", str(primary.port), "-U", USER)
        pg_ctl = (str(primary.bin / "pg_ctl"), "-D", str(data), "-w")
        primary._run(*pg_ctl, "-l", str(primary.folder / "standby.log"), "-o",
                     f"-p {port} -k {primary.folder} -c listen_addresses=127.0.0.1", "start")
        standby = url.replace(f":{primary.port}/", f":{port}/")

        def caught_up(timeout: float = 30) -> None:
            lsn = primary.sql("SELECT pg_current_wal_lsn()")
            engine = create_engine(standby)
            deadline = time.monotonic() + timeout
            try:
                while True:
                    with engine.connect() as conn:
                        if conn.exec_driver_sql(f"SELECT pg_last_wal_replay_lsn() >= "
                                                f"'{lsn}'::pg_lsn").scalar():
                            return
                    if time.monotonic() > deadline:
                        raise AssertionError(f"the standby did not replay {lsn} in {timeout}s")
                    time.sleep(0.05)
            finally:
                engine.dispose()

        try:
            yield url, standby, caught_up
        finally:
            primary._run(*pg_ctl, "-m", "fast", "stop")
