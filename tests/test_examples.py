"""The two third-party plugins of examples/ (issue 11, §7): each is installed from its own
package outside the virtualenv and loaded through its entry point (tests/helpers/examples.py),
then run end to end on real HTTP (loopback) and real databases. docs/plugins.md's walkthrough
quotes their code verbatim, and they import nothing of s360bridge but its public API."""

from __future__ import annotations

import ast
import base64
import datetime as dt
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
import tomllib
import uuid
from collections import Counter

import pytest
from click.testing import CliRunner
from flask import Flask, request
from sqlalchemy import create_engine, text
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from s360bridge.core.api import StoredRecord
from s360bridge.core.cli.main import cli
from s360bridge.core.errors import ConfigError
from s360bridge.core.pipeline.receiver import create_app
from s360bridge.simulator.serving import Served

from .conftest import Journal, base_config, bridge_of, drain, fixture, write_config
from .helpers.examples import EXAMPLES, ROOT, install, loaded
from .helpers.processes import S360BRIDGE

SECRET = "whsec_" + base64.b64encode(bytes(range(1, 33))).decode()  # 32 key bytes
SECRET_ENV = "TEST_WEBHOOK_SIGNING_SECRET"


@pytest.fixture(scope="session")
def examples_site(tmp_path_factory):
    return install(tmp_path_factory.mktemp("examples"))


@pytest.fixture(scope="module", autouse=True)
def examples(examples_site):
    with loaded(examples_site) as plugins:
        assert sorted(plugins) == ["accesscontrol", "webhook"]
        yield plugins


# --- the webhook target ----------------------------------------------------------------------

class Receiver:
    """A Standard Webhooks consumer: verifies every message with the reference library (not the
    plugin's code), counts them by webhook-id, and answers 204, or the status set for a key."""

    def __init__(self, secret: str):
        self.webhook = Webhook(secret)
        self.lock = threading.Lock()
        self.seen: Counter = Counter()  # webhook-id -> verified messages, whatever the answer
        self.taken: Counter = Counter()  # webhook-id -> verified messages answered 2xx
        self.bodies: dict[str, dict] = {}
        self.raw: list[tuple[bytes, dict]] = []  # every message as it came: body, headers
        self.unverified = 0
        self.answer: dict[str, tuple[int, dict]] = {}  # record key -> status, headers
        self.url = ""

    def app(self) -> Flask:
        app = Flask("receiver")

        @app.post("/hook")
        def hook():
            data, headers = request.get_data(), dict(request.headers)
            try:
                body = self.webhook.verify(data, headers)
            except WebhookVerificationError:
                with self.lock:
                    self.unverified += 1
                return "bad signature", 400
            msg_id = request.headers["webhook-id"]
            status, extra = self.answer.get(body["key"], (204, {}))
            with self.lock:
                self.raw.append((data, headers))
                self.seen[msg_id] += 1
                if status < 300:
                    self.taken[msg_id] += 1
                    self.bodies[msg_id] = body
            return "", status, extra

        return app


@pytest.fixture
def receiver():
    r = Receiver(SECRET)
    with Served(r.app()) as served:
        r.url = f"{served.url}/hook"
        yield r


def orders(n: int) -> list[dict]:
    sale = fixture("order_sale.json")[0]
    return [{"orderDetailsData": {**sale["orderDetailsData"], "orderId": 30_000_000 + i}}
            for i in range(n)]


def hook_config(tmp_path, monkeypatch, url: str, secret=None, **options):
    """The orders go to a webhook target only; its secret from $TEST_WEBHOOK_SIGNING_SECRET."""
    monkeypatch.setenv(SECRET_ENV, SECRET)
    cfg = base_config(tmp_path)
    cfg["targets"]["hook"] = {"type": "webhook", "url": url,
                              "secret": secret or {"$env": SECRET_ENV}, **options}
    cfg["streams"]["orders"]["targets"] = ["hook"]
    return write_config(tmp_path, cfg)


def versions(tmp_path, stream: str) -> list[tuple]:
    """The stream's inbox: (key, seq, state, attempts, next_attempt_at - received_at, payload,
    received_at) per version, in arrival order."""
    with sqlite3.connect(tmp_path / "engine.db") as conn:
        return list(conn.execute(
            "SELECT record_key, id, state, attempts, next_attempt_at - received_at, payload, "
            "received_at FROM inbox WHERE stream = ? ORDER BY id", (stream,)))


