"""The database's gauges of /metrics (read once per scrape, from indexes) and the counters the
worker and the S-360 client keep, in one process: backlog and oldest age per target, dead
letters, the call budget, plugins' gauges; and the plans of the gauges' statements."""

from __future__ import annotations

import json
import time

import pytest

from s360bridge.core.api import hookimpl
from s360bridge.core.errors import PluginError
from s360bridge.core.operations import pause
from s360bridge.core.operations.audit import Actor
from s360bridge.core.operator import gauges
from s360bridge.core.operator.app import create_operator_app
from s360bridge.core.pipeline.ingest import ingest
from s360bridge.core.pipeline.receiver import create_app
from s360bridge.core.pipeline.worker import Worker
from s360bridge.core.storage.rawsql import index_plans_only, run
from s360bridge.simulator.api import ApiAccess, S360Api
from s360bridge.simulator.serving import Served

from .conftest import base_config, bridge_of, drain, fixture, post, write_config
from .helpers.gate import GatePlugin
from .helpers.metrics import OPERATOR_AUTH, OPERATOR_ENV, Scrape, operator_settings
from .helpers.plugins import registered
from .helpers.processes import checks


@pytest.fixture
def operator_env(monkeypatch, secrets_env):
    for k, v in OPERATOR_ENV.items():
        monkeypatch.setenv(k, v)


def scrape(client) -> Scrape:
    r = client.get("/metrics", auth=OPERATOR_AUTH)
    assert r.status_code == 200
    return Scrape(r.text)


def test_backlog_and_oldest_age_per_target_deliveries_and_dead_letters(tmp_path, operator_env):
    """Orders go to the warehouse and to a gate that takes nothing: the warehouse's backlog is
    empty at once (its deliveries are done), the gate's holds both records with their age;
    then the gate refuses them for good: two dead letters, and no backlog anywhere."""
    cfg = base_config(tmp_path)
    cfg["targets"]["gate"] = {"type": "gate"}
    cfg["streams"]["orders"]["targets"] = ["datx", "gate"]
    cfg["engine"]["operator"] = operator_settings()
    with registered(GatePlugin(), "gate-plugin"):
        bridge = bridge_of(write_config(tmp_path, cfg))
        ops = create_operator_app(bridge).test_client()
        before = scrape(ops)
        posted = time.time()
        assert post(create_app(bridge).test_client(), "orders",
                    fixture("order_sale.json")).json["accepted"] == 2
        drain(bridge)
        waiting = scrape(ops)
        elapsed = time.time() - posted
        bridge.target(bridge.institution("testvenue"), "gate").mode = "reject"
        Worker(bridge, clock=lambda: time.time() + 3600).run_once()  # past the retry time
        dead = scrape(ops)
        bridge.close()

    def added(after: Scrape, name: str, **labels) -> float:
        return after(name, **labels) - before(name, **labels)

    where = {"institution": "testvenue"}
    orders = {**where, "stream": "orders"}
    assert waiting("s360bridge_backlog_records", **where, target="datx") == 0
    assert waiting("s360bridge_oldest_pending_age_seconds", **where, target="datx") == 0
    assert waiting("s360bridge_backlog_records", **where, target="gate") == 2
    assert 0 < waiting("s360bridge_oldest_pending_age_seconds", **where, target="gate") \
        <= elapsed
    assert waiting("s360bridge_backlog_records", **where, target="journal") == 0
    assert added(waiting, "s360bridge_deliveries_total", **orders, target="datx",
                 outcome="delivered") == 2
    assert added(waiting, "s360bridge_deliveries_total", **orders, target="gate",
                 outcome="retry") == 2
    assert added(waiting, "s360bridge_delivery_latency_seconds_count", **where,
                 target="datx") == 2
    assert waiting("s360bridge_dead_letter_records", **orders) == 0
    # refused for good: dead letters, counted once; the warehouse does not get them again
    assert dead("s360bridge_dead_letter_records", **orders) == 2
    assert added(dead, "s360bridge_dead_letters_total", **orders) == 2
    assert added(dead, "s360bridge_deliveries_total", **orders, target="gate",
                 outcome="dead") == 2
    assert added(dead, "s360bridge_deliveries_total", **orders, target="datx",
                 outcome="delivered") == 2
    assert dead("s360bridge_backlog_records", **where, target="gate") == 0
    assert dead("s360bridge_oldest_pending_age_seconds", **where, target="gate") == 0
    assert dead("s360bridge_engine_database_up") == 1


