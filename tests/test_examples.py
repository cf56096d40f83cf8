"""The two third-party plugins of examples/ (issue 11, §7), the webhook target here and the
access-control stream in test_example_access_control.py: each is installed from its own package
outside the virtualenv and loaded through its entry point (tests/helpers/examples.py), then run
end to end on real HTTP (loopback) and real databases. docs/plugins.md's walkthrough quotes
their code verbatim, and they import nothing of s360bridge but its public API."""

from __future__ import annotations

import base64
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
import tomllib
from collections import Counter

import pytest
from flask import Flask, request
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from s360bridge.core.api import StoredRecord
from s360bridge.core.errors import ConfigError
from s360bridge.core.pipeline.receiver import create_app
from s360bridge.simulator.serving import Served

from .conftest import base_config, bridge_of, drain, fixture, write_config
from .helpers.examples import EXAMPLES, ROOT, loaded, versions
from .helpers.imports import absolute_imports
from .helpers.processes import S360BRIDGE

SECRET = "whsec_" + base64.b64encode(bytes(range(1, 33))).decode()  # 32 key bytes
SECRET_ENV = "TEST_WEBHOOK_SIGNING_SECRET"


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
    with sqlite3.connect(tmp_path / "warehouse.db") as conn:
        assert conn.execute("SELECT count(*) FROM access_tickets").fetchone() == (2,)


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
            for line, name in absolute_imports(path):
                top = name.split(".")[0]
                if top == "s360bridge" and name != "s360bridge.core.api":
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
                elif top not in {*sys.stdlib_module_names, package, *declared}:
                    bad.append(f"{path.relative_to(ROOT)}:{line}: {top} undeclared")
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
