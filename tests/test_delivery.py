"""Delivery semantics, counted push by push in a journal target: duplicates, versions,
supersession, retries with backoff, dead letters and replay."""

from __future__ import annotations

import copy
import threading
import time

import pytest
from sqlalchemy import select

from s360bridge.core.cli.main import cli
from s360bridge.core.errors import StoreUnavailable
from s360bridge.core.pipeline import batch_lease
from s360bridge.core.pipeline.batch_lease import LOST, LeaseLost, kept
from s360bridge.core.pipeline.claims import claim, claim_statement
from s360bridge.core.pipeline.receiver import create_app
from s360bridge.core.pipeline.worker import Worker
from s360bridge.core.plugin.streams import StoredRecord
from s360bridge.core.storage.rawsql import run
from s360bridge.core.storage.tables import DELIVERY, STATES
from s360bridge.plugins.orders.warehouse import order_row
from s360bridge.plugins.sql import SqlTarget

from .conftest import Journal, base_config, bridge_of, drain, fixture, post, write_config
from .helpers.clock import Clock
from .helpers.processes import wait_until
from .helpers.records import sale_version


def inbox_rows(bridge, **where):
    query = select(STATES).order_by(STATES.c.id)
    for k, v in where.items():
        query = query.where(STATES.c[k] == v)
    with bridge.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def sale_amount(bridge) -> int:
    target = bridge.target(bridge.institution("testvenue"), "datx")
    with target.engine.connect() as conn:
        return conn.exec_driver_sql(
            "SELECT sale_amount FROM orders WHERE order_id = 10000815533").scalar_one()


def test_same_payload_three_times_is_pushed_once(bridge, client, journal):
    payload = fixture("order_sale.json")
    answers = [post(client, "orders", payload).json for _ in range(3)]
    assert answers[0] == {"accepted": 2, "duplicates": 0, "quarantined": 0, "before_cutoff": 0}
    assert answers[1] == answers[2] == {"accepted": 0, "duplicates": 2, "quarantined": 0,
                                        "before_cutoff": 0}
    drain(bridge)
    post(client, "orders", payload)  # and once more after delivery
    drain(bridge)
    assert journal.pushes("orders") == {"10000815533": 1, "10000815601": 1}


def test_a_version_twice_in_one_batch_counts_once(bridge, client, journal):
    order = fixture("order_sale.json")[0]
    answer = post(client, "orders", [order, dict(order, requestId=9), sale_version(5)]).json
    assert answer == {"accepted": 2, "duplicates": 1, "quarantined": 0, "before_cutoff": 0}
    drain(bridge)
    assert journal.pushes() == {"10000815533": 1}  # the newer version only


def test_envelope_fields_do_not_make_a_new_version(bridge, client, journal):
    first = dict(fixture("order_sale.json")[0], requestId=1, statusCode="success")
    again = dict(first, requestId=2, statusDetail="resent")
    post(client, "orders", first)
    assert post(client, "orders", again).json["duplicates"] == 1
    drain(bridge)
    assert journal.pushes() == {"10000815533": 1}


def test_old_version_resent_after_newer_is_not_pushed(bridge, client, journal):
    post(client, "orders", sale_version(1000))
    drain(bridge)
    post(client, "orders", sale_version(2000))
    drain(bridge)
    assert post(client, "orders", sale_version(1000)).json["duplicates"] == 1
    drain(bridge)
    assert journal.pushes() == {"10000815533": 2}
    assert sale_amount(bridge) == 2000


def test_newer_version_supersedes_a_pending_older_one(bridge, client, journal):
    post(client, "orders", sale_version(1000))
    post(client, "orders", sale_version(2000))
    drain(bridge)
    assert [line["record"]["orderDetailsData"]["saleAmount"] for line in journal.lines()] \
        == [2000]
    assert [r["state"] for r in inbox_rows(bridge)] == ["superseded", "done"]
    assert sale_amount(bridge) == 2000


