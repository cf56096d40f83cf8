"""Secrets never print, whatever field they came from: the user-info of a URL read from
``$env``, a header's key, a DSN's password. Not in `status`, `plugins`, `check-config`, the
logs, the errors, nor the inbox's stored ``last_error``."""

from __future__ import annotations

import json
import logging
import socket

import pytest
from flask import Flask, Response, request
from sqlalchemy import select

from s360bridge.core.cli.main import cli
from s360bridge.core.errors import S360BridgeError, TargetUnavailable
from s360bridge.core.pipeline.claims import claim
from s360bridge.core.pipeline.queue import Outcome, complete
from s360bridge.core.pipeline.receiver import create_app
from s360bridge.core.redact import MASK, redact, remember
from s360bridge.core.storage.tables import DELIVERY, INBOX
from s360bridge.simulator.serving import Served

from .conftest import base_config, bridge_of, drain, fixture, post, write_config

URL_PASSWORD = "hunter2-of-the-crm-url"
CRM_KEY = "x-key-the-crm-echoes-back"
DSN_PASSWORD = "pg-pa55word-in-the-dsn"
ALL = (URL_PASSWORD, CRM_KEY, DSN_PASSWORD)


def echoing_crm() -> Flask:
    """A CRM that is down, and says so with everything the bridge sent it: its URL and its
    headers (some systems do, in their error pages)."""
    app = Flask("echoing-crm")

    @app.post("/api/<path:what>")
    def down(what):
        return Response(f"unavailable: {request.url} {dict(request.headers)}", 503)
    return app


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


@pytest.fixture
def leaky(tmp_path, secrets_env, monkeypatch):
    """A configuration whose CRM URL (with user-info), CRM key and warehouse DSN come from
    ``$env``; the CRM answers 503 echoing what it got, the warehouse refuses connections."""
    with Served(echoing_crm()) as crm:
        base = crm.url.replace("http://", f"http://bridge:{URL_PASSWORD}@")
        monkeypatch.setenv("TEST_CRM_URL", base)
        monkeypatch.setenv("TEST_CRM_KEY", CRM_KEY)
        monkeypatch.setenv("TEST_DSN", f"postgresql+psycopg://bridge:{DSN_PASSWORD}@127.0.0.1:"
                                       f"{closed_port()}/warehouse?connect_timeout=5")
        data = base_config(tmp_path)
        data["targets"] = {
            "crm": {"type": "http_crm", "base_url": {"$env": "TEST_CRM_URL"},
                    "auth": {"type": "api_key", "header": "x-api-key",
                             "key": {"$env": "TEST_CRM_KEY"}},
                    "contacts": {"url": "/api/contacts"}, "orders": {"url": "/api/orders"}},
            "dwh": {"type": "sql", "url": {"$env": "TEST_DSN"}}}
        data["streams"]["ticketchecks"]["targets"] = ["dwh"]
        for stream in ("contacts", "orders"):
            data["streams"][stream]["targets"] = ["crm", "dwh"]
        path = write_config(tmp_path, data)
        bridge = bridge_of(path)
        yield bridge, path
        bridge.close()


def test_nothing_of_a_failing_delivery_prints_its_secrets(leaky, runner, caplog):
    bridge, path = leaky
    caplog.set_level(logging.DEBUG)
    client = create_app(bridge).test_client()
    assert post(client, "orders", fixture("order_sale.json")).status_code == 200
    drain(bridge)
    with bridge.engine.connect() as conn:
        errors = [e for (e,) in conn.execute(select(INBOX.c.last_error))]
    assert len(errors) == 2
    for error in errors:  # the operator still sees where each delivery went, and why not
        assert f"POST http://bridge:{MASK}@127.0.0.1:" in error and "HTTP 503" in error
        assert f"warehouse sql postgresql+psycopg://bridge:{MASK}@127.0.0.1:" in error
    run = {" ".join(args): runner.invoke(cli, [*args, "-c", str(path)]).output
           for args in (["status"], ["status", "--json"], ["check-config"], ["plugins"])}
    assert "failing, will retry: crm: POST http://bridge:***@" in run["status"]
    targets = json.loads(run["status --json"])["testvenue"]["targets"]
    assert targets["crm"].startswith(f"http_crm contacts -> http://bridge:{MASK}@127.0.0.1:")
    assert targets["dwh"].startswith(f"sql postgresql+psycopg://bridge:{MASK}@127.0.0.1:")
    assert "configuration OK" in run["check-config"]
    for text in (caplog.text, *errors, *run.values()):
        for secret in ALL:
            assert secret not in text


