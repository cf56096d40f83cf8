"""The operator's console pointed at a PostgreSQL database that takes no writes, as on a hot
standby (docs/production.md#a-read-replica): its pages read, and each action that writes answers
503 with a page saying the database is read-only, nothing changed. A session with
``default_transaction_read_only`` stands in for the standby in most tests (its writes fail with
the standby's own SQLSTATE 25006); the last runs a real one, a private primary and standby."""

from __future__ import annotations

import re
import sqlite3

import pytest
from sqlalchemy.exc import DBAPIError

from s360bridge.core.bridge import Bridge
from s360bridge.core.cli.main import cli
from s360bridge.core.config import load_settings
from s360bridge.core.operations import admin, pause
from s360bridge.core.operations.audit import Actor, entries
from s360bridge.core.operator.app import create_operator_app
from s360bridge.core.pipeline.receiver import create_app

from .conftest import Journal, base_config, bridge_of, drain, fixture, post, write_config
from .helpers.gate import GatePlugin
from .helpers.metrics import (
    OPERATOR_AUTH,
    OPERATOR_ENV,
    Scrape,
    gate_console_config,
    operator_settings,
)
from .helpers.plugins import registered
from .helpers.postgres import needs_pg, warehouse
from .helpers.standby import primary_and_standby

pytestmark = needs_pg

READ_ONLY = "%20-cdefault_transaction_read_only%3Don"  # after the URL's own options
CONTACT = fixture("contacts_person.json")[0]["contactNumber"]


@pytest.fixture
def venue(tmp_path, monkeypatch, secrets_env, pg_schemas):
    """The engine database on PostgreSQL with two dead letters (the gate refuses orders), a
    quarantined ticket check and two contacts delivered; the journal target paused. Answers
    the configuration and the primary's Bridge; ``replica(cfg)`` makes the Bridge of a console
    whose sessions are read-only."""
    cfg = gate_console_config(tmp_path, monkeypatch)
    cfg["engine"]["database_url"] = pg_schemas.new("engine")
    with registered(GatePlugin(), "gate-plugin"):
        primary = bridge_of(write_config(tmp_path, cfg))
        receiver = create_app(primary).test_client()
        assert post(receiver, "orders", fixture("order_sale.json")).json["accepted"] == 2
        assert post(receiver, "contacts", fixture("contacts_person.json")).json["accepted"] == 2
        quarantined = dict(fixture("ticketchecks.json")[0])
        quarantined["scan_id"] = quarantined.pop("ticket_check_id")
        assert post(receiver, "ticketchecks", [quarantined]).json["quarantined"] == 1
        assert drain(primary) == 4
        assert pause.pause(primary, "testvenue", "journal", actor=Actor("ops", via="cli"))
        made = []

        def replica(data: dict) -> Bridge:
            made.append(Bridge(load_settings([write_config(tmp_path, data, "replica.yaml")])))
            return made[-1]

        yield cfg, primary, replica
        for bridge in (*made, primary):
            bridge.close()


def read_only(cfg: dict, *keys: str) -> dict:
    """``cfg`` with the URLs at ``keys`` (engine, datx) opening read-only sessions."""
    urls = {"engine": ("engine", "database_url"), "datx": ("targets", "datx", "url")}
    data = {**cfg, "engine": dict(cfg["engine"]),
            "targets": {**cfg["targets"], "datx": dict(cfg["targets"]["datx"])}}
    for key in keys:
        *path, last = urls[key]
        place = data
        for part in path:
            place = place[part]
        place[last] += READ_ONLY
    return data


def token(page) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def everything(bridge, tmp_path) -> tuple:
    """What the actions would change: targets paused, the audit trail, the records per state
    and quarantined, the contacts in the warehouse and in the journal."""
    with sqlite3.connect(tmp_path / "warehouse.db") as conn:
        contacts = conn.execute("SELECT count(*) FROM contacts").fetchone()[0]
    return ([(p["target"], p["paused_by"]) for p in pause.paused(bridge)],
            [e["action"] for e in entries(bridge)], admin.status(bridge), contacts,
            len(Journal(tmp_path / "journal.jsonl").lines()))


def test_a_read_only_session_refuses_a_write_as_a_hot_standby_does(venue):
    cfg, _, replica = venue
    with pytest.raises(DBAPIError) as refused:
        pause.pause(replica(read_only(cfg, "engine")), "testvenue", "datx",
                    actor=Actor("ops", via="cli"))
    assert refused.value.orig.sqlstate == "25006"  # read_only_sql_transaction
    assert str(refused.value.orig) == "cannot execute INSERT in a read-only transaction"


