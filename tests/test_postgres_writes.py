"""The engine's writes on PostgreSQL: new versions copied straight into the inbox and queued,
ids the sequence gives twice, a completion tried again while the first is committing, lists of
ids as typed arrays (tests/helpers/postgres.py: the server and schemas)."""

from __future__ import annotations

import threading

from s360bridge.core.pipeline.ingest import ingest
from s360bridge.core.pipeline.receiver import create_app

from .conftest import drain, fixture, post
from .helpers.postgres import needs_pg
from .helpers.processes import checks, wait_until

pytestmark = needs_pg


def test_new_versions_are_copied_straight_in_and_queued_on_postgres(pg_bridge):
    """A batch of new versions goes straight into the inbox, numbered from its sequence, and
    into the queue; a batch with a version there already stores only the others, and so do
    the batches left to that path after it."""
    inst, stream = pg_bridge.institution("testvenue"), pg_bridge.stream("ticketchecks")

    def batch(*ids):
        check = fixture("ticketchecks.json")[0]
        r = ingest(pg_bridge, inst, stream, [{**check, "ticket_check_id": i} for i in ids])
        assert r.quarantined == 0
        return r.accepted, r.duplicates

    assert batch(1, 2) == (2, 0)
    assert batch(2, 3) == (1, 1)  # 2 is there: only 3 is stored
    assert batch(4, 4) == (1, 1)  # a version twice in one batch is a duplicate too
    assert batch(5) == (1, 0)
    with pg_bridge.engine.connect() as conn:  # every version queued, and nothing else
        rows = conn.exec_driver_sql(
            "SELECT i.record_key, q.institution FROM inbox i FULL JOIN queue q "
            "ON q.id = i.id ORDER BY i.id").all()
    assert rows == [(str(n), "testvenue") for n in range(1, 6)]


def test_a_completion_tried_again_waits_for_the_first_one_still_committing(pg_bridge):
    """A completion's first try is still committing when the worker, its answer lost, tries
    again: the second try waits for it and, seeing the claim hold nothing any more, records
    nothing a second time."""
    from s360bridge.core.pipeline import attempts
    from s360bridge.core.pipeline.claims import claim
    from s360bridge.core.pipeline.queue import _DONE, complete
    from s360bridge.core.storage.rawsql import run

    inst, stream = pg_bridge.institution("testvenue"), pg_bridge.stream("ticketchecks")
    ingest(pg_bridge, inst, stream, checks(60_000_000_000, 3))
    c = claim(pg_bridge.engine, ["testvenue"], 10, 60)
    with pg_bridge.engine.connect() as first:
        tx = first.begin()  # the first try, as complete() makes it, not committed yet
        run(first, _DONE, (c.seqs, c.token))
        attempts.record(first, attempts.pushed("journal", 0.0, c.seqs))
        pid = run(first, "SELECT pg_backend_pid()")[0][0]
        again = threading.Thread(target=complete, kwargs={"again": True}, args=(
            pg_bridge.engine, c.token, c.seqs, [], 5, 1.0, 10.0, None,
            attempts.pushed("journal", 0.0, c.seqs)))
        again.start()
        wait_until(lambda: waits_for(pg_bridge, pid), 10, "the second try waits")
        tx.commit()
    again.join(10)
    with pg_bridge.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM queue").scalar() == 0
        assert conn.exec_driver_sql("SELECT count(*) FROM attempt").scalar() == 3


def waits_for(bridge, pid: int) -> bool:
    """Does a session wait for a lock that the session ``pid`` holds?"""
    with bridge.engine.connect() as conn:
        return bool(conn.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
            (pid,)).scalar())


def test_a_list_of_integers_is_a_typed_array_for_the_statement(pg_bridge):
    """``run`` gives PostgreSQL a list of integers as a bigint[], so that a plugin's statement
    needs no cast to read it; other lists go as psycopg makes them."""
    from s360bridge.core.storage.rawsql import run

    with pg_bridge.engine.connect() as conn:
        assert run(conn, "SELECT cardinality(?), (SELECT sum(x) FROM unnest(?) AS x), "
                         "pg_typeof(?)::text", ([1, 2, 3], [10**15, 5], [7])) == [
            (3, 10**15 + 5, "bigint[]")]
        assert run(conn, "SELECT array_length(?, 1), ?::text[]", ([], ["a", "b"])) == [
            (None, ["a", "b"])]


def test_an_id_given_twice_by_the_sequence_is_an_error_not_a_duplicate(pg_bridge):
    """A restore that left the inbox's sequence behind gives ids in use again: the batch is
    refused with an error answer, stored nowhere (S-360 sends it again), never counted as a
    duplicate, whichever way it is written; once the sequence is set past the ids in use, it
    is stored."""
    client = create_app(pg_bridge).test_client()
    checks = fixture("ticketchecks.json")
    assert post(client, "ticketchecks", checks[:2]).json["accepted"] == 2

    def set_sequence(sql):
        with pg_bridge.engine.connect() as conn:
            conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('inbox', 'id'), {sql})")
            conn.commit()

    for queued in (True, False):  # the ids in use still queued, then delivered
        if not queued:
            drain(pg_bridge)
        set_sequence("1, false")
        assert post(client, "ticketchecks", checks[2:3]).status_code == 500
    set_sequence("(SELECT max(id) FROM inbox)")
    assert post(client, "ticketchecks", checks[2:3]).json["accepted"] == 1
    with pg_bridge.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM inbox").scalar() == 3