def test_warehouse_never_lets_an_older_version_overwrite(bridge):
    inst = bridge.institution("testvenue")
    target = bridge.target(inst, "datx")
    new, old = sale_version(2000), sale_version(1000)
    old["orderDetailsData"]["operationDatas"] = old["orderDetailsData"]["operationDatas"][:1]
    target.upsert([order_row(inst, StoredRecord(9, "10000815533", new, "{}", 0.0))])
    target.upsert([order_row(inst, StoredRecord(5, "10000815533", old, "{}", 0.0))])
    assert sale_amount(bridge) == 2000
    with target.engine.connect() as conn:  # the children of the newer version are kept too
        assert conn.exec_driver_sql("SELECT count(*) FROM order_operations").scalar_one() == 2


def blocked_bridge(tmp_path):
    """orders -> a good journal and a journal whose folder is a file: every push fails."""
    cfg = base_config(tmp_path)
    (tmp_path / "blocked").write_text("a file where a folder should be")
    cfg["targets"]["broken"] = {"type": "jsonl", "path": str(tmp_path / "blocked" / "j.jsonl")}
    cfg["streams"]["orders"]["targets"] = ["journal", "broken"]
    return bridge_of(write_config(tmp_path, cfg))


def test_backoff_then_dead_letter_then_replay(tmp_path, secrets_env, runner):
    bridge = blocked_bridge(tmp_path)
    client = create_app(bridge).test_client()
    journal = Journal(tmp_path / "journal.jsonl")
    clock = Clock()
    worker = Worker(bridge, clock=clock)
    post(client, "orders", fixture("order_sale.json"))

    assert worker.run_once() == 2
    first = inbox_rows(bridge)
    assert {r["state"] for r in first} == {"pending"}
    assert {r["attempts"] for r in first} == {1}
    for r in first:  # exponential backoff with jitter: between half and all of base * 2^0
        assert clock.now + 30 <= r["next_attempt_at"] <= clock.now + 60
        assert "broken" in r["last_error"] and "j.jsonl" in r["last_error"]
    clock.now += 29
    assert worker.run_once() == 0  # not due yet

    clock.now += 31
    assert worker.run_once() == 2
    second = inbox_rows(bridge)  # base * 2^1: between 60 and 120 s
    assert all(clock.now + 60 <= r["next_attempt_at"] <= clock.now + 120 for r in second)
    clock.now += 120
    assert worker.run_once() == 2  # max_attempts is 3
    assert {r["state"] for r in inbox_rows(bridge)} == {"dead"}
    with bridge.engine.connect() as conn:
        states = {(d.target, d.state) for d in conn.execute(select(DELIVERY))}
    assert states == {("journal", "done"), ("broken", "dead")}
    clock.now += 3600
    assert worker.run_once() == 0  # dead letters wait for a human
    shown = runner.invoke(cli, ["status", "-c", str(tmp_path / "testvenue.yaml")]).output
    assert "orders        dead 2; quarantined 0" in shown
    assert "last dead letter: broken: TargetUnavailable" not in shown  # the reason, not a type
    assert "last dead letter: broken: cannot append to" in shown

    (tmp_path / "blocked").unlink()
    result = runner.invoke(cli, ["replay", "-c", str(tmp_path / "testvenue.yaml"),
                                 "--stream", "orders", "--key", "10000815533"])
    assert result.exit_code == 0, result.output
    assert "re-queued 1 dead letter" in result.output
    assert worker.run_once() == 1
    assert Journal(tmp_path / "blocked" / "j.jsonl").pushes() == {"10000815533": 1}
    # the good target got each record once, whatever happened to the other one
    assert journal.pushes() == {"10000815533": 1, "10000815601": 1}
    assert [r["state"] for r in inbox_rows(bridge)] == ["done", "dead"]
    with bridge.engine.connect() as conn:
        states = {(d.inbox_id, d.target, d.state) for d in conn.execute(select(DELIVERY))}
    first_id, second_id = (r["id"] for r in inbox_rows(bridge))
    assert states == {(first_id, "journal", "done"), (first_id, "broken", "done"),
                      (second_id, "journal", "done"), (second_id, "broken", "dead")}
    bridge.close()