def test_every_console_action_on_a_read_only_database_is_a_503_and_changes_nothing(
        venue, tmp_path):
    cfg, primary, replica = venue
    ops = create_operator_app(replica(read_only(cfg, "engine"))).test_client()
    page = ops.get("/", auth=OPERATOR_AUTH)
    assert page.status_code == 200  # the pages read
    csrf = token(page)
    dry = ops.post("/replay", data={"csrf_token": csrf, "target": "gate"}, auth=OPERATOR_AUTH)
    assert "This would act on <strong>2</strong> dead letter(s)" in dry.text  # reads too
    through = re.search(r'name="through" value="(\d+)"', dry.text).group(1)
    entry = re.search(r'name="entry" value="(\d+)"',
                      ops.get("/problems", auth=OPERATOR_AUTH).text).group(1)
    before = everything(primary, tmp_path)
    assert before[0] == [("journal", "ops")] and before[3] == 2

    for path, form in (
            ("/targets/testvenue/gate/pause", {}),
            ("/targets/testvenue/journal/resume", {}),
            ("/replay", {"target": "gate", "confirm": "yes", "through": through}),
            ("/reprocess", {"entry": entry, "confirm": "yes"}),
            ("/forget", {"institution": "testvenue", "contact": CONTACT, "confirm": "yes"})):
        answer = ops.post(path, data={"csrf_token": csrf, **form}, auth=OPERATOR_AUTH)
        assert answer.status_code == 503, (path, answer.text)
        assert "The engine database takes no writes from this console " \
               "(default_transaction_read_only is on for its sessions). Nothing was changed." \
               in " ".join(answer.text.split()), path
    assert everything(primary, tmp_path) == before


def test_a_write_refused_by_a_read_only_warehouse_is_said_too(venue, pg_schemas):
    """``forget`` on a console whose engine database takes writes, and its warehouse not (the
    standby's URL): the page says which write was refused, and that the action stopped there."""
    cfg, primary, replica = venue
    cfg["targets"]["datx"]["url"] = pg_schemas.new("dwh")
    writer = replica(cfg)
    changed = dict(fixture("contacts_person.json")[0], function="Director")  # a new version
    assert post(create_app(writer).test_client(), "contacts", [changed]).json["accepted"] == 1
    assert drain(writer) == 1
    assert warehouse(writer, "SELECT contact_number FROM contacts") == [(CONTACT,)]
    console_bridge = replica(read_only(cfg, "datx"))
    ops = create_operator_app(console_bridge).test_client()
    csrf = token(ops.get("/forget", auth=OPERATOR_AUTH))
    answer = ops.post("/forget", auth=OPERATOR_AUTH, data={
        "csrf_token": csrf, "institution": "testvenue", "contact": CONTACT, "confirm": "yes"})
    assert answer.status_code == 503
    said = " ".join(answer.text.split())
    assert "A database refused to write: cannot execute DELETE in a read-only transaction. " \
           "The action stopped at that write" in said
    stopped, paused = entries(primary)  # the erasure, where it stopped and what went before
    assert (stopped["action"], paused["action"]) == ("forget", "pause")
    assert stopped["detail"]["removed"] == ["engine inbox: 2 version(s)"]  # both versions
    assert "read-only transaction" in stopped["detail"]["stopped"]
    assert warehouse(writer, "SELECT contact_number FROM contacts") == [(CONTACT,)]


def test_on_a_real_hot_standby(tmp_path, monkeypatch, secrets_env, runner):
    """A private primary and its streaming standby: the console on the standby reads, its
    pause is the 503 page (a hot standby, nothing changed), its write refused with 25006 like
    the stand-in's; status cannot say who the scheduler is there, and /metrics leaves it out
    (the primary's listener says it)."""
    for k, v in OPERATOR_ENV.items():
        monkeypatch.setenv(k, v)
    with primary_and_standby("bridge") as (primary_url, standby_url, caught_up):
        cfg = base_config(tmp_path)
        cfg["engine"]["operator"] = operator_settings()
        cfg["engine"]["database_url"] = primary_url
        primary = bridge_of(write_config(tmp_path, cfg))
        cfg["engine"]["database_url"] = standby_url
        path = write_config(tmp_path, cfg, "standby.yaml")
        caught_up()
        standby = Bridge(load_settings([path]))
        try:
            with pytest.raises(DBAPIError) as refused:
                pause.pause(standby, "testvenue", "datx", actor=Actor("ops", via="cli"))
            assert refused.value.orig.sqlstate == "25006"
            ops = create_operator_app(standby).test_client()
            page = ops.get("/", auth=OPERATOR_AUTH)
            assert page.status_code == 200
            answer = ops.post("/targets/testvenue/datx/pause", auth=OPERATOR_AUTH,
                              data={"csrf_token": token(page)})
            assert answer.status_code == 503
            assert "The engine database is a hot standby, which takes no writes. Nothing was " \
                   "changed." in " ".join(answer.text.split())
            assert pause.paused(primary) == [] and entries(primary) == []
            out = runner.invoke(cli, ["status", "-c", str(path)])
            assert out.output.splitlines()[-1] == \
                "scheduler: unknown here: a hot standby does not see the primary's locks"
            scrape = Scrape(ops.get("/metrics", auth=OPERATOR_AUTH).text)
            assert scrape.get("s360bridge_engine_database_up") == 1
            assert scrape.get("s360bridge_scheduler_elected") is None
        finally:
            standby.close()
            primary.close()
