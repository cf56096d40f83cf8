"""The engine on PostgreSQL: duplicates, versions, shared claims, the call budget, the plans
of the hot statements, pooled connections (tests/helpers/postgres.py: the server and schemas).
"""

from __future__ import annotations

import json
import re
import threading

import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError

from s360bridge.core.pipeline.ingest import ingest
from s360bridge.core.pipeline.receiver import create_app
from s360bridge.core.pipeline.worker import Worker

from .conftest import Journal, drain, fixture, post
from .helpers.postgres import PG, needs_pg, warehouse
from .helpers.processes import checks, wait_until
from .helpers.records import sale_version
from .helpers.world import spend_concurrently

pytestmark = needs_pg


def test_duplicates_versions_and_children_on_postgres(pg_bridge, journal):
    client = create_app(pg_bridge).test_client()
    assert post(client, "orders", fixture("order_sale.json")).json["accepted"] == 2
    assert post(client, "orders", fixture("order_sale.json")).json == {
        "accepted": 0, "duplicates": 2, "quarantined": 0, "before_cutoff": 0}
    drain(pg_bridge)
    post(client, "orders", sale_version(7000))
    drain(pg_bridge)
    assert post(client, "orders", fixture("order_sale.json")[0]).json["duplicates"] == 1
    twice = [sale_version(8000), sale_version(8000)]
    assert post(client, "orders", twice).json == {"accepted": 1, "duplicates": 1,
                                                  "quarantined": 0, "before_cutoff": 0}
    drain(pg_bridge)
    drain(pg_bridge)
    assert warehouse(pg_bridge, "SELECT sale_amount FROM orders WHERE order_id = 10000815533") \
        == [(8000,)]
    assert warehouse(pg_bridge, "SELECT count(*) FROM order_operations") == [(3,)]
    assert journal.pushes() == {"10000815533": 3, "10000815601": 1}




def test_two_workers_share_claims_on_postgres(pg_bridge, tmp_path):
    inst, stream = pg_bridge.institution("testvenue"), pg_bridge.stream("ticketchecks")
    for i in range(20):
        ingest(pg_bridge, inst, stream, checks(50_000_000_000 + i * 100, 100))
    errors = []

    def work():
        worker = Worker(pg_bridge)
        try:
            while worker.run_once():
                pass
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    pushes = Journal(tmp_path / "journal.jsonl").pushes("ticketchecks")
    assert len(pushes) == 2000 and set(pushes.values()) == {1}
    assert warehouse(pg_bridge, "SELECT count(*) FROM ticket_checks") == [(2000,)]


def test_call_budget_and_crm_links_on_postgresql(pg_bridge):
    """The shared S-360 call budget and the CRM links, on the engine's PostgreSQL."""
    from s360bridge.core.connectors import crm_links as links
    from s360bridge.core.storage.db import make_engine


    url = pg_bridge.settings.engine.database_url
    engines = [make_engine(url) for _ in range(3)]  # three "processes", one database
    taken = spend_concurrently(engines, 4, 0.5)
    assert len(taken) == 12
    # never 5 calls within one window (the log keeps milliseconds)
    assert all(b - a >= 0.499 for a, b in zip(taken, taken[4:], strict=False))
    for e in engines:
        e.dispose()

    links.remember(pg_bridge.engine, "testvenue", [("0012", "C1", {"email": "a@b.c"})])
    links.remember(pg_bridge.engine, "testvenue", [("0012", None, {"phone": "1"})], merge=True)
    assert links.find(pg_bridge.engine, "testvenue", "C1", None) == \
        ("0012", {"email": "a@b.c", "phone": "1"})
    assert links.forget(pg_bridge.engine, "testvenue", "0012") == "C1"


def test_offer_rows_and_cache_on_postgresql(pg_bridge):
    """The offers' durable progress: one row per idempotency key, leases, the cache."""
    from s360bridge.core.pipeline import leases
    from s360bridge.plugins.offers import store

    engine = pg_bridge.engine
    first, made = store.create(engine, "testvenue", "key-1", {"lines": [1]})
    again, made_again = store.create(engine, "testvenue", "key-1", {"lines": [1]})
    assert made and not made_again and again["id"] == first["id"]
    assert leases.take(engine, store.OFFERS, first["id"], "a", 60)
    assert not leases.take(engine, store.OFFERS, first["id"], "b", 60)  # held by another
    assert store.unfinished(engine, ["testvenue"]) == []
    store.save(engine, first["id"], state="ordering", lease_until=0.0, result={"x": 1})
    assert store.unfinished(engine, ["testvenue"]) == [first["id"]]
    store.cache(engine, "testvenue", "catalog", {"seasons": []}, "m1")
    store.cache(engine, "testvenue", "catalog", {"seasons": [1]}, "m2")
    assert store.cached(engine, "testvenue", "catalog")["data"] == {"seasons": [1]}


