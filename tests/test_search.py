"""Search by key with the attempt history, the replay's and the reprocessing's dry runs and
filters, and the audit trail of what operators did: through the shared operations and the CLI,
with a reference CRM answering over real HTTP."""

from __future__ import annotations

import getpass
import json
import time

import pytest
from sqlalchemy import func, select

from s360bridge.core.cli.main import cli
from s360bridge.core.operations import admin, search
from s360bridge.core.operations.audit import Actor, entries
from s360bridge.core.operations.retention import purge
from s360bridge.core.pipeline.receiver import create_app
from s360bridge.core.pipeline.worker import Worker
from s360bridge.core.storage.tables import ATTEMPT

from .conftest import base_config, bridge_of, drain, fixture, post, write_config
from .helpers.clock import Clock
from .helpers.records import sale_version

ORDER = "10000815533"
ME = Actor("tester")


@pytest.fixture
def crm_path(tmp_path, crm, secrets_env):
    cfg = base_config(tmp_path)
    cfg["targets"]["crm"] = {"type": "http_crm", "orders": {"url": f"{crm.url}/api/orders"}}
    cfg["streams"]["orders"]["targets"] = ["datx", "crm"]
    return write_config(tmp_path, cfg)


def outcomes(version: dict) -> dict[str, tuple]:
    """Per target: its state and the outcome of each attempt, with the answer's start."""
    return {name: (t["state"], [(a["outcome"], (a["answer"] or "")[:8]) for a in t["attempts"]])
            for name, t in version["targets"].items()}


def test_search_finds_each_version_with_its_deliveries_attempts_and_answers(
        crm_path, crm, runner):
    """The CRM is down once (503), then takes the order; a newer version it refuses (422) is a
    dead letter. The search shows both versions, per target every attempt with its answer;
    the replay's dry run counts by filter, the replay acts and is in the audit trail."""
    bridge = bridge_of(crm_path)
    client, clock = create_app(bridge).test_client(), Clock()
    worker = Worker(bridge, clock=clock)
    crm.down = 1
    post(client, "orders", fixture("order_sale.json")[:1])
    assert worker.run_once() == 1
    clock.now += 3600  # its backoff has run out
    assert worker.run_once() == 1
    crm.poison[ORDER] = 422
    post(client, "orders", [sale_version(9900)])
    clock.now += 60
    assert worker.run_once() == 1

    found = search.search(bridge, "testvenue", ORDER)
    assert [(v["stream"], v["key"], v["state"], v["attempts"]) for v in found["versions"]] == [
        ("orders", ORDER, "done", 1), ("orders", ORDER, "dead", 1)]
    first, second = found["versions"]
    assert outcomes(first) == {"datx": ("done", [("delivered", "")]),
                               "crm": ("done", [("failed", "POST htt"), ("delivered", "")])}
    assert "HTTP 503" in first["targets"]["crm"]["attempts"][0]["answer"]
    assert [a["at"] for a in first["targets"]["crm"]["attempts"]] == \
        [clock.now - 3660, clock.now - 60]
    assert outcomes(second) == {"datx": ("done", [("delivered", "")]),
                                "crm": ("dead", [("refused", "Refused:")])}
    assert "HTTP 422" in second["targets"]["crm"]["last_error"]
    assert second["record"]["orderDetailsData"]["saleAmount"] == 9900
    assert found["quarantined"] == [] and found["paused"] == []

    def cli_run(*args):
        result = runner.invoke(cli, [*args, "-c", str(crm_path)])
        assert result.exit_code == 0, result.output
        return result.output

    assert json.loads(cli_run("search", "--institution", "testvenue", ORDER, "--json")) == \
        json.loads(json.dumps(found))
    shown = cli_run("search", "--institution", "testvenue", ORDER).splitlines()
    assert shown[0].startswith(f"testvenue/orders {ORDER}  version 1, received ")
    assert shown[0].endswith(": done")
    assert shown[3] == "  crm          done       2 attempt(s)"
    assert "  failed: POST http://127.0.0.1:" in shown[4] and "HTTP 503" in shown[4]
    assert shown[5].endswith("  delivered")
    assert shown[-1].startswith("    ") and "refused: Refused: POST" in shown[-1]
    assert cli_run("search", "--institution", "testvenue", "404") == \
        "nothing of testvenue has the key 404\n"

    dry = {args: cli_run("replay", "--dry-run", *args) for args in [
        (), ("--target", "crm"), ("--target", "datx"), ("--stream", "contacts"),
        ("--since", "1h"), ("--since", "2099-01-01")]}
    assert dry == {(): "would re-queue 1 dead letter(s)\n",
                   ("--target", "crm"): "would re-queue 1 dead letter(s)\n",
                   ("--target", "datx"): "would re-queue 0 dead letter(s)\n",
                   ("--stream", "contacts"): "would re-queue 0 dead letter(s)\n",
                   ("--since", "1h"): "would re-queue 1 dead letter(s)\n",
                   ("--since", "2099-01-01"): "would re-queue 0 dead letter(s)\n"}
    assert entries(bridge) == []  # a dry run changes nothing, so it is not in the trail
    crm.poison.clear()
    assert cli_run("replay", "--institution", "testvenue", "--target", "crm", "--since",
                   "2020-01-01") == "re-queued 1 dead letter(s)\n"
    clock.now += 60
    assert worker.run_once() == 1
    assert outcomes(search.search(bridge, "testvenue", ORDER)["versions"][1])["crm"] == \
        ("done", [("refused", "Refused:"), ("delivered", "")])
    trail = cli_run("audit").splitlines()
    assert len(trail) == 1 and trail[0].endswith(
        f"  {getpass.getuser()} (cli)  replay  testvenue  replayed 1, since 2020-01-01 "
        "00:00:00 UTC, target crm")
    [entry] = json.loads(cli_run("audit", "--json", "--action", "replay", "--since", "1h"))
    assert entry["detail"] == {"replayed": 1, "target": "crm", "since": 1577836800.0}
    assert cli_run("audit", "--action", "pause") == ""
    bad = runner.invoke(cli, ["replay", "-c", str(crm_path), "--since", "yesterday"])
    assert bad.exit_code == 2 and "'yesterday' is neither a duration ago" in bad.output
    bridge.close()


