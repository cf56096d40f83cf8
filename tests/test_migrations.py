"""Schema migrations: the first revisions make the schema of b60f5fd, a database of that time is
adopted with its data, the models match the migrations, and who upgrades and who refuses.

The tests of the schema run on SQLite and, when S360BRIDGE_TEST_POSTGRES_URL is set, on
PostgreSQL (in schemas of their own, dropped at the end).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest
from alembic.autogenerate import compare_metadata, produce_migrations, render_python_code
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from s360bridge.core.connectors.crm_links import LINKS
from s360bridge.core.operations.audit import AUDIT
from s360bridge.core.operations.history_import import PROGRESS
from s360bridge.core.operations.reconcile_runs import RUNS
from s360bridge.core.pipeline.quarantine import content_hash
from s360bridge.core.pipeline.versions import MARKS
from s360bridge.core.s360.budget import CALL_LOG
from s360bridge.core.s360.quota import MONTH_CALLS
from s360bridge.core.storage import migrate
from s360bridge.core.storage.db import make_engine
from s360bridge.core.storage.tables import INBOX
from s360bridge.plugins.contacts.crm_changes import WATERMARKS
from s360bridge.plugins.offers.store import OFFERS

from .conftest import FIXTURES
from .helpers.schema import EVERY_REVISION, FIRST_REVISIONS, plugin_locations, upgrade_to

# the models of every table in the engine database: the engine's and the built-in plugins'
MODELS = [INBOX.metadata, MONTH_CALLS.metadata, CALL_LOG.metadata, PROGRESS.metadata,
          OFFERS.metadata, LINKS.metadata, WATERMARKS.metadata, MARKS.metadata, AUDIT.metadata,
          RUNS.metadata]
# one row for every table of b60f5fd, as that version wrote them
ROWS = {
    "inbox": {"id": 7, "institution": "v", "stream": "orders", "record_key": "10", "content_hash":
              "h", "payload": "{}", "received_at": 1.5, "state": "pending", "attempts": 0,
              "next_attempt_at": 0.0, "lease_owner": None, "lease_until": None,
              "last_error": None},
    "delivery": {"inbox_id": 7, "target": "datx", "state": "failed", "attempts": 2,
                 "last_error": "HTTP 503", "updated_at": 2.5},
    "quarantine": {"id": 3, "institution": "v", "stream": "orders", "payload": "[",
                   "reason": "not JSON", "received_at": 3.5, "state": "held"},
    "skipped": {"institution": "v", "stream": "orders", "reason": "before cut-off",
                "count": 4},
    "s360_call_log": {"bucket": "v/contact.get", "at_ms": 1700000000000},
    "import_progress": {"institution": "v", "stream": "orders", "file_id": "f", "lines": 10,
                        "done": 1, "updated_at": 4.5},
    "offer": {"id": 5, "institution": "v", "idempotency_key": "k", "request": "{}",
              "action": "create", "state": "open", "order_id": 10000815533, "file_id": 42,
              "expires_at": "2024-03-14T19:21:07", "result": None, "error": None,
              "http_status": None, "lease_owner": None, "lease_until": None,
              "created_at": 5.5, "updated_at": 6.5},
    "offer_cache": {"institution": "v", "what": "catalog", "fetched_at": 7.5, "marker": "m",
                    "data": "[]"},
    "crm_link": {"institution": "v", "contact_number": "0012", "crm_id": "C1",
                 "view": '{"email": "a@b.c"}', "updated_at": 8.5},
    "crm_watermark": {"institution": "v", "stream": "crm_contacts", "value": "2024-01-01"},
}
# the same rows at the heads: the pending inbox row is queued (engine_0002), the quarantined
# one counted once, with the hash of its payload (engine_0006)
AT_HEADS = ROWS | {
    "inbox": {k: v for k, v in ROWS["inbox"].items()
              if k not in ("next_attempt_at", "lease_owner", "lease_until")} | {
        "state": "accepted"},
    "queue": {"id": 7, "institution": "v", "next_attempt_at": 0.0, "lease_owner": None,
              "lease_until": None},
    "quarantine": ROWS["quarantine"] | {"content_hash": content_hash("["), "count": 1,
                                        "last_seen_at": 3.5},
    "offer": ROWS["offer"] | {"caller": ""},  # the CRM operator's (offers_0002)
}


def build_as_b60f5fd(engine, sections: int | None = None) -> None:
    """Run the statements b60f5fd sent to create its tables, or those of its first
    ``sections`` only (each place that created tables is a section, blank lines between)."""
    sql = (FIXTURES / f"schema_b60f5fd.{engine.dialect.name}.sql").read_text("utf-8")
    with engine.begin() as conn:
        for section in sql.split("\n\n")[1:][:sections]:  # after the file's own comment
            body = "\n".join(line for line in section.splitlines() if not line.startswith("--"))
            for statement in body.split(";\n"):
                if statement.strip():
                    conn.exec_driver_sql(statement)


def schema_of(engine) -> dict:
    """Tables, columns, keys, indexes and storage options, as the database's catalog has them
    (the migrations' version table left out)."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            return {name: sql for name, sql in conn.exec_driver_sql(
                "SELECT name, sql FROM sqlite_master WHERE tbl_name != 'alembic_version'")}
        queries = {
            "columns": "SELECT table_name, column_name, ordinal_position, data_type, "
                       "character_maximum_length, is_nullable, column_default FROM "
                       "information_schema.columns WHERE table_schema = current_schema()",
            "constraints": "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
                           "FROM pg_constraint WHERE connamespace = current_schema()::regnamespace",
            "indexes": "SELECT indexname, replace(indexdef, current_schema() || '.', '') "
                       "FROM pg_indexes WHERE schemaname = current_schema()",
            "storage": "SELECT relname, relkind, reloptions FROM pg_class "
                       "WHERE relnamespace = current_schema()::regnamespace",
        }
        found = {what: sorted(tuple(map(str, r)) for r in conn.exec_driver_sql(sql))
                 for what, sql in queries.items()}
    return {what: [r for r in rows if not any("alembic_version" in v for v in r)]
            for what, rows in found.items()}


