"""The retention purge's walk (core/operations/retention.py), on SQLite and PostgreSQL: windows
of ids after the last one, what stays however old, where the walk ends, steps sized by their
time, the re-check where rows are deleted, the vacuum and the plans on PostgreSQL. The purge of
records that went through the receiver and the worker: test_operations.py, test_pause.py,
test_search.py, test_versions.py."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import insert

from s360bridge.core.operations import retention
from s360bridge.core.storage.db import write
from s360bridge.core.storage.tables import INBOX, enqueue

from .helpers.postgres import needs_pg

HOUR = 3600.0
NOW = 2_000_000_000.0


def horizon(bridge) -> float:
    return NOW - bridge.settings.engine.retention_hours * HOUR


def store(bridge, rows: list[tuple], queued=(), held=(), attempts=True) -> None:
    """Inbox rows ``(id, received_at, state)``, each with an attempt and a delivery row; the
    ids ``queued`` in the queue, ``held`` for a paused target."""
    with write(bridge.engine) as conn:
        for seq, at, state in rows:
            conn.exec_driver_sql(
                "INSERT INTO inbox (id, institution, stream, record_key, content_hash, payload, "
                "received_at, state, attempts) VALUES (%(id)s, 'testvenue', 'orders', %(k)s, "
                "'h', '{}', %(at)s, %(state)s, 0)" if conn.dialect.name == "postgresql" else
                "INSERT INTO inbox (id, institution, stream, record_key, content_hash, payload, "
                "received_at, state, attempts) VALUES (:id, 'testvenue', 'orders', :k, 'h', "
                "'{}', :at, :state, 0)", {"id": seq, "k": str(seq), "at": at, "state": state})
            if attempts:
                conn.exec_driver_sql(f"INSERT INTO attempt (inbox_id, target, at, outcome) "
                                     f"VALUES ({seq}, 'datx', {at}, 'delivered')")
            state = "held" if seq in held else "dead" if state == "dead" else "done"
            conn.exec_driver_sql(f"INSERT INTO delivery (inbox_id, target, state, attempts, "
                                 f"updated_at) VALUES ({seq}, 'journal', '{state}', 1, {at})")
        for seq in queued:
            conn.exec_driver_sql(f"INSERT INTO queue (id, institution, next_attempt_at) "
                                 f"VALUES ({seq}, 'testvenue', 0)")


def left(bridge, table: str = "inbox", column: str = "id") -> list[int]:
    with bridge.engine.connect() as conn:
        return [r[0] for r in conn.exec_driver_sql(
            f"SELECT DISTINCT {column} FROM {table} ORDER BY {column}")]


def test_the_walk_keeps_what_stays_and_deletes_the_rest_with_its_rows(any_bridge, monkeypatch):
    """Windows of 7 ids over 60 old versions (of which dead letters, held and queued ones)
    and 20 young ones: every purgeable one goes with its attempts and deliveries, nothing
    else, in the steps of several windows."""
    monkeypatch.setattr(retention, "PURGE_CHUNK", 7)
    old, young = horizon(any_bridge) - HOUR, horizon(any_bridge) + 60
    rows = [(i, old + i, "dead" if i % 10 == 3 else "superseded" if i % 10 == 5
             else "accepted") for i in range(1, 61)]
    rows += [(i, young + i, "accepted") for i in range(61, 81)]
    store(any_bridge, rows, queued=(7, 17, 62), held=(9, 19, 29, 63))
    kept = [3, 7, 9, 13, 17, 19, 23, 29, 33, 43, 53, *range(61, 81)]
    assert retention.purge(any_bridge, now=NOW) == 60 - 11
    assert left(any_bridge) == kept
    assert left(any_bridge, "attempt", "inbox_id") == kept
    assert left(any_bridge, "delivery", "inbox_id") == kept
    assert left(any_bridge, "queue") == [7, 17, 62]
    assert retention.purge(any_bridge, now=NOW) == 0


def test_the_walk_ends_after_the_horizon_and_a_late_straggler_goes_next_time(any_bridge,
                                                                            monkeypatch):
    """Versions are stored in about the order of their arrival: the walk ends at the first
    window received wholly ARRIVAL_SKEW_SECONDS after the horizon. An old version stored after
    younger ones within that margin goes at once; one stored after such a window, at the run
    that passes it."""
    monkeypatch.setattr(retention, "PURGE_CHUNK", 5)
    h, skew = horizon(any_bridge), retention.ARRIVAL_SKEW_SECONDS
    store(any_bridge, [(i, h - 100, "accepted") for i in range(1, 5)]
          + [(i, h + 60, "accepted") for i in range(5, 10)] + [(10, h - 50, "accepted")]
          + [(i, h + skew + 60, "accepted") for i in range(11, 16)]
          + [(16, h - 50, "accepted")])
    assert retention.purge(any_bridge, now=NOW) == 5
    assert left(any_bridge) == [*range(5, 10), *range(11, 17)]
    assert retention.purge(any_bridge, now=NOW + skew + 120) == 11
    assert left(any_bridge) == []


def test_an_id_the_purge_deleted_is_never_given_again(any_bridge):
    """The purge deletes every version, the newest too: the next version stored is numbered
    after them all (SQLite's AUTOINCREMENT, PostgreSQL's sequence), as targets compare these
    numbers to keep the newer version."""
    def add(at: float) -> int:
        with write(any_bridge.engine) as conn:
            return conn.execute(insert(INBOX).values(
                institution="testvenue", stream="orders", record_key="10", content_hash=str(at),
                payload="{}", received_at=at, state="accepted", attempts=0,
            ).returning(INBOX.c.id)).scalar_one()

    purged = [add(horizon(any_bridge) - HOUR - n) for n in range(3)]
    assert retention.purge(any_bridge, now=NOW) == 3
    assert left(any_bridge) == []
    assert add(NOW) > max(purged)


def test_a_version_replayed_or_held_since_its_window_was_read_stays(any_bridge, monkeypatch):
    """The window is read outside the write transaction; what is deleted is checked again in
    it: a dead letter replayed meanwhile (queued again) and a version held meanwhile stay."""
    old = horizon(any_bridge) - HOUR
    store(any_bridge, [(1, old, "accepted"), (2, old, "dead"), (3, old, "accepted")])
    real_write = retention.write

    def replay_and_pause_first(engine):
        with write(engine) as conn:
            enqueue(conn, [2])  # the replay: accepted again, and queued
            conn.exec_driver_sql("UPDATE delivery SET state = 'held' WHERE inbox_id = 3")
        monkeypatch.setattr(retention, "write", real_write)
        return real_write(engine)

    monkeypatch.setattr(retention, "write", replay_and_pause_first)
    assert retention.purge(any_bridge, now=NOW) == 1
    assert left(any_bridge) == [2, 3]


def test_steps_are_sized_by_their_time_and_spaced_on_sqlite(any_bridge, monkeypatch):
    """A step that took longer than PURGE_STEP_SECONDS makes the next one smaller; on SQLite
    the purge waits after each step as long as it held the write lock."""
    monkeypatch.setattr(retention, "PURGE_CHUNK", 8)
    monkeypatch.setattr(retention, "PURGE_STEP_SECONDS", 1e-9)  # every step is too slow
    slept = []
    monkeypatch.setattr(retention.time, "sleep", slept.append)
    sizes = []
    real_run = retention.run

    def watched(conn, sql, params=()):
        if sql == retention._DELETE:
            sizes.append(len(params[0]))
        return real_run(conn, sql, params)

    monkeypatch.setattr(retention, "run", watched)
    store(any_bridge, [(i, horizon(any_bridge) - HOUR, "accepted") for i in range(1, 21)])
    assert retention.purge(any_bridge, now=NOW) == 20
    assert sizes == [8] + [1] * 12
    assert len(slept) == (13 if any_bridge.engine.dialect.name == "sqlite" else 0)
    assert all(s > 0 for s in slept)


def test_the_first_step_is_small_and_fast_ones_double(bridge, monkeypatch):
    monkeypatch.setattr(retention, "PURGE_CHUNK", 8)
    monkeypatch.setattr(retention, "FIRST_STEP", 2)
    monkeypatch.setattr(retention, "PURGE_STEP_SECONDS", 1e9)  # every step is fast
    monkeypatch.setattr(retention.time, "sleep", lambda _: None)
    sizes = []
    real_run = retention.run

    def watched(conn, sql, params=()):
        if sql == retention._WINDOW:
            sizes.append(params[1])
        return real_run(conn, sql, params)

    monkeypatch.setattr(retention, "run", watched)
    store(bridge, [(i, horizon(bridge) + 60, "accepted") for i in range(1, 4)]  # kept
          + [(i, horizon(bridge) - HOUR, "accepted") for i in range(4, 24)])
    assert retention.purge(bridge, now=NOW) == 20
    assert sizes == [2, 4, 8, 8, 8, 8]  # doubled after a window with nothing to delete too


@pytest.mark.parametrize("size, took, expected", [
    (5000, 0.5, 500),  # ten times too slow: a tenth
    (100, 0.001, 200),  # fast: twice as many at most
    (4000, 0.01, 5000),  # never more than PURGE_CHUNK
    (3, 10.0, 1),  # never fewer than one
    (10, 0.0, 20),  # too fast to tell
])
def test_the_next_step_size(size, took, expected):
    assert retention._next_size(size, took) == expected


@needs_pg
def test_the_purge_vacuums_what_it_purged_on_postgresql(pg_bridge):
    def vacuums() -> dict:
        with pg_bridge.engine.connect() as conn:
            return dict(conn.exec_driver_sql(
                "SELECT relname, vacuum_count FROM pg_stat_user_tables WHERE relid IN "
                "('inbox'::regclass, 'attempt'::regclass, 'delivery'::regclass, "
                "'quarantine'::regclass)").all())

    store(pg_bridge, [(1, horizon(pg_bridge) + 60, "accepted")])
    assert retention.purge(pg_bridge, now=NOW) == 0
    assert set(vacuums().values()) == {0}
    store(pg_bridge, [(2, horizon(pg_bridge) - 60, "accepted")])
    assert retention.purge(pg_bridge, now=NOW) == 1
    assert vacuums() == {"inbox": 1, "attempt": 1, "delivery": 1, "quarantine": 1}
    with pg_bridge.engine.connect() as conn:  # the pooled connection's settings are back
        assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "1min"
        assert conn.exec_driver_sql("SHOW vacuum_cost_delay").scalar() == "0"


@needs_pg
def test_the_purge_reads_its_indexes_without_statistics(pg_bridge):
    """Filled and never analyzed, the tables look empty to the planner: the window and the
    deletes must still read the indexes, never scan what grows with history."""
    from s360bridge.core.storage.rawsql import _for_dialect, index_plans_only

    with pg_bridge.engine.begin() as conn:
        for table in ("inbox", "attempt", "delivery", "queue"):
            conn.exec_driver_sql(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    store(pg_bridge, [(i, horizon(pg_bridge) - HOUR, "accepted") for i in range(1, 3001)])
    plans = {}
    with pg_bridge.engine.connect() as conn:
        assert conn.exec_driver_sql(
            "SELECT last_analyze, last_autoanalyze FROM pg_stat_user_tables "
            "WHERE relid = 'inbox'::regclass").one() == (None, None)
        index_plans_only(conn)  # as the purge does, in each of its transactions
        cursor = conn.connection.driver_connection.cursor()
        for name, sql, params in [("window", retention._WINDOW, (100, 5000)),
                                  ("delete", retention._DELETE, (list(range(1, 500)), NOW)),
                                  *[(s.split()[2], s, (list(range(1, 500)),))
                                    for s in retention._WITH_THEM]]:
            cursor.execute("EXPLAIN (FORMAT JSON) " + _for_dialect(sql, "postgresql"), params)
            plans[name] = json.dumps(cursor.fetchone()[0])
        conn.rollback()
    for name, plan in plans.items():
        for bad in ("Seq Scan", "Bitmap", '"Sort"'):
            assert bad not in plan, f"{name}: {bad} in {plan}"
    assert '"Index Name": "inbox_pkey"' in plans["window"]
    for index in ("inbox_pkey", "queue_pkey", "ix_delivery_held"):
        assert f'"Index Name": "{index}"' in plans["delete"], index
    assert '"Index Name": "ix_attempt_record"' in plans["attempt"]
    assert '"Index Name": "delivery_pkey"' in plans["delivery"]
