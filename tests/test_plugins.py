"""Plugins: built-in and third-party loading, every hook exercised through a plugin."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import threading
import types
from pathlib import Path

import pytest
from flask import Blueprint

from s360bridge.core.errors import PluginError
from s360bridge.core.pipeline.processes import run_scheduler
from s360bridge.core.pipeline.receiver import create_app
from s360bridge.core.plugin import manager as plugin_module
from s360bridge.core.plugin.hookspecs import hookimpl
from s360bridge.core.plugin.manager import ENTRY_POINT_GROUP, Hooks, check, plugin_manager
from s360bridge.core.plugin.streams import Stream
from s360bridge.core.plugin.targets import PushResult, Target

from .conftest import base_config, bridge_of, drain, fixture, post, write_config
from .helpers.examples import install_outside
from .helpers.plugins import registered
from .helpers.processes import S360BRIDGE

EXTERNAL_PLUGIN = Path(__file__).parent / "external_plugin"


def cli_output(*args, **env) -> str:
    result = subprocess.run([S360BRIDGE, *args], capture_output=True, text=True, timeout=60,
                            env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def surveys_dir(tmp_path_factory) -> str:
    """tests/external_plugin installed into a folder of its own, package and dist-info, never
    into the environment: only a process that has the folder on its path sees the plugin."""
    target = tmp_path_factory.mktemp("test-plugins")
    install_outside([str(EXTERNAL_PLUGIN)], target)
    return str(target)


@pytest.fixture
def surveys_env(surveys_dir) -> dict[str, str]:
    """What a subprocess that should see the surveys plugin adds to its environment."""
    return {"PYTHONPATH": os.pathsep.join(filter(None, [surveys_dir,
                                                        os.environ.get("PYTHONPATH")]))}


@pytest.fixture
def surveys_loaded(surveys_dir, monkeypatch):
    """The surveys plugin in this process too, through its entry point, for one test."""
    monkeypatch.syspath_prepend(surveys_dir)
    pm = plugin_manager()
    pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name="surveys")
    assert pm.has_plugin("surveys")
    check(pm)
    yield
    pm.unregister(name="surveys")


def test_builtin_and_entry_point_plugins_are_listed(surveys_env):
    rows = {r["name"]: r for r in json.loads(cli_output("plugins", "--json", **surveys_env))}
    for name in ("contacts", "orders", "ticketchecks", "sql", "jsonl", "retention", "erasure"):
        assert rows[name]["source"] == "built-in"
    assert rows["simulator"]["source"].startswith("entry point of s360bridge-simulator ")
    assert rows["surveys"]["source"].startswith("entry point of s360bridge-surveys ")
    assert "register_streams" in rows["surveys"]["hooks"]


def test_the_environment_has_the_simulator_but_no_plugin_of_the_tests():
    """make installs the simulator into .venv, and tests/external_plugin only into the tests'
    own folder: after `make demo`, a user's `s360bridge plugins` lists no surveys."""
    names = {r["name"] for r in json.loads(cli_output("plugins", "--json"))}
    assert "simulator" in names
    assert "surveys" not in names


def test_env_var_restricts_which_plugins_load(surveys_env):
    out = cli_output("plugins", "--json", S360BRIDGE_LOAD_PLUGINS="contacts,sql,surveys",
                     **surveys_env)
    assert sorted(r["name"] for r in json.loads(out)) == ["contacts", "sql", "surveys"]


def test_third_party_plugin_installed_elsewhere_works_end_to_end(tmp_path, secrets_env,
                                                                 journal, surveys_env,
                                                                 surveys_loaded):
    """tests/external_plugin is a separate distribution, installed where only these tests look;
    its register_streams, receive and register_commands hooks come in through the entry point,
    in a subprocess and in this one."""
    assert cli_output("surveys", **surveys_env).strip() == "surveys plugin ready"
    cfg = base_config(tmp_path)
    cfg["streams"]["surveys"] = {"targets": ["journal"]}
    bridge = bridge_of(write_config(tmp_path, cfg))
    client = create_app(bridge).test_client()
    resp = client.post("/s360/surveys/testvenue",
                       json=[{"surveyId": 7, "score": 9}, {"surveyId": 8, "score": 11}])
    assert resp.json == {"accepted": 1, "duplicates": 0, "quarantined": 1, "before_cutoff": 0}
    drain(bridge)
    assert journal.pushes("surveys") == {"7": 1}
    bridge.close()


