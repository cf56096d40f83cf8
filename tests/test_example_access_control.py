"""The access-control stream of examples/ (issue 11, §7; S-360's access-control webhook,
REFERENCE d.1), installed outside the virtualenv and loaded through its entry point: ticket lists
to the warehouse through the declarative table spec and to the journal, a version per change."""

from __future__ import annotations

import base64
import datetime as dt
import json
import sqlite3

import pytest
from click.testing import CliRunner

from s360bridge.core.cli.main import cli
from s360bridge.core.errors import ConfigError
from s360bridge.core.pipeline.receiver import create_app

from .conftest import Journal, base_config, bridge_of, drain, fixture, write_config
from .helpers.examples import loaded, versions
from .helpers.postgres import warehouse

SECRET = "whsec_" + base64.b64encode(bytes(range(1, 33))).decode()  # 32 key bytes
SECRET_ENV = "TEST_WEBHOOK_SIGNING_SECRET"


@pytest.fixture(scope="module", autouse=True)
def examples(examples_site):
    with loaded(examples_site) as plugins:
        assert sorted(plugins) == ["accesscontrol", "webhook"]
        yield plugins


def access_config(tmp_path, options=None, targets=("datx", "journal")):
    cfg = base_config(tmp_path)
    cfg["streams"]["accesscontrol"] = {"auth": {"type": "none"}, "targets": list(targets)}
    if options is not None:
        cfg["streams"]["accesscontrol"]["options"] = options
    return write_config(tmp_path, cfg)


def warehouse_rows(tmp_path) -> list[tuple]:
    with sqlite3.connect(tmp_path / "warehouse.db") as conn:
        return list(conn.execute(
            "SELECT ticket_key, barcode, ticket_state, cancellation_cause, validity_start_utc, "
            "price, contact_number, source_seq FROM access_tickets ORDER BY ticket_key"))


def test_a_ticket_list_lands_in_the_warehouse_table_and_the_journal(tmp_path, secrets_env):
    tickets = fixture("webhook_access_tickets.json")
    bridge = bridge_of(access_config(tmp_path))
    resp = create_app(bridge).test_client().post("/s360/accesscontrol/testvenue", json=tickets)
    assert resp.json == {"accepted": 2, "duplicates": 0, "quarantined": 0, "before_cutoff": 0}
    assert drain(bridge) == 2
    bridge.close()
    seq = {key: s for key, s, *_ in versions(tmp_path, "accesscontrol")}
    assert warehouse_rows(tmp_path) == [
        ("10228844446468", "104455667788990011223344", "VALID", "NOT_CANCELLED",
         "2024-03-14 18:00:00.000000", 45000, "3346662", seq["10228844446468"]),
        ("10228844446469", "104455667788990011223352", "VALID", "NOT_CANCELLED",
         "2024-03-14 18:00:00.000000", 25000, "3346662", seq["10228844446469"])]
    lines = Journal(tmp_path / "journal.jsonl").lines()
    assert [(line["stream"], line["key"], line["record"]) for line in lines] == [
        ("accesscontrol", str(t["ticketId"]), t) for t in tickets]


def test_the_same_list_adds_no_version_and_a_changed_state_adds_one(tmp_path, secrets_env):
    tickets = fixture("webhook_access_tickets.json")
    bridge = bridge_of(access_config(tmp_path))
    client = create_app(bridge).test_client()
    client.post("/s360/accesscontrol/testvenue", json=tickets)
    drain(bridge)
    same = client.post("/s360/accesscontrol/testvenue", json=tickets)
    assert same.json == {"accepted": 0, "duplicates": 2, "quarantined": 0, "before_cutoff": 0}
    assert drain(bridge) == 0
    tickets[1] |= {"ticketState": "CANCELLED", "cancellationCause": "REFUNDED"}
    changed = client.post("/s360/accesscontrol/testvenue", json=tickets)
    assert changed.json == {"accepted": 1, "duplicates": 1, "quarantined": 0,
                            "before_cutoff": 0}
    assert drain(bridge) == 1
    bridge.close()
    found = versions(tmp_path, "accesscontrol")
    assert [key for key, *_ in found] == ["10228844446468", "10228844446469", "10228844446469"]
    assert [row[2:4] + row[7:] for row in warehouse_rows(tmp_path)] == [
        ("VALID", "NOT_CANCELLED", found[0][1]), ("CANCELLED", "REFUNDED", found[2][1])]
    assert Journal(tmp_path / "journal.jsonl").pushes("accesscontrol") == {
        "10228844446468": 1, "10228844446469": 2}


