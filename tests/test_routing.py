"""Routing by declaration: each connector call goes to the plugin that declared it, check-config
refuses a route nothing can deliver, declared secrets never travel in clear text."""

from __future__ import annotations

from pathlib import Path

import pytest

from s360bridge.core.api import (
    API_VERSION,
    PushResult,
    Secret,
    Target,
    __all__,
    hookimpl,
    require,
)
from s360bridge.core.errors import ConfigError, PluginError
from s360bridge.core.plugin.manager import Hooks

from .conftest import base_config, bridge_of, write_config
from .helpers.imports import absolute_imports
from .helpers.plugins import registered

ROOT = Path(__file__).resolve().parents[1]


def test_builtin_plugins_import_only_the_public_api_and_their_own_package():
    bad = []
    for path in sorted((ROOT / "plugins").rglob("*.py")):
        package = path.relative_to(ROOT / "plugins").parts[0].removesuffix(".py")
        for line, name in absolute_imports(path):
            own = name.startswith(f"s360bridge.plugins.{package}")
            if name.startswith("s360bridge") and name != "s360bridge.core.api" and not own:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert bad == []


def test_every_public_name_exists_and_is_documented():
    import s360bridge.core.api as api

    docs = (ROOT / "docs" / "plugins.md").read_text("utf-8")
    assert [n for n in __all__ if not hasattr(api, n)] == []
    assert [n for n in __all__ if f"`{n}" not in docs] == []


def test_a_plugin_needing_a_newer_api_gets_a_clear_error():
    require(API_VERSION)  # the installed one is enough
    with pytest.raises(PluginError, match=rf"my-plugin needs the s360bridge plugin API "
                                          rf"{API_VERSION + 1} or newer; .* has API "
                                          rf"{API_VERSION}: upgrade s360bridge"):
        require(API_VERSION + 1, "my-plugin")


def config_with(tmp_path, change) -> Path:
    cfg = base_config(tmp_path)
    change(cfg)
    return write_config(tmp_path, cfg)


def test_check_config_refuses_a_stream_no_plugin_maps_to_the_target(tmp_path, secrets_env):
    def crm_for_ticketchecks(cfg):
        cfg["targets"]["crm"] = {"type": "http_crm", "contacts": {"url": "http://crm/c"}}
        cfg["streams"]["ticketchecks"]["targets"] = ["crm"]

    path = config_with(tmp_path, crm_for_ticketchecks)
    with pytest.raises(ConfigError) as err:
        bridge_of(path)
    assert str(err.value) == (
        f"{path}: streams.ticketchecks.targets: institution testvenue routes stream "
        "ticketchecks to target crm (http_crm), which cannot take it: no plugin maps stream "
        "'ticketchecks' to target type 'http_crm'; declared close to it: crm (contacts -> "
        "http_crm), crm (orders -> http_crm), ticketchecks (ticketchecks -> sql)")


def test_check_config_asks_the_pair_about_the_configuration(tmp_path, secrets_env):
    def orders_to_a_crm_without_their_url(cfg):
        cfg["targets"]["crm"] = {"type": "http_crm", "contacts": {"url": "http://crm/c"}}
        cfg["streams"]["orders"]["targets"] = ["crm"]

    with pytest.raises(ConfigError, match="routes stream orders to target crm .http_crm., "
                                          "which cannot take it: target crm has no URL for "
                                          "stream orders .configured: contacts.$"):
        bridge_of(config_with(tmp_path, orders_to_a_crm_without_their_url))


class Recorder(Target):
    kind = "recorder"
    SECRETS = frozenset({"secret"})


class RecorderPlugin:
    def __init__(self, name="recorder-plugin"):
        self.name = name
        self.calls = []

    @hookimpl
    def register_targets(self, register):
        register(Recorder.kind, Recorder)

    @hookimpl
    def register_transforms(self, register):
        register("orders", Recorder.kind)

    @hookimpl
    def transform(self, institution, stream, target, records):
        self.calls.append(("transform", stream.name))
        return [r.key for r in records]

    @hookimpl
    def push(self, institution, stream, target, items):
        self.calls.append(("push", target.kind))
        return PushResult()


