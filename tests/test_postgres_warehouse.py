"""The warehouse on PostgreSQL: every stream's rows in the binary COPY format, the staging table
of a batch, children replaced, tables made by several workers at once."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy.exc import OperationalError

from s360bridge.core.pipeline.receiver import create_app

from .conftest import drain, fixture, post
from .helpers.postgres import needs_pg, warehouse
from .helpers.records import sale_version

pytestmark = needs_pg


def test_every_stream_reaches_the_warehouse_on_postgres(pg_bridge):
    """Rows are copied into PostgreSQL in its binary format, where each value must have its
    column's type: every built-in stream's rows, children included, get there."""
    client = create_app(pg_bridge).test_client()
    for stream, name in (("contacts", "contacts_person.json"),
                         ("contacts", "contacts_company.json"),
                         ("orders", "order_refund.json"), ("orders", "order_reservation.json"),
                         ("ticketchecks", "ticketchecks.json")):
        assert post(client, stream, fixture(name)).json["quarantined"] == 0
    drain(pg_bridge)
    with pg_bridge.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT state, count(*) FROM inbox_state GROUP BY state"
                                    ).all() == [("done", 10)]
    assert warehouse(pg_bridge, "SELECT (SELECT count(*) FROM contacts), (SELECT count(*) "
                                "FROM orders), (SELECT count(*) FROM ticket_checks)") == [(4, 2, 4)]


def test_a_rolled_back_batch_leaves_the_staging_usable(pg_bridge):
    """The temporary table a batch is copied into is made once per connection; a transaction
    rolled back after making it takes it away, and the next batch makes it again."""
    from s360bridge.core.pipeline.ingest import _COLUMNS
    from s360bridge.core.storage.copies import copy_insert

    row = ("testvenue", "ticketchecks", "k1", "h1", "{}", 0.0, "accepted", 0)
    with pg_bridge.engine.connect() as conn:
        tx = conn.begin()
        assert copy_insert(conn, "inbox", _COLUMNS, [row], "ON CONFLICT DO NOTHING")[0] == 1
        tx.rollback()
        tx = conn.begin()
        assert copy_insert(conn, "inbox", _COLUMNS, [row, row], "ON CONFLICT DO NOTHING")[0] == 1
        tx.commit()
        assert conn.exec_driver_sql("SELECT count(*) FROM inbox").scalar() == 1
        conn.exec_driver_sql("DISCARD TEMP")  # gone behind the bridge's back
        conn.commit()
        again = (*row[:2], "k2", *row[3:])
        with pytest.raises(OperationalError):  # as an unavailable database: retried
            with conn.begin():
                copy_insert(conn, "inbox", _COLUMNS, [again], "ON CONFLICT DO NOTHING")
        with conn.begin():
            assert copy_insert(conn, "inbox", _COLUMNS, [again], "ON CONFLICT DO NOTHING")[0] == 1


def test_the_same_version_again_writes_its_children_again_on_postgresql(pg_bridge):
    """A version pushed again (after a crash, or once the stream's mapping changed) replaces
    its children, as on SQLite; an older one never does."""
    from s360bridge.core.plugin.streams import StoredRecord
    from s360bridge.plugins.orders.warehouse import order_row

    inst = pg_bridge.institution("testvenue")
    target = pg_bridge.target(inst, "datx")
    sale = sale_version(2000)
    target.upsert([order_row(inst, StoredRecord(9, "10000815533", sale, "{}", 0.0))])
    assert warehouse(pg_bridge, "SELECT count(*) FROM order_operations") == [(2,)]
    sale["orderDetailsData"]["operationDatas"] = sale["orderDetailsData"]["operationDatas"][:1]
    target.upsert([order_row(inst, StoredRecord(9, "10000815533", sale, "{}", 0.0))])
    assert warehouse(pg_bridge, "SELECT count(*) FROM order_operations") == [(1,)]
    older = sale_version(1000)
    target.upsert([order_row(inst, StoredRecord(5, "10000815533", older, "{}", 0.0))])
    assert warehouse(pg_bridge, "SELECT count(*) FROM order_operations") == [(1,)]
    assert warehouse(pg_bridge, "SELECT sale_amount FROM orders") == [(2000,)]


def test_workers_making_the_warehouse_tables_at_once_all_succeed(pg_bridge):
    """The first batches of several workers on a new warehouse each make the tables they need;
    on PostgreSQL two concurrent CREATE TABLEs of one name fail one of them (a unique index of
    the catalog), so they take turns."""
    from s360bridge.core.plugin.streams import StoredRecord
    from s360bridge.plugins.orders.warehouse import order_row

    inst = pg_bridge.institution("testvenue")
    target, workers = pg_bridge.target(inst, "datx"), 4
    starting, errors = threading.Barrier(workers), []

    def first_batch(n):
        version = sale_version(2000 + n)  # versions of one order: the newest stays
        row = order_row(inst, StoredRecord(n, "10000815533", version, "{}", 0.0))
        starting.wait(10)
        try:
            target.upsert([row])
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=first_batch, args=(n,)) for n in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert warehouse(pg_bridge, "SELECT sale_amount FROM orders") == [(2000 + workers - 1,)]


def test_a_batch_with_a_known_key_falls_back_to_the_upsert(pg_bridge):
    """New keys are copied straight into the table; a batch with a key already there is
    upserted instead: the newest version wins, an older one never does."""
    from s360bridge.core.plugin.streams import StoredRecord
    from s360bridge.plugins.ticketchecks import Columns
    from s360bridge.plugins.ticketchecks.warehouse import check_row

    inst = pg_bridge.institution("testvenue")
    target, cols = pg_bridge.target(inst, "datx"), Columns.from_options({})

    def batch(seq, *keys, flow="IN"):
        record = {"access_time": "2024-03-14 19:21:07", "check_flow": flow, "ticket_id": 7}
        target.upsert([check_row(inst, cols, StoredRecord(seq + n, k, record, "{}", 0.0))
                       for n, k in enumerate(keys)])

    batch(10, "a", "b")
    batch(20, "b", "c", flow="OUT")  # b is there: upserted, the newer version wins
    batch(1, "a", flow="OUT")  # older: it does not win
    batch(30, "a", flow="OUT")
    batch(40, "d")
    batch(41, "e")
    batch(50, "f")
    assert warehouse(pg_bridge, "SELECT check_key, check_flow, source_seq FROM ticket_checks "
                                "ORDER BY check_key") == [
        ("a", "OUT", 30), ("b", "OUT", 20), ("c", "OUT", 21), ("d", "IN", 40), ("e", "IN", 41),
        ("f", "IN", 50)]


def test_after_a_refused_copy_the_next_batches_are_left_to_the_upsert(pg_bridge):
    """``copy_new`` answers the ids it drew for new keys; refused (a key is there), it writes
    nothing and leaves the next batch to the caller without a try, then the next two after
    another refusal. A try draws ids from the sequence even when refused; a skip draws none."""
    from s360bridge.core.storage.copies import copy_new

    with pg_bridge.engine.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id bigserial PRIMARY KEY, k text UNIQUE)")
        conn.commit()

        def copy(*keys):
            with conn.begin():
                ids = copy_new(conn, "t", ("k",), [(k,) for k in keys], numbered=(
                    "id", "SELECT nextval('t_id_seq') FROM generate_series(1, ?)", (len(keys),)))
            with conn.begin():
                return ids, conn.exec_driver_sql("SELECT last_value FROM t_id_seq").scalar()

        assert copy("a", "b") == ([1, 2], 2)
        assert copy("b", "c") == (None, 4)  # refused: c is not written either
        assert copy("d") == (None, 4)  # left to the caller
        assert copy("a") == (None, 5)  # tried, refused again
        assert copy("e") == (None, 5)
        assert copy("e") == (None, 5)
        assert copy("e", "f") == ([6, 7], 7)
        assert copy("g") == ([8], 8)
        assert conn.exec_driver_sql("SELECT id, k FROM t ORDER BY id").all() == [
            (1, "a"), (2, "b"), (6, "e"), (7, "f"), (8, "g")]