def test_s360_calls_by_method_and_status_and_the_budget_left(tmp_path, operator_env,
                                                             monkeypatch):
    secret = "partner-shared-secret-for-the-tests-0123456"
    api = S360Api({"testvenue": ApiAccess(secret, frozenset({"OP"}), 100, 60.0)})
    monkeypatch.setenv("TEST_S360_SECRET", secret)
    with Served(api.app()) as served:
        cfg = base_config(tmp_path)
        cfg["s360_api"] = {"base_url": f"{served.url}/testvenue", "operator": "OP",
                           "partner": "tests", "secret": {"$env": "TEST_S360_SECRET"},
                           "calls_per_minute": 120, "monthly_calls": 1000}
        cfg["engine"]["operator"] = operator_settings()
        bridge = bridge_of(write_config(tmp_path, cfg))
        ops = create_operator_app(bridge).test_client()
        before = scrape(ops)
        client = bridge.s360(bridge.institution("testvenue"))
        client.sleep = lambda _: None  # a 509 waits for the next window: not in a test
        api.force_509 = 1
        for number in ("1", "2"):
            client.fetch_each("contactInformationPublicService", "getContactData", [number],
                              lambda n: {"contactNumber": n})
        after = scrape(ops)
        bridge.close()
    labels = {"institution": "testvenue", "method": "getContactData"}
    assert (api.count("getContactData", 509), api.count("getContactData", 200)) == (1, 2)
    for code, n in (("509", 1), ("200", 2)):
        assert after("s360bridge_s360_api_calls_total", **labels, code=code) \
            - before("s360bridge_s360_api_calls_total", **labels, code=code) == n
    assert after("s360bridge_s360_api_calls_left", **labels) == 120 - 3  # the 509 took one
    assert after("s360bridge_s360_api_month_calls_left", institution="testvenue") == 1000 - 3


def test_plugins_register_gauges_read_at_each_scrape(tmp_path, operator_env, caplog):
    reads = []

    class OffersGauges:
        @hookimpl
        def register_gauges(self, register, bridge):
            def offers():
                reads.append(bridge)
                return [(("testvenue", "open"), 3), (("testvenue", "closed"), 5)]

            register("s360bridge_test_offers", "Offers by state", ("institution", "state"),
                     offers)
            register("s360bridge_test_broken", "A gauge that fails", (), lambda: 1 / 0)

    cfg = base_config(tmp_path)
    cfg["engine"]["operator"] = operator_settings()
    bridge = bridge_of(write_config(tmp_path, cfg))
    with registered(OffersGauges(), "offers-gauges"):
        ops = create_operator_app(bridge).test_client()
    first, second = scrape(ops), scrape(ops)
    assert reads == [bridge, bridge]  # once per scrape
    assert second("s360bridge_test_offers", institution="testvenue", state="closed") == 5
    assert first.get("s360bridge_test_offers", institution="testvenue", state="open") == 3
    assert "s360bridge_test_broken" not in second.names()  # the others are still there
    assert second.get("s360bridge_backlog_records", institution="testvenue",
                      target="datx") == 0
    assert "/metrics: the gauge s360bridge_test_broken could not be read" in caplog.text

    class Clashing:
        @hookimpl
        def register_gauges(self, register, bridge):
            register("s360bridge_backlog_records", "", (), list)

    class Misnamed:
        @hookimpl
        def register_gauges(self, register, bridge):
            register("offers-by-state", "", (), list)

    for plugin, error in ((Clashing(), "is a gauge of s360bridge itself"),
                          (Misnamed(), "'offers-by-state' is not a new gauge name")):
        with registered(plugin, "bad-gauges"), pytest.raises(PluginError, match=error):
            create_operator_app(bridge)
    bridge.close()


def test_a_database_that_cannot_be_read_is_a_gauge_not_a_failed_scrape(tmp_path, operator_env):
    cfg = base_config(tmp_path)
    cfg["engine"]["operator"] = operator_settings()
    bridge = bridge_of(write_config(tmp_path, cfg))
    ops = create_operator_app(bridge).test_client()
    assert scrape(ops)("s360bridge_engine_database_up") == 1
    bridge.engine.dispose()
    (tmp_path / "engine.db").rename(tmp_path / "elsewhere.db")  # a new, empty file opens
    down = scrape(ops)
    assert down("s360bridge_engine_database_up") == 0
    assert "s360bridge_backlog_records" not in down.names()
    bridge.close()


STATEMENTS = {"backlog": (gauges.BACKLOG, ()), "done": (gauges.DONE, ()),
              "oldest": (gauges.OLDEST_FOR, ("testvenue", ["ticketchecks"], "datx"))}


