"""Services beside streams: configured under ``services:``, admitted as webhooks are, their
jobs scheduled per institution that enables them."""

from __future__ import annotations

import pytest
from flask import Blueprint

from s360bridge.core.bridge import Bridge
from s360bridge.core.cli.main import cli
from s360bridge.core.config import load_settings
from s360bridge.core.errors import ConfigError, PluginError
from s360bridge.core.pipeline.receiver import create_app
from s360bridge.core.plugin.hookspecs import hookimpl
from s360bridge.core.plugin.services import Service

from .conftest import base_config, post, write_config
from .helpers.plugins import registered

KEY = {"x-api-key": "offers-key-0123"}
NOT_AUTHORIZED = "not authorized (the bridge's log says why)"


def offers() -> dict:
    """An institution's entry of the offers service."""
    return {"auth": {"type": "api_key", "header": "x-api-key",
                     "key": {"$env": "TEST_OFFERS_KEY"}},
            "options": {"recovery_every_seconds": 5}}


@pytest.fixture
def offers_env(secrets_env, monkeypatch):
    monkeypatch.setenv("TEST_OFFERS_KEY", KEY["x-api-key"])


def bridge_of(tmp_path, change=None, name: str = "testvenue.yaml") -> Bridge:
    data = base_config(tmp_path)
    data["services"] = {"offers": offers()}
    if change:
        change(data)
    return Bridge(load_settings([write_config(tmp_path, data, name)]), schema="upgrade")


def client_of(tmp_path, change=None):
    bridge = bridge_of(tmp_path, change)
    return bridge, create_app(bridge).test_client()


def answer(client, headers=KEY, code: str = "testvenue"):
    r = client.get(f"/crm/offers/{code}/999", headers=headers)
    return r.status_code, r.json["error"]


def test_an_admitted_request_reaches_the_route(tmp_path, offers_env):
    bridge, client = client_of(tmp_path)
    try:
        assert answer(client) == (404, "no offer 999 for 'testvenue'")  # the route's own 404
        assert answer(client, code="elsewhere") == (401, NOT_AUTHORIZED)  # no such institution
    finally:
        bridge.close()


@pytest.mark.parametrize("change", [
    lambda data: data.pop("services"),
    lambda data: data["services"]["offers"].update(enabled=False),
], ids=["not configured", "disabled"])
def test_a_service_not_enabled_is_401(tmp_path, offers_env, change):
    bridge, client = client_of(tmp_path, change)
    try:
        assert answer(client) == (401, NOT_AUTHORIZED)  # as wrong credentials
    finally:
        bridge.close()


def test_wrong_or_missing_credentials_are_401(tmp_path, offers_env):
    bridge, client = client_of(tmp_path)
    try:
        assert answer(client, {"x-api-key": "wrong"}) == (401, NOT_AUTHORIZED)
        assert answer(client, {})[0] == 401
    finally:
        bridge.close()


def test_a_disallowed_source_is_403_as_for_a_stream(tmp_path, offers_env):
    def elsewhere(data):
        data["allowed_sources"] = ["192.0.2.0/24"]  # the test client calls from 127.0.0.1
    bridge, client = client_of(tmp_path, elsewhere)
    try:
        refused = (403, "source address 127.0.0.1 is not allowed")
        assert answer(client) == refused
        r = post(client, "orders", [])
        assert (r.status_code, r.json["error"]) == refused
    finally:
        bridge.close()


def test_a_service_under_streams_says_to_move_it(tmp_path, offers_env):
    def as_stream(data):
        data["streams"]["offers"] = data.pop("services")["offers"]
    with pytest.raises(ConfigError) as err:
        bridge_of(tmp_path, as_stream)
    assert str(err.value) == (f"{tmp_path / 'testvenue.yaml'}: streams.offers: offers is a "
                              "service, not a stream: move its entry under services:")


@pytest.mark.parametrize("change, message", [
    (lambda data: data["services"].update(resell={}),
     "services.resell: no loaded plugin provides this service (known: offers)"),
    (lambda data: data["services"]["offers"]["options"].update(wait_seconds=600),
     "services.offers.options: wait_seconds: 600 is greater than the maximum of 60"),
    (lambda data: data["services"]["offers"].update(targets=["datx"]),
     "services.offers: Additional properties are not allowed ('targets' was unexpected)"),
])
def test_services_are_checked_at_start_up(tmp_path, offers_env, change, message):
    with pytest.raises(ConfigError, match="^.*testvenue.yaml: ") as err:
        bridge_of(tmp_path, change)
    assert message in str(err.value)


def test_the_jobs_of_a_service_run_per_institution_that_enables_it(tmp_path, offers_env):
    for code, services in [("testvenue", {"offers": offers()}),
                           ("offvenue", {"offers": {**offers(), "enabled": False}}),
                           ("plainvenue", {})]:
        data = base_config(tmp_path) | {"institution": code, "services": services}
        write_config(tmp_path, data, f"{code}.yaml")
    bridge = Bridge(load_settings([tmp_path]), schema="upgrade")
    try:
        jobs = {name: every for name, every, _ in bridge.hooks.jobs(bridge)}
    finally:
        bridge.close()
    assert {n: e for n, e in jobs.items() if "venue" in n} == {
        "catalog of testvenue": 3600, "availabilities of testvenue": 3600,
        "offers of testvenue": 5}
    assert "purge" in jobs  # register_jobs still adds its own


def test_check_config_lists_the_services(tmp_path, offers_env, runner):
    data = base_config(tmp_path) | {"services": {"offers": {**offers(), "enabled": False}}}
    result = runner.invoke(cli, ["check-config", "-c", str(write_config(tmp_path, data))])
    assert result.exit_code == 0, result.output
    assert "  service offers  disabled, auth api_key  (Offers created in S-360" in result.output


class EchoPlugin:
    """A third-party service whose routes never admit their requests themselves."""

    NAME, BLUEPRINT = "echo", Blueprint("echo", __name__)
    BLUEPRINT.get("/echo/<code>")(lambda code: {"echo": code})

    @hookimpl
    def register_services(self, register):
        register(Service(self.NAME, "Echoes", self.BLUEPRINT))


def test_the_core_admits_every_request_to_a_service(tmp_path, offers_env):
    def echo(data):
        data["services"]["echo"] = {"auth": offers()["auth"]}
    with registered(EchoPlugin(), "echo-plugin"):
        bridge, client = client_of(tmp_path, echo)
    try:
        assert client.get("/echo/testvenue").status_code == 401
        assert client.get("/echo/testvenue", headers=KEY).json == {"echo": "testvenue"}
    finally:
        bridge.close()


def test_a_service_route_without_the_institution_stops_start_up(tmp_path, offers_env):
    class Lost(EchoPlugin):
        NAME, BLUEPRINT = "lost", Blueprint("lost", __name__)
        BLUEPRINT.get("/lost")(lambda: {})

    with registered(Lost(), "lost-plugin"), pytest.raises(PluginError) as err:
        client_of(tmp_path)
    assert str(err.value) == "service 'lost': route /lost has no <code> (the institution) in " \
                             "its URL"