def test_a_transaction_begun_with_its_first_statements_is_still_one(pg_bridge):
    """``run`` and ``run_all`` send the BEGIN of a transaction they start with its statements
    (psycopg would wait for its answer first): the transaction is still one, which a rollback
    undoes whole, and the connection's next transaction, on statements outside them, is
    psycopg's again, not a statement autocommitted at a time; so is a pooled one's."""
    from s360bridge.core.storage.rawsql import run, run_all

    def count(conn) -> int:
        return run(conn, "SELECT count(*) FROM begun")[0][0]

    with pg_bridge.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE begun (n int)")
    with pg_bridge.engine.connect() as conn:
        tx = conn.begin()
        assert run_all(conn, [("INSERT INTO begun VALUES (1)", ()),
                              ("SELECT count(*) FROM begun", ())]) == [[], [(1,)]]
        tx.rollback()
        tx = conn.begin()
        assert count(conn) == 0
        conn.exec_driver_sql("INSERT INTO begun VALUES (2)")
        tx.rollback()
        with conn.begin():
            assert count(conn) == 0
            run(conn, "INSERT INTO begun VALUES (3)")
            run(conn, "INSERT INTO begun VALUES (4)")
        with conn.begin():
            assert count(conn) == 2
    with pg_bridge.engine.connect() as conn:  # the pool's connection, begun by ``run``
        assert conn.connection.driver_connection.autocommit is False
        with conn.begin():
            conn.exec_driver_sql("INSERT INTO begun VALUES (5)")
            conn.rollback()
        assert conn.exec_driver_sql("SELECT count(*) FROM begun").scalar() == 2


def test_statements_on_the_driver_after_a_begun_transaction_are_in_one_again(pg_bridge):
    """Once the transaction ``run`` began is over, a statement on the driver in the same
    checkout (a COPY, a plugin's cursor) is in a transaction of psycopg's again, and so is
    ``run``'s next; on an engine that ``make_engine`` did not make, psycopg begins them all."""
    from sqlalchemy import create_engine

    from s360bridge.core.storage.rawsql import driver, run

    with pg_bridge.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE begun (n int)")
    url = pg_bridge.engine.url
    with pg_bridge.engine.connect() as conn:
        run(conn, "INSERT INTO begun VALUES (1)")
        conn.connection.driver_connection.commit()
        driver(conn).cursor().execute("INSERT INTO begun VALUES (2)")
    with pg_bridge.engine.connect() as conn:  # the pool rolled the second back
        assert run(conn, "SELECT n FROM begun") == [(1,)]
        conn.connection.driver_connection.commit()
        run(conn, "INSERT INTO begun VALUES (3)")
        conn.connection.driver_connection.rollback()
        tx = conn.begin_twophase()  # psycopg refuses two-phase ones in autocommit mode
        conn.exec_driver_sql("INSERT INTO begun VALUES (3)")
        tx.rollback()
        run(conn, "INSERT INTO begun VALUES (3)")
    plain = create_engine(url)
    with plain.connect() as conn:
        assert run(conn, "SELECT n FROM begun") == [(1,)]
        assert conn.connection.driver_connection.autocommit is False
        run(conn, "INSERT INTO begun VALUES (4)")
    with plain.connect() as conn:
        assert run(conn, "SELECT n FROM begun") == [(1,)]
    plain.dispose()


def test_a_claim_too_large_for_one_value_is_made_again_at_half_the_size(pg_bridge,
                                                                        monkeypatch):
    """PostgreSQL refuses a value over 1 GB (SQLSTATE 54000): a claim whose payloads would make
    one is made again with half as many records, until it passes; the refused ones leased
    nothing; the next claim starts from the size that passed, doubled."""
    from s360bridge.core.pipeline import claims
    from s360bridge.core.storage.rawsql import run

    inst, stream = pg_bridge.institution("testvenue"), pg_bridge.stream("ticketchecks")
    ingest(pg_bridge, inst, stream, checks(70_000_000_000, 10))
    sizes, real = [], claims._claimed

    def claimed(conn, params, mine):
        sizes.append(params[5])
        if params[5] > 2:  # a real refusal of the server's, over its limit of a value
            run(conn, "SELECT repeat('x', 1073741824)")
        return real(conn, params, mine)

    monkeypatch.setattr(claims, "_claimed", claimed)
    c = claims.claim(pg_bridge.engine, ["testvenue"], 8, 60)
    assert sizes == [8, 4, 2] and len(c) == 2
    assert len(claims.claim(pg_bridge.engine, ["testvenue"], 8, 60)) == 2
    assert sizes == [8, 4, 2, 4, 2]
    with pg_bridge.engine.connect() as conn:
        assert run(conn, "SELECT count(*) FROM queue WHERE lease_owner IS NOT NULL") == [(4,)]


def test_the_begin_sent_with_the_first_statement_keeps_the_isolation_level(pg_bridge):
    """The BEGIN ``run`` sends is psycopg's: with the isolation level SQLAlchemy gives a
    connection back from AUTOCOMMIT (read committed, as the queue's vacuum leaves them), or
    the one a caller asked for."""
    from s360bridge.core.storage.rawsql import run

    def level(conn) -> tuple:
        with conn.begin():
            return run(conn, "SHOW transaction_isolation")[0][0], \
                conn.connection.info.get("s360_own_begin")

    with pg_bridge.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("SELECT 1")
    with pg_bridge.engine.connect() as conn:
        assert conn.connection.driver_connection.isolation_level is not None
        assert level(conn) == ("read committed", True)
    with pg_bridge.engine.connect().execution_options(isolation_level="SERIALIZABLE") as conn:
        assert level(conn) == ("serializable", True)