def test_the_gauges_read_indexes_on_sqlite(bridge):
    """No statement scans the inbox or the deliveries: the queue is walked, the inbox and the
    deliveries probed by primary key; dead letters, quarantine and calls read their index."""
    with bridge.engine.connect() as conn:
        def plan(sql, params=()):
            return " | ".join(r[-1] for r in run(conn, "EXPLAIN QUERY PLAN " + sql, params))

        plans = {name: plan(sql["sqlite"], params) for name, (sql, params) in STATEMENTS.items()}
        plans |= {"dead": plan(gauges.DEAD), "held": plan(gauges.HELD),
                  "calls": plan(gauges.CALLS, (0, "a/", "a0"))}
    for name in ("backlog", "done", "oldest"):
        assert plans[name].startswith("SCAN q | "), plans[name]
        assert "SEARCH i USING INTEGER PRIMARY KEY (rowid=?)" in plans[name]
        assert "SCAN i" not in plans[name] and "SCAN d" not in plans[name]
    assert "SEARCH d USING INDEX sqlite_autoindex_delivery_1 (inbox_id=?)" in plans["done"]
    assert "(inbox_id=? AND target=?)" in plans["oldest"]
    assert "TEMP B-TREE FOR ORDER BY" not in plans["oldest"]
    assert plans["dead"] == "SCAN inbox USING INDEX ix_inbox_dead"
    assert plans["held"] == "SCAN quarantine USING COVERING INDEX ix_quarantine_where"
    assert plans["calls"] == ("SEARCH s360_call_log USING COVERING INDEX ix_s360_call_log "
                              "(bucket>? AND bucket<?)")


def test_the_gauges_read_indexes_on_postgres_without_statistics(pg_bridge):
    """Filled and never analyzed, the inbox looks empty to the planner: a merge join would then
    walk its whole primary key, or a scan the deliveries of all history. The queue is walked,
    the rest probed."""
    with pg_bridge.engine.begin() as conn:
        for table in ("inbox", "queue", "delivery"):
            conn.exec_driver_sql(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    inst, stream = pg_bridge.institution("testvenue"), pg_bridge.stream("ticketchecks")
    for i in range(20):
        ingest(pg_bridge, inst, stream, checks(60_000_000_000 + i * 100, 100))
    with pg_bridge.engine.connect() as conn:
        index_plans_only(conn)  # as the scrape does

        def plan(sql, params=()):
            return json.dumps(run(conn, "EXPLAIN (FORMAT JSON) " + sql, params)[0][0])

        plans = {name: plan(sql["postgresql"], params)
                 for name, (sql, params) in STATEMENTS.items()}
        plans |= {"dead": plan(gauges.DEAD), "held": plan(gauges.HELD),
                  "calls": plan(gauges.CALLS, (0, "a/", "a0"))}
        conn.rollback()
    for name, text in plans.items():
        for bad in ("Seq Scan", "Bitmap", "Merge", '"Sort"', "Hash Join"):
            assert bad not in text, f"{name}: {bad} in {text}"
    for name in ("backlog", "done", "oldest"):
        assert '"Index Name": "queue_pkey"' in plans[name]
        assert '"Index Name": "inbox_pkey"' in plans[name]
        assert '"Index Cond": "(id = q.id)"' in plans[name]
    assert '"Index Cond": "(inbox_id = q.id)"' in plans["done"]
    assert "((inbox_id = q.id) AND ((target)::text = 'datx'::text))" in plans["oldest"]
    assert '"Index Name": "ix_inbox_dead"' in plans["dead"]
    assert '"Index Name": "ix_quarantine_where"' in plans["held"]
    assert '"Index Name": "ix_s360_call_log"' in plans["calls"]


def test_a_record_held_for_a_paused_target_and_retried_at_another_counts_once(
        tmp_path, operator_env):
    cfg = base_config(tmp_path)
    cfg["targets"]["gate"] = {"type": "gate", "mode": "retry"}
    cfg["streams"]["orders"]["targets"] = ["datx", "gate"]
    cfg["engine"]["operator"] = operator_settings()
    with registered(GatePlugin(), "gate-plugin"):
        bridge = bridge_of(write_config(tmp_path, cfg))
        pause.pause(bridge, "testvenue", "datx", actor=Actor("tester"))
        assert post(create_app(bridge).test_client(), "orders",
                    fixture("order_sale.json")).json["accepted"] == 2
        Worker(bridge).run_once()  # held for datx, queued again for the gate's retry
        seen = scrape(create_operator_app(bridge).test_client())
        assert seen("s360bridge_backlog_records", institution="testvenue", target="datx") == 2
        assert seen("s360bridge_backlog_records", institution="testvenue", target="gate") == 2
        bridge.close()