def test_two_plugins_declaring_one_pair_is_an_error_naming_both():
    class Rival:
        @hookimpl
        def register_transforms(self, register):
            register("orders", Recorder.kind)

        @hookimpl
        def transform(self, institution, stream, target, records):
            return []

    with registered(RecorderPlugin(), "recorder-plugin"), registered(Rival(), "rival"), \
            pytest.raises(PluginError, match="plugins 'recorder-plugin' and 'rival' both "
                                             "declare the transform of stream 'orders' to "
                                             "target type 'recorder'"):
        Hooks().pairs  # noqa: B018 - the property does the collecting


def test_a_transform_without_a_declaration_stops_loading():
    class Undeclared:
        @hookimpl
        def transform(self, institution, stream, target, records):
            return []

    with registered(Undeclared(), "undeclared"), \
            pytest.raises(PluginError, match="plugin 'undeclared' implements transform but "
                                             "declares no pair"):
        Hooks().pairs  # noqa: B018


def test_calls_go_only_to_the_declaring_plugin_and_secrets_stay_secret(tmp_path, secrets_env,
                                                                      monkeypatch):
    monkeypatch.setenv("TEST_RECORDER_SECRET", "s3cr3t-value")
    plugin = RecorderPlugin()

    def add_recorder(cfg):
        cfg["targets"]["rec"] = {"type": "recorder", "secret": {"$env": "TEST_RECORDER_SECRET"}}
        cfg["streams"]["orders"]["targets"] = ["rec"]

    with registered(plugin, "recorder-plugin"):
        bridge = bridge_of(config_with(tmp_path, add_recorder))
        inst = bridge.institution("testvenue")
        target = bridge.target(inst, "rec")
        assert isinstance(target.options["secret"], Secret)
        assert target.options["secret"].value == "s3cr3t-value"
        assert "s3cr3t" not in repr(target.options) and "s3cr3t" not in str(target.options)
        hooks = bridge.hooks
        items = hooks.transform(inst, bridge.stream("orders"), target, [])
        hooks.push(inst, bridge.stream("orders"), target, items)
        bridge.close()
    assert plugin.calls == [("transform", "orders"), ("push", "recorder")]


def test_a_declared_secret_in_clear_text_is_refused(tmp_path, secrets_env):
    def clear(cfg):
        cfg["targets"]["rec"] = {"type": "recorder", "secret": "hook-secret-in-clear"}
        cfg["streams"]["orders"]["targets"] = ["rec"]

    with registered(RecorderPlugin(), "recorder-plugin"), pytest.raises(ConfigError) as err:
        bridge_of(config_with(tmp_path, clear))
    assert "targets.rec: secret: a secret is written as {$env: VARIABLE_NAME}, never as a " \
           "value" in str(err.value)
    assert "hook-secret-in-clear" not in str(err.value)


def test_plugins_lists_streams_services_target_types_pairs_commands_and_routes():
    rows = {r["name"]: r for r in Hooks().describe()}
    assert rows["contacts"]["streams"] == ["contacts"]
    assert rows["contacts"]["transforms"] == ["contacts -> sql"]
    assert rows["crm"]["target_types"] == ["http_crm"]
    assert rows["crm"]["transforms"] == ["contacts -> http_crm", "orders -> http_crm"]
    assert rows["jsonl"]["transforms"] == ["* -> jsonl"]
    assert "offers" in rows["offers"]["commands"]
    assert rows["offers"]["services"] == ["offers"] and rows["offers"]["streams"] == []
    assert {"POST /crm/offers/<code>", "GET /crm/catalog/<code>"} <= set(rows["offers"]["routes"])
