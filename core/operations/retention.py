"""Built-in plugin: the retention purge of the engine's stores (inbox, deliveries and their
attempts, quarantine).

The purge walks the inbox in id order (the order of arrival) with a keyset cursor: each step
reads the next ids after the last one it saw, in a read transaction, and deletes the purgeable
versions among them in a short write transaction. No step walks again over what an earlier one
deleted (on PostgreSQL, dead index entries until a vacuum) or kept (dead letters, held and
queued records), and the walk ends at the first window of versions received well after the
horizon, instead of reading every young row to find nothing. On SQLite the write transaction
holds the database's only write lock, which the receiver needs to answer S-360: a step is sized
to hold it about PURGE_STEP_SECONDS, and the purge waits as long again before the next, so that
the receiver's transactions waiting for the lock take it in between. On PostgreSQL the purged
tables are vacuumed afterwards. What it costs at ten million rows: bench/README.md.
"""

from __future__ import annotations

import logging
import math
import time

from sqlalchemy import delete
from sqlalchemy.exc import DBAPIError

from s360bridge.core.plugin.hookspecs import hookimpl
from s360bridge.core.storage import deadline
from s360bridge.core.storage.db import write
from s360bridge.core.storage.rawsql import index_plans_only, run
from s360bridge.core.storage.tables import QUARANTINE

log = logging.getLogger("s360bridge.retention")
PURGE_EVERY_SECONDS = 3600
PURGE_CHUNK = 5000  # ids a step looks at, at most
PURGE_STEP_SECONDS = 0.05  # what a step's write transaction aims to take
FIRST_STEP = 100  # ids the first step looks at: its pace is not known yet
VACUUM_COST_DELAY_MS = 2  # autovacuum's own (autovacuum_vacuum_cost_delay)
# A version's arrival time is taken before its transaction waits for the database, so the order
# of ids differs from the order of arrival by that wait at most (seconds: it is bounded by the
# busy and statement timeouts). The walk ends at a window received wholly this long after the
# horizon; a version stored later still after its arrival time goes at a later run.
ARRIVAL_SKEW_SECONDS = 3600

_WINDOW = "SELECT id, received_at, state FROM inbox WHERE id > ? ORDER BY id LIMIT ?"
_PURGED = ("accepted", "superseded")  # delivered (no longer queued, not held) or superseded
# re-checked where it is deleted: a replay or a pause may have come since the window was read
_DELETE = ("DELETE FROM inbox WHERE id IN ?ints AND state IN ('accepted', 'superseded') "
           "AND received_at < ? AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.id = inbox.id) "
           # as written: the partial index's predicate
           "AND NOT EXISTS (SELECT 1 FROM delivery d WHERE d.inbox_id = inbox.id "
           "AND d.state = 'held') RETURNING id")
_WITH_THEM = ("DELETE FROM attempt WHERE inbox_id IN ?ints",
              "DELETE FROM delivery WHERE inbox_id IN ?ints")


def purge(bridge, now: float | None = None) -> int:
    """Delete delivered and superseded versions older than the retention period, with their
    deliveries and attempts, and the quarantine rows already re-processed. Dead letters stay
    until replayed or forgotten, and so do the records held for a paused target and those
    still queued."""
    now = time.time() if now is None else now
    horizon = now - bridge.settings.engine.retention_hours * 3600
    engine, n, after, size = bridge.engine, 0, 0, min(PURGE_CHUNK, FIRST_STEP)
    while True:
        with engine.connect() as conn, conn.begin():
            index_plans_only(conn)
            window = run(conn, _WINDOW, (after, size))
        if not window or min(r[1] for r in window) >= horizon + ARRIVAL_SKEW_SECONDS:
            break
        after = window[-1][0]
        old = [seq for seq, at, state in window if at < horizon and state in _PURGED]
        if not old:
            size = min(PURGE_CHUNK, 2 * size)
            continue
        started = time.monotonic()
        with write(engine) as conn:
            index_plans_only(conn)
            ids = [r[0] for r in run(conn, _DELETE, (old, horizon))]
            for sql in _WITH_THEM if ids else ():
                run(conn, sql, (ids,))
        n += len(ids)
        took = time.monotonic() - started
        size = _next_size(size, took)
        if engine.dialect.name == "sqlite":
            time.sleep(took)  # the receivers waiting for the write lock take it now
    with write(engine) as conn:
        n += conn.execute(delete(QUARANTINE).where(QUARANTINE.c.state == "reprocessed",
                                                   QUARANTINE.c.received_at < horizon)).rowcount
    if n:
        log.info("retention: purged %d row(s) older than %g h", n,
                 bridge.settings.engine.retention_hours)
        _vacuum(engine)
    return n


def _next_size(size: int, took: float) -> int:
    """How many ids the next step looks at: as many as this step's pace deletes in
    PURGE_STEP_SECONDS, twice as many as this one at most (a window with nothing to delete
    doubles it too), PURGE_CHUNK at most."""
    pace = size * PURGE_STEP_SECONDS / took if took > 0 else math.inf
    return int(max(1, min(PURGE_CHUNK, 2 * size, pace)))


def _vacuum(engine) -> None:
    """PostgreSQL: vacuum the tables purged, so that their space is used again (autovacuum
    waits for a fifth of a table to be dead) and the next purge's first window does not walk
    this one's dead index entries. It takes no lock that ingest or delivery waits for, and goes
    at autovacuum's pace (a pause every so many pages), not a manual vacuum's full speed,
    whose reads and writes slow the receiver's commits. Its time is not bounded by the
    statement timeout, nor the connection by its deadline."""
    if engine.dialect.name != "postgresql":
        return
    started = time.monotonic()
    try:
        with deadline.within(math.inf), \
                engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("SET statement_timeout = 0")
            conn.exec_driver_sql(f"SET vacuum_cost_delay = {VACUUM_COST_DELAY_MS}")
            try:
                conn.exec_driver_sql("VACUUM (SKIP_LOCKED) inbox, attempt, delivery, "
                                     "quarantine")
            finally:
                conn.exec_driver_sql("RESET statement_timeout; RESET vacuum_cost_delay")
    except DBAPIError as exc:  # e.g. not the tables' owner: autovacuum will do
        log.warning("retention: could not vacuum the purged tables, left to autovacuum: %s",
                    exc.orig)
        return
    log.info("retention: vacuumed the purged tables in %.1f s", time.monotonic() - started)


@hookimpl
def register_jobs(register, bridge):
    register("purge", PURGE_EVERY_SECONDS, lambda: purge(bridge))