def _plan(conn, sql: str, params: tuple) -> str:
    """PostgreSQL's plan of a hot statement as JSON text, under the transaction's settings."""
    from s360bridge.core.storage.rawsql import run

    return json.dumps(run(conn, "EXPLAIN (FORMAT JSON) " + sql, params)[0][0])


def children_delete_plan(bridge) -> str:
    """The plan of replacing an order's operations, on tables filled and never analyzed."""
    from s360bridge.core.storage.rawsql import index_plans_only
    from s360bridge.plugins.orders.warehouse import OPERATIONS
    from s360bridge.plugins.sql.upsert import _children_delete

    post(create_app(bridge).test_client(), "orders", fixture("order_sale.json"))
    drain(bridge)
    target = bridge.target(bridge.institution("testvenue"), "datx")
    with target.engine.connect() as conn:
        index_plans_only(conn)
        cursor = conn.connection.driver_connection.cursor()
        sql = _children_delete(OPERATIONS, ("institution", "order_id"), conn.dialect)
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql, [["testvenue"], [10000815533]])
        plan = json.dumps(cursor.fetchone()[0])
        conn.rollback()
    return plan


def test_hot_statements_use_their_indexes_without_statistics(pg_bridge):
    """Filled after creation and never analyzed (autovacuum off for the test), the tables look
    empty to the planner; the claim, the version look-up, the completion and the warehouse
    upsert must still read their indexes, not scan, bitmap or sort what grows with history."""
    from s360bridge.core.pipeline.claims import claim_statement
    from s360bridge.core.pipeline.queue import _DONE
    from s360bridge.core.pipeline.supersede import _LISTED, _QUEUED, _VERSIONS
    from s360bridge.core.pipeline.versions import _MARKED
    from s360bridge.core.storage.copies import _copy_statements
    from s360bridge.core.storage.rawsql import index_plans_only
    from s360bridge.plugins.sql.upsert import _conflict
    from s360bridge.plugins.ticketchecks.warehouse import TICKET_CHECKS

    with pg_bridge.engine.begin() as conn:
        for table in ("inbox", "queue"):
            conn.exec_driver_sql(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    inst, stream = pg_bridge.institution("testvenue"), pg_bridge.stream("ticketchecks")
    for i in range(30):
        ingest(pg_bridge, inst, stream, checks(60_000_000_000 + i * 100, 100))
    with pg_bridge.engine.connect() as conn:
        assert conn.exec_driver_sql(
            "SELECT last_analyze, last_autoanalyze FROM pg_stat_user_tables "
            "WHERE relid IN ('inbox'::regclass, 'queue'::regclass)").all() == [(None, None)] * 2
        keys = [str(60_000_000_000 + i) for i in range(500)]
        ids = [r[0] for r in conn.exec_driver_sql("SELECT id FROM inbox LIMIT 500")]
        index_plans_only(conn)  # as the claim and the completion do, in the same transaction
        plans = {
            "claim": _plan(conn, claim_statement("postgresql"),
                           ("t", 1e12, 1e12, 1e12, ["testvenue"], 500, ["t", "u"], 4000)),
            "versions": _plan(conn, _VERSIONS["postgresql"].format(payload=""),
                              ("testvenue", "ticketchecks", keys)),
            "queued": _plan(conn, _QUEUED, (ids,)),
            "listed": _plan(conn, _LISTED.format(payload=", payload"), (ids,)),
            "marks": _plan(conn, _MARKED, ("testvenue", "orders", keys)),
            "done": _plan(conn, _DONE, (ids, "t")),
        }
        conn.rollback()
    for name, plan in plans.items():
        for bad in ("Seq Scan", "Bitmap", '"Sort"', "Materialize"):
            assert bad not in plan, f"{name}: {bad} in {plan}"
    for name in ("claim", "queued", "done"):
        assert '"Index Name": "queue_pkey"' in plans[name], name
    assert '"Node Type": "Tid Scan"' in plans["claim"]
    assert '"Index Name": "version_mark_pkey"' in plans["marks"]
    assert '"Index Name": "inbox_pkey"' in plans["claim"]
    assert '"Index Name": "inbox_pkey"' in plans["listed"]
    # within the claim: its records' delivery rows by their index, and the others queued
    # before them, with its own records left out by a hash, not a scan per row
    assert re.search(r'"Index Cond": "\(inbox_id = ANY \(\$\d+\)\)"', plans["claim"])
    assert re.search(r'"Index Cond": "\(id < \$\d+\)"', plans["claim"])
    assert "(NOT (hashed SubPlan" in plans["claim"]
    # and the rows before it whose key hash is one of its own, by a hash too
    assert re.search(r"key_hash IS NULL\) OR \(hashed SubPlan", plans["claim"])
    assert "record_key)::text = k.key" in plans["versions"]
    assert '"Index Name": "uq_inbox_version"' in plans["versions"]
    # the warehouse upsert (from the batch's staging table) needs no read: its arbiter is the
    # primary key
    drain(pg_bridge)
    target = pg_bridge.target(inst, "datx")
    with target.engine.connect() as conn, conn.begin():
        assert conn.exec_driver_sql("SELECT count(*) FROM ticket_checks").scalar() == 3000
        columns = tuple(c.name for c in TICKET_CHECKS.columns)
        create, _, _, upsert = _copy_statements("ticket_checks", columns,
                                             _conflict(TICKET_CHECKS) + " RETURNING check_key")
        conn.exec_driver_sql(create)
        plan = json.dumps(conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + upsert).scalar())
        conn.rollback()
    assert '"Conflict Arbiter Indexes": ["ticket_checks_pkey"]' in plan
    children_plan = children_delete_plan(pg_bridge)
    for bad in ("Seq Scan", "Bitmap", '"Sort"'):
        assert bad not in children_plan, children_plan
    assert '"Index Name": "order_operations_pkey"' in children_plan
    assert '"Node Type": "Tid Scan"' in children_plan
    assert plan.count('"Seq Scan"') == 1  # the batch itself, in its staging table
    assert '"Seq Scan", "Parent Relationship": "Outer", "Parallel Aware": false, ' \
           '"Async Capable": false, "Relation Name": "_s360_stage_ticket_checks"' in plan