def test_one_poison_record_does_not_hold_back_the_batch(bridge, client, journal):
    orders = [copy.deepcopy(fixture("order_sale.json")[0]) for _ in range(7)]
    for i, order in enumerate(orders):
        order["orderDetailsData"]["orderId"] = 20000000000 + i
    # valid for the schema, but not a real date: the warehouse mapping of this one fails
    orders[4]["orderDetailsData"]["creationDateTime"] = "2024-13-45T10:00:00.000+00:00"
    post(client, "orders", orders)
    drain(bridge)
    rows = {r["record_key"]: r for r in inbox_rows(bridge)}
    assert rows["20000000004"]["state"] == "pending"
    assert "datx" in rows["20000000004"]["last_error"]
    assert "month must be in 1..12" in rows["20000000004"]["last_error"]
    assert sum(r["state"] == "done" for r in rows.values()) == 6
    target = bridge.target(bridge.institution("testvenue"), "datx")
    with target.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM orders").scalar_one() == 6
    assert len(journal.pushes()) == 7  # the journal took all of them


def test_a_worker_takes_only_the_institutions_it_is_configured_for(tmp_path, secrets_env):
    """Two venues share one engine database but are served by separate worker processes."""
    cfg_a = base_config(tmp_path)
    bridge_a = bridge_of(write_config(tmp_path, cfg_a))
    cfg_b = base_config(tmp_path)
    cfg_b["institution"] = "othervenue"
    (tmp_path / "b").mkdir()
    bridge_b = bridge_of(write_config(tmp_path / "b", cfg_b, "b.yaml"))
    post(create_app(bridge_b).test_client(), "orders", fixture("order_sale.json"),
         institution="othervenue")
    assert Worker(bridge_a).run_once() == 0  # not its venue: left alone, not failed
    assert {r["state"] for r in inbox_rows(bridge_a)} == {"pending"}
    assert Worker(bridge_b).run_once() == 2
    assert {r["state"] for r in inbox_rows(bridge_b)} == {"done"}
    bridge_a.close()
    bridge_b.close()


def test_claims_read_the_queue_in_arrival_order(bridge):
    """A claim must not sort every row of an institution: on a million-row inbox that made
    each claim take seconds (found by bench/run.py). The queue is read in the order of its
    primary key, the inbox's id."""
    with bridge.engine.connect() as conn:
        plan = " ".join(str(r[-1]) for r in run(conn, "EXPLAIN QUERY PLAN " + claim_statement(
            "sqlite"), ("token", 1e12, 1e12, 1e12, ["testvenue"], 500)))
    assert "SCAN queue" in plan
    assert "TEMP B-TREE" not in plan


def test_a_slow_push_keeps_its_lease(tmp_path, secrets_env):
    """A push held back by S-360's rate limit may outlast the lease: the worker renews it, so
    no other worker takes the records over and pushes them a second time."""
    cfg = base_config(tmp_path)
    cfg["engine"]["lease_seconds"] = 2
    bridge = bridge_of(write_config(tmp_path, cfg))
    post(create_app(bridge).test_client(), "orders", fixture("order_sale.json"))
    mine = claim(bridge.engine, ["testvenue"], 10, 2)
    assert len(mine) == 2
    with kept(bridge.engine, mine.token, mine.seqs, 2, time.time(), time.time):
        threading.Event().wait(4.0)  # twice the lease: the push in hand is slow
        assert len(claim(bridge.engine, ["testvenue"], 10, 2)) == 0
    leases = {r["lease_owner"] for r in inbox_rows(bridge)}
    assert leases == {mine.token}
    bridge.close()


def test_a_renewal_that_finds_the_records_taken_over_stops_the_pushes(bridge, client):
    post(client, "orders", fixture("order_sale.json"))
    mine = claim(bridge.engine, ["testvenue"], 10, 60)
    with kept(bridge.engine, mine.token, mine.seqs, 60, time.time(), time.time) as lease:
        lease.check()  # a minute left
        with bridge.engine.begin() as conn:  # another worker's now
            conn.exec_driver_sql("UPDATE queue SET lease_owner = 'another'")
    with kept(bridge.engine, mine.token, mine.seqs, 0.3, time.time(), time.time) as lease:
        wait_until(lambda: lease.until < 0, 10, "a renewal that finds none of them")
        with pytest.raises(LeaseLost):
            lease.check()