def test_each_record_is_one_message_signed_so_the_reference_library_verifies_it(
        tmp_path, monkeypatch, secrets_env, receiver):
    bridge = bridge_of(hook_config(tmp_path, monkeypatch, receiver.url))
    resp = create_app(bridge).test_client().post("/s360/orders/testvenue", json=orders(5))
    assert resp.json["accepted"] == 5
    assert drain(bridge) == 5
    bridge.close()
    stored = {key: (seq, json.loads(payload)) for key, seq, *_, payload, _ in
              versions(tmp_path, "orders")}
    assert receiver.unverified == 0
    assert receiver.taken == {f"testvenue/orders/{k}@{seq}": 1 for k, (seq, _) in stored.items()}
    for msg_id, body in receiver.bodies.items():  # the body, exactly
        seq, record = stored[body["key"]]
        assert msg_id == f"testvenue/orders/{body['key']}@{seq}"
        assert body == {"institution": "testvenue", "stream": "orders", "key": body["key"],
                        "seq": seq, "record": record}
    data, headers = receiver.raw[0]
    assert headers["Webhook-Signature"].startswith("v1,")
    assert abs(int(headers["Webhook-Timestamp"]) - time.time()) < 60
    # the check is not vacuous: another key, or one changed byte, fails it
    other = Webhook("whsec_" + base64.b64encode(bytes(32)).decode())
    with pytest.raises(WebhookVerificationError):
        other.verify(data, headers)
    with pytest.raises(WebhookVerificationError):
        receiver.webhook.verify(data.replace(b'"orders"', b'"Orders"'), headers)


def test_a_repost_sends_nothing_again_and_a_repeat_keeps_its_webhook_id(
        tmp_path, monkeypatch, secrets_env, receiver):
    bridge = bridge_of(hook_config(tmp_path, monkeypatch, receiver.url))
    client = create_app(bridge).test_client()
    client.post("/s360/orders/testvenue", json=orders(3))
    drain(bridge)
    again = client.post("/s360/orders/testvenue", json=orders(3))
    assert again.json == {"accepted": 0, "duplicates": 3, "quarantined": 0, "before_cutoff": 0}
    assert drain(bridge) == 0
    first = dict(receiver.taken)
    assert len(first) == 3 and set(first.values()) == {1}
    # the same versions pushed once more, as after a crash before the push was recorded
    inst, stream = bridge.institution("testvenue"), bridge.stream("orders")
    target = bridge.target(inst, "hook")
    records = [StoredRecord(seq, key, json.loads(payload), payload, received, "testvenue",
                            "orders")
               for key, seq, _, _, _, payload, received in versions(tmp_path, "orders")]
    result = bridge.hooks.push(inst, stream, target,
                               bridge.hooks.transform(inst, stream, target, records))
    bridge.close()
    assert (result.retry, result.rejected) == ({}, {})
    assert receiver.taken == {msg_id: 2 for msg_id in first}  # same ids: dropped by them


def test_a_message_the_receiver_refuses_is_a_dead_letter_at_once(
        tmp_path, monkeypatch, secrets_env, receiver):
    receiver.answer["30000001"] = (422, {})
    bridge = bridge_of(hook_config(tmp_path, monkeypatch, receiver.url))
    create_app(bridge).test_client().post("/s360/orders/testvenue", json=orders(4))
    drain(bridge)
    bridge.close()
    states = {key: (state, attempts) for key, _, state, attempts, *_ in
              versions(tmp_path, "orders")}
    assert states.pop("30000001") == ("dead", 1)
    assert set(states.values()) == {("done", 0)}
    assert sum(receiver.seen.values()) == 4  # sent once each: no split, no second try
    assert len(receiver.taken) == 3