def fill(engine, rows: dict) -> None:
    with engine.begin() as conn:
        for table, row in rows.items():
            conn.execute(text(f"INSERT INTO {table} ({_columns(row)}) "
                              f"VALUES ({', '.join(f':{c}' for c in row)})"), row)


def read_back(engine, rows: dict) -> dict:
    with engine.connect() as conn:
        return {table: dict(conn.execute(text(f"SELECT {_columns(row)} FROM {table}")
                                         ).one()._mapping) for table, row in rows.items()}


def _columns(row: dict) -> str:
    return ", ".join(f'"{c}"' for c in row)  # quoted: "view" is a keyword


def test_the_first_revisions_make_the_schema_of_b60f5fd(new_database):
    before, migrated = make_engine(new_database()), make_engine(new_database())
    build_as_b60f5fd(before)
    upgrade_to(migrated, FIRST_REVISIONS)
    assert schema_of(migrated) == schema_of(before)
    assert len(schema_of(before)) > 0


@pytest.mark.parametrize("sections", [None, 1], ids=["every table", "the engine's four"])
def test_a_database_of_b60f5fd_is_adopted_with_its_data(new_database, sections):
    """A database made before migrations has no version table and any part of the tables
    (they were created when first used): upgrading keeps them and their rows, creates the
    others, and leaves the database at the heads."""
    engine = make_engine(new_database())
    build_as_b60f5fd(engine, sections)
    tables = ("inbox", "delivery", "quarantine", "skipped")
    fill(engine, ROWS if sections is None else {t: ROWS[t] for t in tables})
    assert sorted(migrate.upgrade(engine, plugin_locations())) == sorted(EVERY_REVISION)
    rows = AT_HEADS if sections is None else {t: AT_HEADS[t] for t in (*tables, "queue")}
    assert read_back(engine, rows) == rows
    fresh = make_engine(new_database())
    migrate.upgrade(fresh, plugin_locations())
    assert schema_of(engine) == schema_of(fresh)
    assert not any(b.outdated for b in migrate.branches(engine, plugin_locations()))


def test_rows_of_the_first_revisions_survive_the_upgrade_to_the_heads(new_database):
    engine = make_engine(new_database())
    upgrade_to(engine, FIRST_REVISIONS)
    fill(engine, ROWS)
    migrate.upgrade(engine, plugin_locations())
    assert read_back(engine, AT_HEADS) == AT_HEADS


def test_the_queue_takes_what_was_pending(new_database):
    """engine_0002 moves the pending rows and their leases into the queue; the view gives every
    version the state it had before."""
    engine = make_engine(new_database())
    upgrade_to(engine, FIRST_REVISIONS)
    before = {"pending": ("k1", 5.0, "w1", 9.0), "done": ("k2", 0.0, None, None),
              "dead": ("k3", 0.0, None, None), "superseded": ("k4", 0.0, None, None)}
    with engine.begin() as conn:
        for n, (state, (key, retry, owner, until)) in enumerate(before.items()):
            conn.execute(text(
                "INSERT INTO inbox (id, institution, stream, record_key, content_hash, payload, "
                "received_at, state, attempts, next_attempt_at, lease_owner, lease_until) VALUES "
                "(:id, 'v', 'orders', :key, 'h', '{}', 1.0, :state, 1, :retry, :owner, :until)"),
                {"id": n + 1, "key": key, "state": state, "retry": retry, "owner": owner,
                 "until": until})
    migrate.upgrade(engine, plugin_locations())
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id, institution, next_attempt_at, lease_owner, "
                                 "lease_until FROM queue")).all() == [(1, "v", 5.0, "w1", 9.0)]
        assert dict(conn.execute(text("SELECT state, record_key FROM inbox_state")).all()) == {
            state: key for state, (key, *_) in before.items()}


