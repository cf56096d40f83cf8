"""PostgreSQL: a batch of new versions with nothing else to write is copied into the inbox as
a statement of its own (committed before the server answers) and queued by the server's
trigger (migrations/engine_0015): two round trips instead of a transaction's four. Any other
batch takes the transaction, and no other writer of inbox rows has the trigger queue them."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from s360bridge.core.pipeline import ingest as ingest_module
from s360bridge.core.pipeline.ingest import ingest
from s360bridge.core.storage import db

from .helpers.postgres import QUEUED_AND_WRONG_HASHES
from .helpers.processes import checks

FIRST = 70_000_000_000


@pytest.fixture
def ways(monkeypatch):
    """Which way each batch was stored: copied alone (its count), or in a transaction."""
    taken = []
    alone, in_transaction = ingest_module._alone, ingest_module._insert_new

    def spy_alone(bridge, prepared):
        n = alone(bridge, prepared)
        if n is not None:
            taken.append(("alone", n))
        return n

    def spy_transaction(conn, rows, known=False):
        n = in_transaction(conn, rows, known)
        taken.append(("transaction" if not known else "transaction, refused alone", n))
        return n

    monkeypatch.setattr(ingest_module, "_alone", spy_alone)
    monkeypatch.setattr(ingest_module, "_insert_new", spy_transaction)
    return taken


def rows(bridge, sql: str):
    with bridge.engine.connect() as conn:
        return conn.execute(text(sql)).all()


def test_new_versions_are_copied_alone_and_queued_by_the_server(pg_bridge, ways):
    inst, stream = pg_bridge.institution("testvenue"), pg_bridge.stream("ticketchecks")
    assert ingest(pg_bridge, inst, stream, checks(FIRST, 50)).accepted == 50
    assert ingest(pg_bridge, inst, stream, checks(FIRST + 50, 30)).accepted == 30
    assert ways == [("alone", 50), ("alone", 30)]
    # every row queued once, with its key's hash
    assert rows(pg_bridge, QUEUED_AND_WRONG_HASHES) == [(80, 0)]
    keys = [int(k) for (k,) in rows(pg_bridge, "SELECT record_key FROM inbox ORDER BY id")]
    assert keys == list(range(FIRST, FIRST + 80))  # numbered in the batches' order


def test_a_batch_with_a_version_there_already_takes_the_transaction(pg_bridge, ways):
    """The COPY is refused whole (nothing written) and the batch goes through the staging
    table, without a second copy; the next batch then goes there without a try, as
    copy_new's do."""
    inst, stream = pg_bridge.institution("testvenue"), pg_bridge.stream("ticketchecks")
    ingest(pg_bridge, inst, stream, checks(FIRST, 10))
    again = ingest(pg_bridge, inst, stream, checks(FIRST + 5, 10))
    assert (again.accepted, again.duplicates) == (5, 5)
    later = ingest(pg_bridge, inst, stream, checks(FIRST + 100, 10))
    assert later.accepted == 10
    assert ways == [("alone", 10), ("transaction, refused alone", 5),
                    ("transaction, refused alone", 10)]
    assert rows(pg_bridge, QUEUED_AND_WRONG_HASHES) == [(25, 0)]
    assert rows(pg_bridge, "SELECT count(*) FROM inbox") == [(25,)]


def test_a_batch_with_something_to_quarantine_takes_the_transaction(pg_bridge, ways):
    inst, stream = pg_bridge.institution("testvenue"), pg_bridge.stream("ticketchecks")
    batch = checks(FIRST, 3)
    batch[1] = {"ticket_check_id": "not a number"}
    result = ingest(pg_bridge, inst, stream, batch)
    assert (result.accepted, result.quarantined) == (2, 1)
    assert ways == [("transaction", 2)]
    assert rows(pg_bridge, QUEUED_AND_WRONG_HASHES) == [(2, 0)]


def test_other_writers_of_inbox_rows_are_not_queued_by_the_trigger(pg_bridge, ways):
    """Only the ingest's own sessions turn the trigger on: a row written otherwise (a test's,
    a restore's) stays unqueued unless its writer queues it."""
    with pg_bridge.engine.begin() as conn:
        conn.execute(text("INSERT INTO inbox (institution, stream, record_key, content_hash, "
                          "payload, received_at, state, attempts) VALUES ('testvenue', "
                          "'ticketchecks', 'k', 'h', '{}', 1, 'accepted', 0)"))
    assert rows(pg_bridge, "SELECT count(*) FROM queue") == [(0,)]


def test_the_autocommit_connections_close_with_the_engine(pg_bridge):
    inst, stream = pg_bridge.institution("testvenue"), pg_bridge.stream("ticketchecks")
    ingest(pg_bridge, inst, stream, checks(FIRST, 5))
    pool = db._twins[pg_bridge.engine]._proxied.pool
    assert pool.checkedin() == 1
    pg_bridge.engine.dispose()
    assert pool.checkedin() == 0