def test_a_barcode_finds_its_checks_and_a_key_its_quarantined_record(bridge, client, invoke,
                                                                    tmp_path):
    """A barcode (a search field of ticket checks) finds each check of the ticket. A check the
    venue's columns do not fit is quarantined and found by its key; the reprocessing's dry run
    says what it would do before and after the fix, the reprocessing takes it in, and the
    search then shows it delivered."""
    checks = fixture("ticketchecks.json")
    post(client, "ticketchecks", checks)
    drain(bridge)
    barcode = checks[0]["barcode"]
    found = search.search(bridge, "testvenue", barcode)
    assert [v["key"] for v in found["versions"]] == ["10228845124401", "10228845124455"]
    assert {v["state"] for v in found["versions"]} == {"done"}
    assert [v["key"] for v in search.search(bridge, "testvenue", "10228845124401",
                                            "ticketchecks")["versions"]] == ["10228845124401"]

    row = {k: v for k, v in checks[0].items() if k != "ticket_check_id"} | {"scan_id": 77001}
    post(client, "ticketchecks", [row])
    found = search.search(bridge, "testvenue", "77001")
    assert found["versions"] == []
    [held] = found["quarantined"]
    assert (held["stream"], held["state"], held["count"]) == ("ticketchecks", "held", 1)
    assert "ticket_check_id" in held["reason"]
    assert invoke("quarantine", "reprocess", "--dry-run").output == \
        "1 held record(s) would be: accepted 0, duplicates 0, still invalid 1\n"

    cfg = base_config(tmp_path)
    cfg["streams"]["ticketchecks"]["options"] = {"columns": {"ticket_check_id": "scan_id"}}
    write_config(tmp_path, cfg)
    assert invoke("quarantine", "reprocess", "--dry-run", "--since", "1h").output == \
        "1 held record(s) would be: accepted 1, duplicates 0, still invalid 0\n"
    assert invoke("quarantine", "reprocess", "--dry-run", "--since", "2099-01-01").output == \
        "0 held record(s) would be: accepted 0, duplicates 0, still invalid 0\n"
    assert entries(bridge) == []
    assert invoke("quarantine", "reprocess").output == \
        "accepted 1, duplicates 0, still invalid 0\n"
    fixed = bridge_of(tmp_path / "testvenue.yaml")  # the fixed configuration
    drain(fixed)
    found = search.search(fixed, "testvenue", "77001")
    assert [(v["state"], outcomes(v)) for v in found["versions"]] == [
        ("done", {"datx": ("done", [("delivered", "")]),
                  "journal": ("done", [("delivered", "")])})]
    assert [q["state"] for q in found["quarantined"]] == ["reprocessed"]
    [entry] = entries(fixed)
    assert (entry["action"], entry["actor"], entry["detail"]) == (
        "reprocess", getpass.getuser(),
        {"entries": 1, "accepted": 1, "duplicates": 0, "still_invalid": 0})
    fixed.close()


def attempts_of(bridge) -> int:
    with bridge.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(ATTEMPT)).scalar_one()


def test_attempts_go_with_their_record_and_forget_is_audited(bridge, client, invoke):
    post(client, "contacts", fixture("contacts_person.json"))
    post(client, "orders", fixture("order_sale.json"))
    drain(bridge)
    assert attempts_of(bridge) == 4 * 2  # two contacts, two orders; two targets each
    result = invoke("forget", "--institution", "testvenue", "--contact", "0004711")
    assert "engine inbox: 1 version(s)" in result.output
    assert attempts_of(bridge) == 3 * 2
    later = time.time() + bridge.settings.engine.retention_hours * 3600 + 60
    assert purge(bridge, now=later) == 3
    assert attempts_of(bridge) == 0
    [entry] = entries(bridge, action="forget")
    assert (entry["institution"], entry["actor"], entry["via"]) == \
        ("testvenue", getpass.getuser(), "cli")
    assert entry["detail"]["contact"] == "0004711"
    assert "engine inbox: 1 version(s)" in entry["detail"]["removed"]


def test_attempts_and_search_on_postgresql(pg_bridge, tmp_path):
    """The attempts are copied into PostgreSQL in the completion's transaction; the search
    reads them, and the view's held probe, there too."""
    post(create_app(pg_bridge).test_client(), "orders", fixture("order_sale.json"))
    assert drain(pg_bridge) == 2
    found = search.search(pg_bridge, "testvenue", ORDER)
    [version] = found["versions"]
    assert outcomes(version) == {"datx": ("done", [("delivered", "")]),
                                 "journal": ("done", [("delivered", "")])}
    assert attempts_of(pg_bridge) == 4
    assert admin.replay(pg_bridge, actor=ME, dry_run=True) == 0