def test_a_claim_made_ahead_is_renewed_at_once_and_one_that_ended_is_lost(bridge, client):
    """A batch claimed ahead waited half its lease while the one before was delivered: its
    lease is renewed at once, not a third of a lease later. One whose lease ended before its
    first renewal may be partly another worker's: lost, whatever the renewal finds."""
    post(client, "orders", fixture("order_sale.json"))
    mine = claim(bridge.engine, ["testvenue"], 10, 60)
    with kept(bridge.engine, mine.token, mine.seqs, 60, time.time() - 30, time.time) as lease:
        wait_until(lambda: lease.until > time.time() + 50, 10, "the renewal at once")
        lease.check()
    with bridge.engine.connect() as conn:
        assert all(until > time.time() + 50 for (until,) in conn.exec_driver_sql(
            "SELECT lease_until FROM queue"))
    with kept(bridge.engine, mine.token, mine.seqs, 60, time.time() - 66, time.time) as lease:
        wait_until(lambda: lease.until == LOST, 10, "the late renewal")
        with pytest.raises(LeaseLost, match="renewed only after it had ended"):
            lease.check()


def test_a_renewal_that_commits_after_the_lease_ended_is_no_renewal(bridge, client,
                                                                   monkeypatch):
    """The renewal started in time, but the database held it until the lease had ended:
    another worker may have taken some of the records meanwhile."""
    post(client, "orders", fixture("order_sale.json"))
    mine = claim(bridge.engine, ["testvenue"], 10, 60)
    clock = Clock(time.time())
    real_extend = batch_lease.extend

    def held_up(*args):
        clock.now += 40  # past the lease's end, 30 s after the renewal started
        return real_extend(*args)

    monkeypatch.setattr(batch_lease, "extend", held_up)
    with kept(bridge.engine, mine.token, mine.seqs, 60, clock.now - 30, clock) as lease:
        wait_until(lambda: lease.until == LOST, 10, "the renewal judged late")


def test_a_failed_renewal_is_tried_again_within_a_second(bridge, client, monkeypatch,
                                                         caplog):
    """The database away for three tries: the fourth renews, within a second each, and the
    outage is one warning, not one a try."""
    post(client, "orders", fixture("order_sale.json"))
    mine = claim(bridge.engine, ["testvenue"], 10, 60)
    calls = []

    def away_once(*args):
        calls.append(time.monotonic())
        if len(calls) <= 3:
            raise StoreUnavailable("the engine database could not commit: gone")
        return real_extend(*args)

    real_extend = batch_lease.extend
    monkeypatch.setattr(batch_lease, "extend", away_once)
    with kept(bridge.engine, mine.token, mine.seqs, 60, time.time() - 30, time.time) as lease:
        wait_until(lambda: lease.until > time.time() + 50, 10, "the renewal tried again")
        lease.check()
    assert len(calls) == 4
    assert calls[3] - calls[0] < 10  # not a third of the lease (20 s) later
    warned = [r.getMessage() for r in caplog.records
              if r.levelname == "WARNING" and "renew" in r.getMessage()]
    assert len(warned) == 1 and "trying again every 1 s" in warned[0]


def test_a_worker_whose_lease_ran_out_pushes_no_more_of_its_batch(bridge, client, journal,
                                                                  monkeypatch, caplog):
    """The renewals failed (the engine database away) while the warehouse's push was slow:
    with less than a third of the lease left, another worker may take the records over before
    a next push ends, so the journal's push is not made. The records go back to the queue (or
    to whoever took them) and are delivered once by the next claim."""
    post(client, "contacts", fixture("contacts_person.json"))
    clock = Clock(time.time())
    real_deliver = SqlTarget.deliver

    def slow(self, institution, stream, items):
        clock.now += 0.7 * bridge.settings.engine.lease_seconds  # no renewal meanwhile
        return real_deliver(self, institution, stream, items)

    monkeypatch.setattr(SqlTarget, "deliver", slow)
    assert Worker(bridge, clock=clock).run_once() == 2
    assert journal.lines() == []
    assert "the batch's lease ends" in caplog.text
    assert [r["state"] for r in inbox_rows(bridge)] == ["pending", "pending"]
    monkeypatch.setattr(SqlTarget, "deliver", real_deliver)
    assert drain(bridge) == 2
    assert journal.pushes() == {"3346662": 1, "0004711": 1}