def test_misspelled_hook_implementation_is_an_error_at_start():
    bad = types.SimpleNamespace(register_stream=hookimpl(lambda register: None))
    pm = plugin_module._load({})
    pm.register(bad, name="typo")
    with pytest.raises(PluginError) as err:
        check(pm)
    assert "register_stream" in str(err.value)
    assert "register_streams" in str(err.value)  # the message lists the known hooks


class MemoryTarget(Target):
    kind = "memory"
    pushed: list = []


class MemoryPlugin:
    """A third-party target type: its register_targets, transform and push hooks."""

    @hookimpl
    def register_targets(self, register):
        register("memory", MemoryTarget)

    @hookimpl
    def register_transforms(self, register):
        register("*", MemoryTarget.kind)

    @hookimpl
    def transform(self, institution, stream, target, records):
        return [(stream.name, r.key) for r in records]

    @hookimpl
    def push(self, institution, stream, target, items):
        MemoryTarget.pushed.extend(items)
        return PushResult(retry={i: "refused by memory" for i, (_, key) in enumerate(items)
                                  if key == "10000815601"})


def test_custom_target_type_through_transform_and_push(tmp_path, secrets_env):
    MemoryTarget.pushed = []
    with registered(MemoryPlugin(), "memory-plugin"):
        cfg = base_config(tmp_path)
        cfg["targets"]["mem"] = {"type": "memory"}
        cfg["streams"]["orders"]["targets"] = ["mem"]
        bridge = bridge_of(write_config(tmp_path, cfg))
        post(create_app(bridge).test_client(), "orders", fixture("order_sale.json"))
        drain(bridge)
        bridge.close()
    assert MemoryTarget.pushed == [("orders", "10000815533"), ("orders", "10000815601")]
    with sqlite3.connect(tmp_path / "engine.db") as conn:  # a per-item failure is that item's
        states = dict(conn.execute("SELECT record_key, last_error FROM inbox"))
    assert states == {"10000815533": None, "10000815601": "mem: refused by memory"}


def test_receive_hook_answers_only_for_its_stream(bridge):
    hooks = bridge.hooks
    inst = bridge.institution("testvenue")
    batch = hooks.receive(inst, bridge.stream("contacts"), fixture("contacts_person.json"))
    assert [k for k, _ in batch.accepted] == ["3346662", "0004711"]
    with pytest.raises(PluginError, match="no plugin registers stream 'nothing'"):
        hooks.receive(inst, Stream("nothing", "x"), [])


class RoutesPlugin:
    @hookimpl
    def register_routes(self, register):
        bp = Blueprint("hello", __name__)
        bp.get("/plugin/hello")(lambda: {"hello": "world"})
        register(bp)


def test_register_routes_adds_blueprints_to_the_receiver(bridge):
    with registered(RoutesPlugin(), "routes-plugin"):
        client = create_app(bridge).test_client()
    assert client.get("/plugin/hello").json == {"hello": "world"}


def test_register_jobs_are_run_by_the_scheduler(bridge):
    ran = threading.Event()

    class JobsPlugin:
        @hookimpl
        def register_jobs(self, register, bridge):
            register("ping", 0.01, ran.set)

    stop = threading.Event()
    with registered(JobsPlugin(), "jobs-plugin"):
        names = [name for name, _, _ in Hooks().jobs(bridge)]
        thread = threading.Thread(target=run_scheduler, args=(bridge, stop))
        thread.start()
        try:
            assert ran.wait(10), "the job did not run"
        finally:
            stop.set()
            thread.join(10)
    assert {"ping", "purge"} <= set(names)


def test_two_plugins_registering_one_stream_is_an_error():
    class Clash:
        @hookimpl
        def register_streams(self, register):
            register(Stream("orders", "Another orders stream"))

    with registered(Clash(), "clash"), pytest.raises(PluginError,
                                                     match="plugins 'orders' and 'clash' both "
                                                           "register the stream 'orders'"):
        Hooks().streams  # noqa: B018 - the property does the collecting