def test_a_ticket_back_to_an_earlier_state_is_taken_for_a_repeat(tmp_path, secrets_env):
    """The engine's rule, which the example's README states: a version equal to any version of
    the key still in the inbox is a duplicate, so VALID, CANCELLED, VALID stores two."""
    ticket = fixture("webhook_access_tickets.json")[0]
    bridge = bridge_of(access_config(tmp_path))
    client = create_app(bridge).test_client()
    answers = [client.post("/s360/accesscontrol/testvenue", json=[t]).json["accepted"]
               for t in (ticket, {**ticket, "ticketState": "CANCELLED"}, ticket)]
    drain(bridge)
    bridge.close()
    assert answers == [1, 1, 0]
    assert [row[2] for row in warehouse_rows(tmp_path)] == ["CANCELLED"]


def test_the_key_option_and_what_the_schema_tolerates(tmp_path, secrets_env):
    first, second = fixture("webhook_access_tickets.json")
    bridge = bridge_of(access_config(tmp_path, {"key": "barcode"}))
    resp = create_app(bridge).test_client().post("/s360/accesscontrol/testvenue", json=[
        {**first, "gateZone": "NORTH"},  # an unknown field is kept
        {k: v for k, v in second.items() if k != "barcode"},  # the key is missing
        {k: v for k, v in second.items() if k != "ticketState"},
    ])
    assert resp.json == {"accepted": 1, "duplicates": 0, "quarantined": 2, "before_cutoff": 0}
    drain(bridge)
    bridge.close()
    with sqlite3.connect(tmp_path / "engine.db") as conn:
        reasons = sorted(r for (r,) in conn.execute("SELECT reason FROM quarantine"))
    assert reasons == ['(record): "barcode" is a required property',
                       '(record): "ticketState" is a required property']
    (row,) = warehouse_rows(tmp_path)
    assert row[0] == first["barcode"]
    with sqlite3.connect(tmp_path / "warehouse.db") as conn:
        (raw,) = conn.execute("SELECT raw FROM access_tickets").fetchone()
    assert json.loads(raw)["gateZone"] == "NORTH"


@pytest.mark.parametrize("options, message", [
    ({"key": "orderId"}, "key: expected one of ticketId, barcode, got 'orderId'"),
    ({"gate": "north"}, r"unknown option\(s\) gate \(known: key\)"),
], ids=["bad-key", "unknown-option"])
def test_bad_stream_options_stop_start_up(tmp_path, secrets_env, options, message):
    with pytest.raises(ConfigError, match=message):
        bridge_of(access_config(tmp_path, options))


def test_forget_erases_the_contacts_ticket_rows(tmp_path, secrets_env):
    path = access_config(tmp_path)
    bridge = bridge_of(path)
    create_app(bridge).test_client().post("/s360/accesscontrol/testvenue",
                                          json=fixture("webhook_access_tickets.json"))
    drain(bridge)
    bridge.close()
    result = CliRunner().invoke(cli, ["forget", "--institution", "testvenue", "--contact",
                                      "3346662", "-c", str(path)])
    assert result.exit_code == 0, result.output
    assert "target datx: 2 row(s) from table access_tickets" in result.output
    assert warehouse_rows(tmp_path) == []


def test_the_access_control_stream_with_engine_and_warehouse_on_postgres(tmp_path, secrets_env,
                                                                        pg_schemas):
    cfg = base_config(tmp_path)
    cfg["engine"]["database_url"] = pg_schemas.new("engine")
    cfg["targets"]["datx"]["url"] = pg_schemas.new("dwh")
    cfg["streams"]["accesscontrol"] = {"auth": {"type": "none"}, "targets": ["datx"]}
    bridge = bridge_of(write_config(tmp_path, cfg))
    client = create_app(bridge).test_client()
    tickets = fixture("webhook_access_tickets.json")
    client.post("/s360/accesscontrol/testvenue", json=tickets)
    tickets[1]["ticketState"] = "CANCELLED"
    assert client.post("/s360/accesscontrol/testvenue", json=tickets).json["accepted"] == 1
    assert drain(bridge) == 2  # the changed ticket's first version is superseded, unsent
    rows = warehouse(bridge, "SELECT ticket_key, ticket_state, validity_start_utc, price FROM "
                             "access_tickets ORDER BY ticket_key")
    bridge.close()
    start = dt.datetime(2024, 3, 14, 18, 0)
    assert rows == [("10228844446468", "VALID", start, 45000),
                    ("10228844446469", "CANCELLED", start, 25000)]


