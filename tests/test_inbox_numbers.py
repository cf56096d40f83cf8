"""Inbox numbers are never given twice (engine_0013): SQLite's inbox made again with
AUTOINCREMENT keeps its rows, views, triggers and indexes, counts on past what a purge may have
taken, and a new database starts at 1; on PostgreSQL the sequence did so already. What it
means end to end: test_versions.py and test_retention.py; backups: test_backup.py."""

from __future__ import annotations

from sqlalchemy import text

from s360bridge.core.storage import migrate
from s360bridge.core.storage.db import make_engine

from .helpers.schema import plugin_locations, upgrade_to


def test_inbox_ids_deleted_are_not_given_again_after_the_upgrade(new_database):
    """engine_0013 makes SQLite's inbox again with AUTOINCREMENT: its rows, the views, the
    triggers and its index of dead letters stay; a database that has held anything counts on a
    billion past its largest id (the ids a purge took before are not known), and never goes
    back, also once the newest row is deleted (PostgreSQL's sequence did so already)."""
    engine = make_engine(new_database())
    sqlite = engine.dialect.name == "sqlite"
    upgrade_to(engine, ("engine_0012",))
    add = text("INSERT INTO inbox (institution, stream, record_key, content_hash, payload, "
               "received_at, state, attempts) VALUES ('v', 'orders', :key, 'h', '{}', 1.0, "
               ":state, 0)")
    with engine.begin() as conn:
        for key, state in (("k1", "dead"), ("k2", "accepted"), ("k3", "accepted")):
            conn.execute(add, {"key": key, "state": state})
        conn.execute(text("INSERT INTO queue (id, institution, next_attempt_at) "
                          "VALUES (2, 'v', 0)"))
        if sqlite:  # a venue's own view and trigger, which SQLite's rename checks
            conn.exec_driver_sql("CREATE VIEW my_report AS SELECT count(*) AS n FROM inbox")
            conn.exec_driver_sql("CREATE TABLE my_log (key TEXT)")
            conn.exec_driver_sql("CREATE TRIGGER my_copy AFTER INSERT ON inbox BEGIN "
                                 "INSERT INTO my_log VALUES (new.record_key); END")
    migrate.upgrade(engine, plugin_locations())
    with engine.begin() as conn:
        assert conn.execute(text("SELECT id, record_key, state FROM inbox_state ORDER BY id")
                            ).all() == [(1, "k1", "dead"), (2, "k2", "pending"),
                                        (3, "k3", "done")]
        conn.execute(text("DELETE FROM inbox WHERE id = 3"))
        conn.execute(add, {"key": "k4", "state": "accepted"})
        conn.execute(text("DELETE FROM inbox WHERE record_key = 'k4'"))
        conn.execute(add, {"key": "k5", "state": "accepted"})
        ahead = 1_000_000_000 if sqlite else 0
        assert conn.execute(text("SELECT record_key, id FROM inbox WHERE id > 2")).all() == [
            ("k5", 3 + ahead + 2)]
        if sqlite:
            assert conn.exec_driver_sql("SELECT n FROM my_report").scalar() == 3
            assert conn.exec_driver_sql("SELECT key FROM my_log").all() == [("k4",), ("k5",)]
            plan = " ".join(str(r) for r in conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN SELECT count(*) FROM inbox WHERE institution = 'v' "
                "AND stream = 'orders' AND state = 'dead'"))
            assert "ix_inbox_dead" in plan


def test_an_inbox_the_purge_emptied_counts_on_far_past_what_it_gave(new_database):
    """Every version deleted before the upgrade (a quiet week's purge): the ids given are not
    known any more, and the count goes on a billion further."""
    engine = make_engine(new_database())
    upgrade_to(engine, ("engine_0012",))
    with engine.begin() as conn:
        for n in range(5):
            conn.execute(text("INSERT INTO inbox (institution, stream, record_key, "
                              "content_hash, payload, received_at, state, attempts) VALUES "
                              "('v', 'orders', :k, 'h', '{}', 1.0, 'accepted', 0)"), {"k": n})
        conn.execute(text("DELETE FROM inbox"))
    migrate.upgrade(engine, plugin_locations())
    with engine.begin() as conn:
        assert conn.execute(text(
            "INSERT INTO inbox (institution, stream, record_key, content_hash, payload, "
            "received_at, state, attempts) VALUES ('v', 'orders', 'k', 'h', '{}', 1.0, "
            "'accepted', 0) RETURNING id")).scalar() == (
            1_000_000_001 if engine.dialect.name == "sqlite" else 6)


def test_a_new_database_numbers_its_inbox_from_one(new_database):
    engine = make_engine(new_database())
    migrate.upgrade(engine, plugin_locations())
    with engine.begin() as conn:
        assert conn.execute(text(
            "INSERT INTO inbox (institution, stream, record_key, content_hash, payload, "
            "received_at, state, attempts) VALUES ('v', 'orders', 'k', 'h', '{}', 1.0, "
            "'accepted', 0) RETURNING id")).scalar() == 1
