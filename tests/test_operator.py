"""The operator listener: off by default, its own credentials from $env (401 and nothing else
without them, on any path), never a secret in what it shows; configuration errors in one line."""

from __future__ import annotations

import base64

import pytest

from s360bridge.core.cli.main import cli
from s360bridge.core.config import load_settings
from s360bridge.core.errors import ConfigError
from s360bridge.core.operator.app import create_operator_app

from .conftest import API_KEY, PASSWORD, base_config, bridge_of, write_config
from .helpers.metrics import OPERATOR_AUTH, OPERATOR_ENV, OPERATOR_PASSWORD, operator_settings


@pytest.fixture
def operator_env(monkeypatch, secrets_env):
    for k, v in OPERATOR_ENV.items():
        monkeypatch.setenv(k, v)


def configured(tmp_path, operator: dict | None) -> dict:
    cfg = base_config(tmp_path)
    if operator is not None:
        cfg["engine"]["operator"] = operator
    return cfg


def test_the_listener_is_off_by_default(tmp_path, secrets_env, runner):
    path = write_config(tmp_path, configured(tmp_path, None))
    settings = load_settings([path]).engine.operator
    assert (settings.enabled, settings.host, settings.port) == (False, "127.0.0.1", 8361)
    bridge_of(path).close()
    result = runner.invoke(cli, ["operator", "-c", str(path)])
    assert result.exit_code == 2
    assert "error: the operator listener is off: set engine.operator.enabled: true" \
        in result.output


def test_unauthenticated_requests_get_401_and_nothing_else(tmp_path, operator_env, caplog):
    bridge = bridge_of(write_config(tmp_path, configured(tmp_path, operator_settings())))
    client = create_operator_app(bridge).test_client()
    wrong = "Basic " + base64.b64encode(b"ops:not-the-password").decode()
    for path, headers in (("/metrics", {}), ("/metrics", {"Authorization": wrong}),
                          ("/no/such/page", {}), ("/", {"x-api-key": API_KEY})):
        r = client.get(path, headers=headers)
        assert (r.status_code, r.data) == (401, b""), path
        assert r.headers["WWW-Authenticate"] == 'Basic realm="s360bridge operator"'
    assert client.get("/no/such/page", auth=OPERATOR_AUTH).status_code == 404
    r = client.get("/metrics", auth=OPERATOR_AUTH)
    assert r.status_code == 200 and r.mimetype == "text/plain"
    assert "s360bridge_backlog_records" in r.text
    for secret in (OPERATOR_PASSWORD, PASSWORD, API_KEY):
        assert secret not in r.text and secret not in caplog.text
    assert "GET /metrics from 127.0.0.1 refused with 401" in caplog.text
    bridge.close()


def test_an_api_key_works_too(tmp_path, operator_env):
    key = {"type": "api_key", "header": "x-operator-key",
           "key": {"$env": "TEST_OPERATOR_PASSWORD"}}
    bridge = bridge_of(write_config(tmp_path, configured(tmp_path, {"enabled": True,
                                                                    "auth": key})))
    client = create_operator_app(bridge).test_client()
    assert client.get("/metrics").status_code == 401
    assert "WWW-Authenticate" not in client.get("/metrics").headers
    assert client.get("/metrics", headers={"x-operator-key": OPERATOR_PASSWORD}).status_code \
        == 200
    bridge.close()


def test_the_public_receiver_does_not_serve_metrics(client):
    assert client.get("/metrics").status_code == 404


@pytest.mark.parametrize("operator, error", [
    ({"enabled": True}, "engine.operator.auth: the operator listener needs credentials of its "
                        "own: basic or api_key"),
    ({"enabled": True, "auth": {"type": "none"}}, "engine.operator.auth: the operator listener"),
    ({"enabled": True, "auth": {"type": "basic", "username": "ops",
                                "password": OPERATOR_PASSWORD}},
     "engine.operator.auth.password: a secret is written as {$env: VARIABLE_NAME}"),
    ({"enabled": True, "bind": "0.0.0.0"}, "Additional properties are not allowed"),
])
def test_configuration_errors_are_one_clear_line(tmp_path, operator_env, operator, error):
    path = write_config(tmp_path, configured(tmp_path, operator))
    with pytest.raises(ConfigError, match=error.replace("$", r"\$").replace("{", r"\{")) as err:
        load_settings([path])
    assert OPERATOR_PASSWORD not in str(err.value)


def test_its_secret_is_needed_only_where_it_is_served(tmp_path, secrets_env, runner,
                                                      monkeypatch):
    path = write_config(tmp_path, configured(tmp_path, operator_settings()))
    monkeypatch.delenv("TEST_OPERATOR_PASSWORD", raising=False)
    bridge = bridge_of(path)  # status, replay…: they never read it
    with pytest.raises(ConfigError, match="engine.operator.auth.password: environment variable "
                                          "TEST_OPERATOR_PASSWORD is not set"):
        create_operator_app(bridge)
    bridge.close()
    assert runner.invoke(cli, ["status", "-c", str(path)]).exit_code == 0