@pytest.mark.parametrize("status, sent, waiting", [
    (500, [0, 1, 2, 3], [1]),  # that message goes again later; the others are delivered
    (503, [0, 1], [1, 2, 3]),  # the receiver is down: nothing more is sent now
], ids=["500", "503"])
def test_a_receiver_error_retries_the_message_and_a_receiver_down_the_rest(
        tmp_path, monkeypatch, secrets_env, receiver, status, sent, waiting):
    receiver.answer["30000001"] = (status, {"Retry-After": "3600"})
    bridge = bridge_of(hook_config(tmp_path, monkeypatch, receiver.url))
    create_app(bridge).test_client().post("/s360/orders/testvenue", json=orders(4))
    drain(bridge)
    bridge.close()
    found = versions(tmp_path, "orders")
    assert sorted(int(b["key"]) - 30_000_000 for b in
                  (json.loads(data) for data, _ in receiver.raw)) == sent
    assert [i for i, (_, _, state, *_) in enumerate(found) if state == "pending"] == waiting
    assert {(state, attempts) for _, _, state, attempts, *_ in found} == \
        {("pending", 1), ("done", 0)}
    delays = [delay for _, _, state, _, delay, *_ in found if state == "pending"]
    if status == 503:  # its Retry-After reached the engine through PushResult.retry_later
        assert min(delays) >= 3600 - 5
    else:
        assert max(delays) < 3600 - 5


@pytest.mark.parametrize("secret, env_value, message", [
    (SECRET, None, r"secret: a secret is written as \{\$env: VARIABLE_NAME\}, never as a value"),
    (None, "correct horse battery staple", r"expected whsec_ followed by the base64 of the key"),
    (None, "whsec_not*base64", r"what follows whsec_ is not base64"),
    (None, "whsec_" + base64.b64encode(bytes(16)).decode(), r"the key has 16 bytes"),
], ids=["clear-text", "no-prefix", "not-base64", "short-key"])
def test_a_secret_in_clear_text_or_not_a_standard_webhooks_one_stops_start_up(
        tmp_path, monkeypatch, secrets_env, secret, env_value, message):
    path = hook_config(tmp_path, monkeypatch, "https://hooks.example.org/", secret=secret)
    if env_value is not None:
        monkeypatch.setenv(SECRET_ENV, env_value)
    with pytest.raises(ConfigError, match=message) as err:
        bridge_of(path)
    said = str(err.value)
    assert "targets.hook" in said and str(path) in said
    assert (secret or env_value) not in said  # the value is never echoed
    if env_value is not None:
        assert f"${SECRET_ENV}" in said  # the variable to fix is named


def test_options_are_checked_at_start_up(tmp_path, monkeypatch, secrets_env):
    for options, message in [({"url": "ftp://x"}, "url: required, the http"),
                             ({"batch_size": 0}, "batch_size: expected a whole number above 0"),
                             ({"timeout_seconds": "5"}, "timeout_seconds: expected seconds"),
                             ({"retries": 3}, r"unknown option\(s\) retries for a webhook")]:
        url = options.pop("url", "https://hooks.example.org/")
        path = hook_config(tmp_path, monkeypatch, url, **options)
        with pytest.raises(ConfigError, match=message):
            bridge_of(path)


# --- the access-control stream ---------------------------------------------------------------

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


PG = os.environ.get("S360BRIDGE_TEST_POSTGRES_URL")


@pytest.mark.skipif(not PG, reason="S360BRIDGE_TEST_POSTGRES_URL is not set (.ci/run sets it)")
def test_the_access_control_stream_with_engine_and_warehouse_on_postgres(tmp_path, secrets_env):
    admin = create_engine(PG, isolation_level="AUTOCOMMIT")
    schemas = [f"t_{uuid.uuid4().hex[:10]}_{name}" for name in ("engine", "dwh")]
    with admin.connect() as conn:
        for schema in schemas:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        cfg = base_config(tmp_path)
        cfg["engine"]["database_url"], cfg["targets"]["datx"]["url"] = (
            f"{PG}?options=-csearch_path%3D{schema}" for schema in schemas)
        cfg["streams"]["accesscontrol"] = {"auth": {"type": "none"}, "targets": ["datx"]}
        bridge = bridge_of(write_config(tmp_path, cfg))
        client = create_app(bridge).test_client()
        tickets = fixture("webhook_access_tickets.json")
        client.post("/s360/accesscontrol/testvenue", json=tickets)
        tickets[1]["ticketState"] = "CANCELLED"
        assert client.post("/s360/accesscontrol/testvenue", json=tickets).json["accepted"] == 1
        assert drain(bridge) == 2  # the changed ticket's first version is superseded, unsent
        target = bridge.target(bridge.institution("testvenue"), "datx")
        with target.engine.connect() as conn:
            rows = [tuple(r) for r in conn.exec_driver_sql(
                "SELECT ticket_key, ticket_state, validity_start_utc, price FROM "
                "access_tickets ORDER BY ticket_key")]
        bridge.close()
        start = dt.datetime(2024, 3, 14, 18, 0)
        assert rows == [("10228844446468", "VALID", start, 45000),
                        ("10228844446469", "CANCELLED", start, 25000)]
    finally:
        with admin.connect() as conn:
            for schema in schemas:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


