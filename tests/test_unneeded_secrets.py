"""The commands that work on the engine database alone (`status`, `quarantine`, `replay`, `db`)
run where only the engine database's settings are set, as an operator's shell is: the README's
`s360bridge status -c config/myvenue.yaml` with none of the worked example's variables. A
command that needs a missing variable still stops in one line naming it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
from flask import Flask

from s360bridge.core.bridge import Bridge
from s360bridge.core.cli.common import open_bridge
from s360bridge.core.cli.main import cli
from s360bridge.core.config import load_settings
from s360bridge.core.config_secrets import MissingVariable
from s360bridge.core.pipeline.ingest import ingest
from s360bridge.simulator.serving import Served

from .conftest import drain, fixture
from .helpers.processes import S360BRIDGE, free_port, start, stop, wait_until

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = "config/myvenue.yaml"  # as the README writes it, from the folder the test runs in
VARIABLES = sorted(set(re.findall(r"\$env: (\w+)", (ROOT / EXAMPLE).read_text("utf-8"))))
CRM_URL_MISSING = (f"error: {EXAMPLE}: targets.crm.base_url: environment variable "
                   "MYVENUE_CRM_URL is not set (or empty)")


def refusing_crm() -> Flask:
    """A CRM that refuses every order for good (422): each becomes a dead letter at once."""
    app = Flask("refusing-crm")

    @app.post("/api/<path:what>")
    def refuse(what):
        return {"error": "unknown product"}, 422
    return app


@pytest.fixture
def venue(tmp_path, monkeypatch):
    """The worked example in a folder of its own, its engine database named by
    S360BRIDGE_DATABASE_URL alone; a bridge that had every variable left a dead letter (its
    CRM refused the order) and a quarantined record there."""
    (tmp_path / "config").mkdir()
    shutil.copy(ROOT / EXAMPLE, tmp_path / EXAMPLE)
    monkeypatch.chdir(tmp_path)  # its warehouse, var/myvenue-warehouse.db, lands here too
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("S360BRIDGE_DATABASE_URL", f"sqlite:///{tmp_path}/engine.db")
    with Served(refusing_crm()) as crm:
        every = {name: f"value-of-{name}" for name in VARIABLES}
        every |= {"MYVENUE_CRM_URL": crm.url, "MYVENUE_S360_API_URL": "http://127.0.0.1:9"}
        bridge = Bridge(load_settings([EXAMPLE], environ={**os.environ, **every}),
                        schema="upgrade")
        inst = bridge.institution("myvenue")
        result = ingest(bridge, inst, bridge.stream("orders"),
                        [fixture("order_sale.json")[0], {"orderDetailsData": "no order"}])
        assert (result.accepted, result.quarantined) == (1, 1)
        drain(bridge)
        bridge.close()
    return tmp_path


def test_operator_commands_run_without_the_streams_and_targets_secrets(venue, runner):
    assert not set(VARIABLES) & set(os.environ)

    def ok(*args: str) -> str:
        result = runner.invoke(cli, [*args, "-c", EXAMPLE])
        assert result.exit_code == 0, result.output
        return result.output

    shown = ok("status")
    assert "orders        dead 1; quarantined 1" in shown
    assert "target datx: sql sqlite:///var/myvenue-warehouse.db" in shown
    assert "target crm: http_crm (not built: $MYVENUE_CRM_URL is not set here)" in shown
    assert json.loads(ok("status", "--json"))["myvenue"]["streams"]["orders"]["states"] == \
        {"dead": 1}
    entry = ok("quarantine", "list").split()[0]
    assert "no order" in ok("quarantine", "show", entry)
    assert ok("quarantine", "reprocess") == "accepted 0, duplicates 0, still invalid 1\n"
    found = ok("search", "--institution", "myvenue", "10000815533")
    assert "crm          dead       1 attempt(s)" in found and "HTTP 422" in found
    assert ok("replay", "--dry-run") == "would re-queue 1 dead letter(s)\n"
    assert ok("replay", "--stream", "orders") == "re-queued 1 dead letter(s)\n"
    assert "orders        pending 1" in ok("status")
    assert ok("pause", "--institution", "myvenue", "--target", "crm").startswith("paused ")
    assert "PAUSED since" in ok("status")
    assert ok("resume", "--institution", "myvenue", "--target", "crm") == \
        "resumed myvenue/crm: 0 held record(s) queued\n"
    assert [line.split()[5] for line in ok("audit").splitlines()] == [
        "resume", "pause", "replay", "reprocess"]
    assert ok("db", "check") == ok("db", "upgrade") == "the schema is up to date\n"
    assert "engine " in ok("db", "current")


def test_the_readme_status_command_as_written_in_a_shell_without_them(venue):
    """A real process, with no variable of the example's in its environment."""
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    done = subprocess.run([S360BRIDGE, "status", "-c", EXAMPLE], env=env, cwd=venue,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "myvenue  (config/myvenue.yaml)" in done.stdout


@pytest.mark.parametrize("command", [["worker"], ["check-config"], ["forget", "--institution",
                                                                    "myvenue", "--contact", "1"]])
def test_a_command_that_needs_a_missing_secret_says_which_in_one_line(venue, runner, command):
    result = runner.invoke(cli, [*command, "-c", EXAMPLE])
    assert result.exit_code == 2
    assert result.output == CRM_URL_MISSING + "\n"


def test_a_lazy_bridge_fails_clearly_where_it_needs_a_missing_variable(venue):
    bridge = open_bridge([EXAMPLE], lazy=True)
    inst = bridge.institution("myvenue")
    with pytest.raises(MissingVariable, match=f"^{EXAMPLE}: s360_api.base_url: environment "
                                              "variable MYVENUE_S360_API_URL is not set"):
        bridge.s360(inst)
    with pytest.raises(MissingVariable, match=re.escape(CRM_URL_MISSING[len("error: "):])):
        bridge.target(inst, "crm")
    assert bridge.target(inst, "datx").describe() == "sql sqlite:///var/myvenue-warehouse.db"
    bridge.close()


def test_the_console_runs_without_the_streams_and_targets_secrets(venue, monkeypatch):
    """The operator listener (`s360bridge operator`, or the one `run` starts) reads only its
    own credentials: its console shows the dead letter and replays it (dry run)."""
    import yaml

    from s360bridge.core.operator.app import create_operator_app

    data = yaml.safe_load((venue / EXAMPLE).read_text("utf-8"))
    data["engine"] = {"operator": {"enabled": True, "auth": {
        "type": "basic", "username": "ops", "password": {"$env": "OPS_PASSWORD"}}}}
    (venue / EXAMPLE).write_text(yaml.safe_dump(data), "utf-8")
    monkeypatch.setenv("OPS_PASSWORD", "the-operators-password-0123")
    ops = create_operator_app(open_bridge([EXAMPLE], lazy=True)).test_client()
    auth = ("ops", "the-operators-password-0123")
    assert ops.get("/", auth=auth).status_code == 200
    page = ops.get("/problems", auth=auth).text
    assert "unknown product" in page and "10000815533" in page
    assert ops.get("/metrics", auth=auth).status_code == 200
    port = free_port()
    data["engine"]["operator"]["port"] = port
    data["engine"]["database_url"] = os.environ["S360BRIDGE_DATABASE_URL"]  # start() drops it
    (venue / EXAMPLE).write_text(yaml.safe_dump(data), "utf-8")
    proc = start(["operator", "-c", EXAMPLE], venue / "operator.log")  # the command itself
    try:
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/", auth), 30,
                   "s360bridge operator to serve the console", proc)
    finally:
        stop(proc)


def _answers(url: str, auth) -> bool:
    try:
        return requests.get(url, auth=auth, timeout=1).status_code == 200
    except requests.RequestException:
        return False