def test_the_attempts_a_search_shows_are_masked(leaky, runner):
    """What the failing CRM and warehouse answered is kept per attempt, masked as stored and
    as shown."""
    bridge, path = leaky
    assert post(create_app(bridge).test_client(), "orders",
                fixture("order_sale.json")).status_code == 200
    drain(bridge)
    shown = [runner.invoke(cli, ["search", "-c", str(path), "--institution", "testvenue",
                                 "10000815533", *more]).output for more in ([], ["--json"])]
    [version] = json.loads(shown[1])["versions"]
    [crm], [dwh] = version["targets"]["crm"]["attempts"], version["targets"]["dwh"]["attempts"]
    assert crm["outcome"] == dwh["outcome"] == "failed"
    assert crm["answer"].startswith(f"POST http://bridge:{MASK}@127.0.0.1:")
    assert "HTTP 503" in crm["answer"] and f"bridge:{MASK}@127.0.0.1:" in dwh["answer"]
    assert f"failed: POST http://bridge:{MASK}@" in shown[0]
    with bridge.engine.connect() as conn:
        stored = [a for (a,) in conn.exec_driver_sql("SELECT answer FROM attempt")]
    for text in (*shown, *stored):
        for secret in ALL:
            assert secret not in text


def test_an_unexpected_error_logged_with_a_secret_is_masked(leaky, caplog):
    log = logging.getLogger("s360bridge.test")
    try:  # an error from a library, not the bridge's: only the log redaction stands between
        raise ValueError(f"cannot open postgresql://u:{DSN_PASSWORD}@db/x with {CRM_KEY}")
    except ValueError:
        log.exception("job failed with %s", URL_PASSWORD)
    assert "job failed with ***" in caplog.text and "ValueError: cannot open" in caplog.text
    for secret in ALL:
        assert secret not in caplog.text


def test_an_unexpected_error_of_a_delivery_is_stored_masked(leaky):
    """A target's own exception (not the bridge's, so not redacted when formed) is stored in the
    inbox and the delivery rows masked all the same."""
    bridge, _ = leaky
    assert post(create_app(bridge).test_client(), "orders",
                fixture("order_sale.json")).status_code == 200
    taken = claim(bridge.engine, ["testvenue"], 10, 60)
    error = f"ValueError: cannot open http://u:{URL_PASSWORD}@crm with {CRM_KEY}"
    complete(bridge.engine, taken.token, [], [Outcome(taken.seqs[0], 0, {"crm": error,
                                                                          "dwh": None})], 5, 1, 1)
    with bridge.engine.connect() as conn:
        stored = [conn.execute(select(INBOX.c.last_error)
                               .where(INBOX.c.id == taken.seqs[0])).scalar_one(),
                  *(e for (e,) in conn.execute(select(DELIVERY.c.last_error)) if e)]
    assert stored == [f"crm: ValueError: cannot open http://u:{MASK}@crm with {MASK}",
                      f"ValueError: cannot open http://u:{MASK}@crm with {MASK}"]


@pytest.mark.parametrize("text,expected", [
    ("GET https://bridge:hunter2@crm.example/api", f"GET https://bridge:{MASK}@crm.example/api"),
    ("postgresql+psycopg://u:p@ss@db:5432/x", f"postgresql+psycopg://u:{MASK}@db:5432/x"),
    ("https://tok3n@crm.example/a", f"https://{MASK}@crm.example/a"),
    ("sqlite:///var/a@b.db and mail@example.com", "sqlite:///var/a@b.db and mail@example.com"),
    ("http://crm.example:80/x, admin@example.com", "http://crm.example:80/x, admin@example.com"),
])
def test_the_user_info_of_any_url_is_masked(text, expected):
    assert redact(text) == expected


def test_remembered_values_are_masked_as_written_and_percent_encoded():
    remember("https://svc:pa%2Fss-w0rd@crm.example")  # a URL: its password only
    remember("abc")  # too short to mask without garbling every text
    remember("a-long-api-key")
    remember("a-long-api-key-with-a-tail")  # holds the other: masked whole
    assert redact("pa/ss-w0rd, pa%2Fss-w0rd at crm.example, abc") == \
        f"{MASK}, {MASK} at crm.example, abc"
    assert redact("a-long-api-key-with-a-tail / a-long-api-key") == f"{MASK} / {MASK}"


def test_the_bridges_errors_are_redacted_as_they_are_formed():
    remember("s3cret-in-a-message")
    exc = TargetUnavailable("POST https://u:s3cret-in-a-message@crm/x: HTTP 503 "
                            "s3cret-in-a-message", retry_after=5)
    assert str(exc) == f"POST https://u:{MASK}@crm/x: HTTP 503 {MASK}"
    assert exc.retry_after == 5
    assert "s3cret" not in str(S360BridgeError("key s3cret-in-a-message"))