# --- both, together and in a process of their own --------------------------------------------

def test_the_access_control_stream_through_the_webhook_target(tmp_path, monkeypatch,
                                                              secrets_env, receiver):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    cfg = base_config(tmp_path)
    cfg["targets"]["hook"] = {"type": "webhook", "url": receiver.url,
                              "secret": {"$env": SECRET_ENV}}
    cfg["streams"]["accesscontrol"] = {"auth": {"type": "none"}, "targets": ["datx", "hook"]}
    bridge = bridge_of(write_config(tmp_path, cfg))
    create_app(bridge).test_client().post("/s360/accesscontrol/testvenue",
                                          json=fixture("webhook_access_tickets.json"))
    assert drain(bridge) == 2
    bridge.close()
    assert receiver.unverified == 0
    assert receiver.taken == {f"testvenue/accesscontrol/{key}@{seq}": 1
                              for key, seq, *_ in versions(tmp_path, "accesscontrol")}
    assert len(warehouse_rows(tmp_path)) == 2


def test_both_load_through_their_entry_points_in_a_fresh_process(examples_site):
    done = subprocess.run([S360BRIDGE, "plugins", "--json"], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(examples_site)})
    assert done.returncode == 0, done.stderr
    rows = {r["name"]: r for r in json.loads(done.stdout)}
    assert rows["webhook"]["source"] == "entry point of s360bridge-webhook 0.1.0"
    assert (rows["webhook"]["target_types"], rows["webhook"]["transforms"]) == \
        (["webhook"], ["* -> webhook"])
    assert rows["accesscontrol"]["source"] == "entry point of s360bridge-access-control 0.1.0"
    assert (rows["accesscontrol"]["streams"], rows["accesscontrol"]["transforms"]) == \
        (["accesscontrol"], ["accesscontrol -> sql"])


# --- what they import, and the docs that quote them ------------------------------------------

def test_the_examples_import_only_the_public_api_stdlib_and_their_declared_dependencies():
    bad = []
    for dist, folder in EXAMPLES.items():
        project = tomllib.loads((folder / "pyproject.toml").read_text("utf-8"))["project"]
        declared = {re.match(r"[\w.-]+", d).group().lower() for d in project["dependencies"]}
        (package,) = {p.parent.name for p in folder.glob("*/__init__.py")}
        init = (folder / package / "__init__.py").read_text("utf-8")
        if f'require(3, "{dist}")' not in init:
            bad.append(f"{dist}: no require(3)")
        for path in folder.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text("utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.level == 0:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top == "s360bridge" and name != "s360bridge.core.api":
                        bad.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
                    elif top not in {*sys.stdlib_module_names, package, *declared}:
                        bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {top} undeclared")
    assert bad == []


FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
WALKTHROUGH = "## Two plugins from start to finish\n"


def test_the_walkthrough_quotes_the_examples_verbatim():
    """Every fenced block of the docs' walkthrough is an excerpt of an example's files, so the
    docs cannot drift from the code the tests run."""
    docs = (ROOT / "docs" / "plugins.md").read_text("utf-8")
    start = docs.index(WALKTHROUGH)
    section = docs[start:docs.find("\n## ", start + len(WALKTHROUGH))]
    sources = [p.read_text("utf-8") for folder in EXAMPLES.values() for p in folder.rglob("*")
               if p.is_file() and p.suffix in {".py", ".toml", ".md", ".json"}
               and "egg-info" not in str(p)]
    blocks = FENCE.findall(section)
    assert sum(lang == "python" for lang, _ in blocks) >= 8
    drifted = [b.splitlines()[0] for _, b in blocks if not any(b in text for text in sources)]
    assert drifted == [], "these snippets are not (or no longer) in examples/"