@pytest.mark.parametrize("idle_ping", [0.0, 3600.0], ids=["pinged", "taken as it is"])
def test_a_pooled_connection_idle_for_a_while_is_checked_before_use(idle_ping, monkeypatch):
    """A connection idle longer than IDLE_PING_SECONDS is pinged at checkout and replaced when
    its server session is gone; one used moments ago is not pinged (a round trip a
    transaction), so a session gone meanwhile fails its statement, once."""
    from s360bridge.core.storage import db

    monkeypatch.setattr(db, "IDLE_PING_SECONDS", idle_ping)
    engine, admin = db.make_engine(PG), create_engine(PG, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    with admin.connect() as conn:
        assert conn.exec_driver_sql("SELECT pg_terminate_backend(%s)", (pid,)).scalar()
        wait_until(lambda: not conn.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).scalar(), 10,
            "the server session to end")
    if idle_ping:
        with pytest.raises(OperationalError), engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar() != pid
    engine.dispose()
    admin.dispose()


def test_a_pinged_connection_is_left_in_no_transaction(monkeypatch):
    """The ping at checkout leaves no transaction open on the connection, which can then be
    put in autocommit mode (the worker's vacuum of the queue, retention's)."""
    from s360bridge.core.storage import db

    monkeypatch.setattr(db, "IDLE_PING_SECONDS", 0.0)
    engine = db.make_engine(PG)
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1
    engine.dispose()


def test_the_worker_vacuums_the_queue_it_completed(pg_bridge, monkeypatch):
    """Claims walk over the dead entries of completed records until a vacuum: the worker runs
    one every TIDY_EVERY records it completed, not waiting for autovacuum's minute."""
    from s360bridge.core.pipeline import worker as worker_module

    monkeypatch.setattr(worker_module, "TIDY_EVERY", 100)
    with pg_bridge.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE queue SET (autovacuum_enabled = false)")
    inst, stream = pg_bridge.institution("testvenue"), pg_bridge.stream("ticketchecks")
    ingest(pg_bridge, inst, stream, checks(80_000_000_000, 250))

    def vacuums() -> int:
        with pg_bridge.engine.connect() as conn:
            return conn.exec_driver_sql("SELECT vacuum_count FROM pg_stat_user_tables "
                                        "WHERE relid = 'queue'::regclass").scalar()

    assert vacuums() == 0
    assert drain(pg_bridge) == 250  # one batch
    assert vacuums() == 1
    ingest(pg_bridge, inst, stream, checks(80_000_001_000, 50))
    assert drain(pg_bridge) == 50  # a new worker, which has completed 50 records only
    assert vacuums() == 1