def test_the_quarantine_keeps_one_row_per_content(new_database):
    """engine_0006 merges the quarantine rows of one content into the first: their number is
    its count, the latest arrival its last sighting and reason; held if any of them was."""
    engine = make_engine(new_database())
    upgrade_to(engine, ("engine_0005",))
    rows = [(1, "v", "orders", '{"a":1}', "old reason", 1.0, "reprocessed"),
            (2, "v", "orders", '{"b":2}', "other", 2.0, "held"),
            (3, "v", "orders", '{"a":1}', "new reason", 3.0, "held"),
            (4, "w", "orders", '{"a":1}', "another venue", 4.0, "held"),
            (5, "v", "orders", '{"a":1}', "newest reason", 5.0, "reprocessed")]
    with engine.begin() as conn:
        for row in rows:
            conn.execute(text("INSERT INTO quarantine (id, institution, stream, payload, reason, "
                              "received_at, state) VALUES (:id, :i, :s, :p, :r, :t, :st)"),
                         dict(zip(("id", "i", "s", "p", "r", "t", "st"), row, strict=True)))
    migrate.upgrade(engine, plugin_locations())
    with engine.connect() as conn:
        found = conn.execute(text("SELECT id, institution, payload, reason, received_at, "
                                  "last_seen_at, count, state, content_hash FROM quarantine "
                                  "ORDER BY id")).all()
    assert [tuple(r) for r in found] == [
        (1, "v", '{"a":1}', "newest reason", 1.0, 5.0, 3, "held", content_hash('{"a":1}')),
        (2, "v", '{"b":2}', "other", 2.0, 2.0, 1, "held", content_hash('{"b":2}')),
        (4, "w", '{"a":1}', "another venue", 4.0, 4.0, 1, "held", content_hash('{"a":1}'))]


def test_the_models_match_the_migrations(new_database):
    """A model changed without a migration, or a migration without its model change, fails
    here, with the migration Alembic would write to make the database match the models."""
    engine = make_engine(new_database())
    migrate.upgrade(engine, plugin_locations())
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={
            "render_as_batch": conn.dialect.name == "sqlite"})  # SQLite alters by copying
        differences = compare_metadata(context, MODELS)
        suggestion = render_python_code(produce_migrations(context, MODELS).upgrade_ops) \
            if differences else ""
    assert differences == [], f"the models and the migrations differ; a migration:\n{suggestion}"


FORK_EIGHT = """
import json, multiprocessing, sys
from s360bridge.core.plugin.manager import Hooks
from s360bridge.core.storage import migrate
from s360bridge.core.storage.db import make_engine
from s360bridge.core.storage.tables import INBOX

def open_at_once(url, locations, barrier, applied):
    barrier.wait(10)
    engine = make_engine(url, busy_timeout=5)
    applied.put(len(migrate.upgrade(engine, locations)))
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT count(*) FROM inbox")

if __name__ == "__main__":
    ctx = multiprocessing.get_context("fork")
    barrier, applied = ctx.Barrier(8), ctx.SimpleQueue()
    locations = Hooks().migrations()  # the plugins loaded once, before the forks
    procs = [ctx.Process(target=open_at_once, args=(sys.argv[1], locations, barrier, applied),
                         daemon=True) for _ in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    print(json.dumps([p.exitcode for p in procs]))
    print(json.dumps(sorted(applied.get() for p in procs if p.exitcode == 0)))
"""


def test_processes_starting_together_upgrade_once(new_database, tmp_path):
    """gunicorn forks its workers at once, and each opens the database: on a new SQLite file
    each switches it to WAL and upgrades it, under the file's write lock; on PostgreSQL under an
    advisory lock. None may fail on the lock the others hold, and one upgrades. The forks are
    made by a fresh single-threaded process, as gunicorn's master is, not by this test process,
    whose threads (servers of earlier tests) a fork would copy mid-work."""
    url = new_database()
    script = tmp_path / "fork_eight.py"
    script.write_text(FORK_EIGHT, "utf-8")
    done = subprocess.run([sys.executable, str(script), url], capture_output=True, text=True,
                          timeout=120)
    lines = done.stdout.splitlines()
    assert lines[:1] == [json.dumps([0] * 8)], done.stderr
    assert json.loads(lines[1]) == [0] * 7 + [len(EVERY_REVISION)]
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
