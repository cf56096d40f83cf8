"""Initial import and reconcile: history through the webhooks' path, resumable; both sides
compared by key, with seeded differences found (and nothing else), then repaired."""

from __future__ import annotations

import copy
import csv
import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from s360bridge.core.cli.main import cli
from s360bridge.core.operations import reconcile_runs
from s360bridge.core.operations.reconcile import differences
from s360bridge.simulator.data import Generator
from s360bridge.simulator.export import write_csv, write_jsonl

from .conftest import SECRETS_ENV, post
from .helpers.postgres import needs_pg, warehouse
from .helpers.processes import S360BRIDGE
from .helpers.world import World

ZURICH = ZoneInfo("Europe/Zurich")


def run(invoke, *args):
    result = invoke(*args)
    return result.exit_code, result.output


def warehouse_count(tmp_path, table: str) -> int:
    with sqlite3.connect(tmp_path / "warehouse.db") as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def generated(stream: str, n: int, seed: int = 4) -> list[dict]:
    gen = Generator(seed)
    gen.records("contacts", 20)
    return gen.records(stream, n)


def test_import_loads_history_through_the_webhook_path(tmp_path, invoke, journal):
    orders = generated("orders", 120)
    old = copy.deepcopy(orders[0])
    old["orderDetailsData"]["orderId"] += 1
    old["orderDetailsData"]["creationDateTime"] = "2015-05-05T10:00:00.000+00:00"
    path = tmp_path / "orders.jsonl"
    write_jsonl([*orders, old], path)
    with path.open("ab") as f:
        f.write(b"{not json\n")
    code, out = run(invoke, "import", "--institution", "testvenue", "--stream", "orders",
                    str(path))
    assert code == 0, out
    assert "122 lines: 120 stored, 0 already there, 1 older than the history cut-off " \
           "2019-01-01 (left out), 1 quarantined" in out
    assert warehouse_count(tmp_path, "orders") == 120
    assert sum(journal.pushes("orders").values()) == 120
    code, out = run(invoke, "import", "--institution", "testvenue", "--stream", "orders",
                    str(path))
    assert "already imported (122 lines)" in out
    code, out = run(invoke, "import", "--institution", "testvenue", "--stream", "orders",
                    "--again", str(path))
    assert "0 stored, 120 already there" in out
    assert sum(journal.pushes("orders").values()) == 120


def test_an_imported_file_run_again_delivers_what_is_still_queued(tmp_path, invoke):
    """An import stopped while it delivered (or run with --no-deliver) is finished by running
    it again: the file is not read again, its records still queued are delivered."""
    path = tmp_path / "orders.jsonl"
    write_jsonl(generated("orders", 40), path)
    args = ("import", "--institution", "testvenue", "--stream", "orders")
    code, out = run(invoke, *args, "--no-deliver", str(path))
    assert code == 0 and "40 stored" in out and "delivered" not in out
    code, out = run(invoke, *args, str(path))
    assert code == 0, out
    assert "already imported (40 lines)" in out and "delivered 40 record(s)" in out
    assert warehouse_count(tmp_path, "orders") == 40


@needs_pg
def test_an_import_on_postgresql_stores_and_delivers_each_record_once(tmp_path, pg_bridge):
    """The batches commit with ``synchronous_commit = off``, set in their own transaction."""
    from s360bridge.core.operations.history_import import run_import
    from s360bridge.core.operations.repair import deliver

    path = tmp_path / "orders.jsonl"
    write_jsonl(generated("orders", 60), path)
    inst, stream = pg_bridge.institution("testvenue"), pg_bridge.stream("orders")
    assert run_import(pg_bridge, inst, stream, path, "jsonl", batch=25).totals.accepted == 60
    assert deliver(pg_bridge) == 60
    assert warehouse(pg_bridge, "SELECT count(*) FROM orders") == [(60,)]
    with pg_bridge.engine.connect() as conn:  # the setting did not outlive its transactions
        assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"


def test_import_of_a_csv_data_export(tmp_path, invoke):
    checks = generated("ticketchecks", 50)
    path = tmp_path / "checks.csv"
    write_csv("ticketchecks", checks, path, ZURICH)
    code, out = run(invoke, "import", "--institution", "testvenue", "--stream",
                    "ticketchecks", str(path))
    assert code == 0, out
    assert "50 lines: 50 stored" in out
    assert warehouse_count(tmp_path, "ticket_checks") == 50
    code, out = run(invoke, "import", "--institution", "testvenue", "--stream", "contacts",
                    str(path))
    assert code == 2 and "takes JSON lines only" in out


def test_an_import_killed_half_way_resumes_and_loads_every_record_once(
        tmp_path, config_path, journal):
    orders = generated("orders", 30_000, seed=9)
    path = tmp_path / "orders.jsonl"
    write_jsonl(orders, path)
    env = {**os.environ, **SECRETS_ENV}
    args = [S360BRIDGE, "import", "-c", str(config_path),
            "--institution", "testvenue", "--stream", "orders", "--batch", "100"]
    first = subprocess.Popen([*args, "--no-deliver", str(path)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    engine_db = tmp_path / "engine.db"
    lines = 0
    try:
        deadline = time.monotonic() + 60
        while lines < 3000 and time.monotonic() < deadline and first.poll() is None:
            try:
                with sqlite3.connect(engine_db, timeout=5) as conn:
                    lines = conn.execute("SELECT lines FROM import_progress").fetchone()[0]
            except (sqlite3.OperationalError, TypeError):
                pass
            time.sleep(0.005)
        lock = sqlite3.connect(engine_db, timeout=30, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")  # the import now waits at its next commit
        stopped_at = lock.execute("SELECT lines FROM import_progress").fetchone()[0]
        first.send_signal(signal.SIGKILL)
        first.wait()
        lock.execute("ROLLBACK")
        lock.close()
    finally:
        if first.poll() is None:
            first.kill()
    assert 0 < stopped_at < 30_000, "the import was not interrupted half-way"
    with sqlite3.connect(engine_db) as conn:
        assert conn.execute("SELECT count(*) FROM inbox").fetchone()[0] == stopped_at
    second = subprocess.run([*args, str(path)], env=env, capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 0, second.stderr
    assert f"resumed after line {stopped_at}" in second.stdout
    assert f"{30_000 - stopped_at} stored, 0 already there" in second.stdout
    with sqlite3.connect(engine_db) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT record_key) FROM inbox_state "
                            "WHERE state = 'done'").fetchone() == (30_000, 30_000)
    assert warehouse_count(tmp_path, "orders") == 30_000
    assert set(journal.pushes("orders").values()) == {1}


# -- reconcile --------------------------------------------------------------------------------

def seed_world(tmp_path, invoke, stream: str, records: list[dict]) -> None:
    path = tmp_path / f"{stream}.jsonl"
    write_jsonl(records, path)
    code, out = run(invoke, "import", "--institution", "testvenue", "--stream", stream,
                    str(path))
    assert code == 0, out


def reconcile(invoke, tmp_path, stream: str, export: Path, *extra) -> tuple[int, str, list]:
    report = tmp_path / f"report-{stream}.jsonl"
    code, out = run(invoke, "reconcile", "--institution", "testvenue", "--stream", stream,
                    "--s360-export", str(export), "--target", "datx", "--report",
                    str(report), *extra)
    found = list(differences(report, "jsonl")) if report.exists() and code == 1 else []
    return code, out, found


def test_a_synchronised_stream_is_in_sync(tmp_path, invoke):
    orders = generated("orders", 200)
    seed_world(tmp_path, invoke, "orders", orders)
    export = tmp_path / "s360-orders.csv"
    write_csv("orders", orders, export, ZURICH)  # local times, amounts in currency units
    code, out, _ = reconcile(invoke, tmp_path, "orders", export)
    assert code == 0, out
    assert "S-360 export: 200 records; target datx: 200 records" in out
    assert "in sync" in out


def test_seeded_differences_are_each_found_and_nothing_else(tmp_path, invoke, bridge):
    orders = generated("orders", 300)
    s360 = copy.deepcopy(orders)
    kept = orders[:290] + orders[295:]  # 5 never reached the warehouse
    extra = generated("orders", 3, seed=77)  # 3 the warehouse has and S-360 does not
    seed_world(tmp_path, invoke, "orders", kept + extra)
    ids = [str(o["orderDetailsData"]["orderId"]) for o in s360]
    s360[10]["orderDetailsData"]["saleAmount"] += 1000  # changed amount
    s360[20]["orderDetailsData"]["orderState"] = "  closed "  # whitespace and case: equal?
    export = tmp_path / "s360-orders.csv"
    write_csv("orders", s360, export, ZURICH)
    code, out, found = reconcile(invoke, tmp_path, "orders", export)
    assert code == 1, out
    by_status = {}
    for d in found:
        by_status.setdefault(d["status"], set()).add((d["key"], d["field"]))
    assert by_status["missing_in_target"] == {(k, None) for k in ids[290:295]}
    assert by_status["missing_in_s360"] == {
        (str(o["orderDetailsData"]["orderId"]), None) for o in extra}
    # the amount, and the state (case matters for a state): nothing else, although every
    # export time is local without a zone and every warehouse time is UTC
    assert by_status["different"] == {(ids[10], "sale_amount"), (ids[20], "state")}
    amount = next(d for d in found if d["field"] == "sale_amount")
    assert float(amount["s360_value"]) * 1000 == int(amount["target_value"]) + 1000
    assert "missing in the target: 5; missing in S-360: 3; different: 2" in out
    (kept_run,) = reconcile_runs.runs(bridge)  # for the operator's console
    assert (kept_run["stream"], kept_run["target"], kept_run["summary"]["counts"]) == (
        "orders", "datx", {"missing_in_target": 5, "missing_in_s360": 3, "different": 2})
    assert len(reconcile_runs.run(bridge, kept_run["id"])["differences"]) == len(found)


def test_contacts_email_case_and_spaces_are_not_differences(tmp_path, invoke):
    people = [c for c in generated("contacts", 60) if "individualContact" in c][:40]
    seed_world(tmp_path, invoke, "contacts", people)
    s360 = copy.deepcopy(people)
    s360[0]["individualContact"]["email"] = s360[0]["individualContact"]["email"].upper()
    s360[1]["individualContact"]["individualLastname"] += "   "
    s360[2]["individualContact"]["email"] = "changed@example.org"
    export = tmp_path / "s360-contacts.csv"
    write_csv("contacts", s360, export, ZURICH)
    code, out, found = reconcile(invoke, tmp_path, "contacts", export)
    assert code == 1, out
    assert [(d["key"], d["status"], d["field"]) for d in found] == [
        (s360[2]["contactNumber"], "different", "email")]


def test_ticket_check_times_shifted_by_the_zone_are_equal(tmp_path, invoke):
    checks = generated("ticketchecks", 100)
    seed_world(tmp_path, invoke, "ticketchecks", checks)
    s360 = copy.deepcopy(checks)
    s360[5]["access_time"] = "2001-01-01 00:00:00"  # really different
    export = tmp_path / "s360-checks.csv"
    write_csv("ticketchecks", s360, export, ZURICH)
    code, out, found = reconcile(invoke, tmp_path, "ticketchecks", export, "--report",
                                 str(tmp_path / "checks.jsonl"))
    assert code == 1, out
    found = list(differences(tmp_path / "checks.jsonl", "jsonl"))
    assert [(d["key"], d["field"]) for d in found] == [
        (str(s360[5]["ticket_check_id"]), "access_time")]


@pytest.mark.parametrize("mistake, message", [
    ("--stream=coupons", "stream 'coupons' is not enabled"),
    ("--target=nowhere", "target 'nowhere' is not a target of orders"),
    ("no-column", "no column orderState"),
])
def test_reconcile_that_cannot_run_exits_2(tmp_path, invoke, mistake, message):
    export = tmp_path / "export.csv"
    export.write_text("orderId,saleAmount\n1,2\n", "utf-8")
    args = ["reconcile", "--institution", "testvenue", "--stream", "orders",
            "--s360-export", str(export)]
    if mistake.startswith("--"):
        args.append(mistake)
    code, out = run(invoke, *args)
    assert code == 2
    assert message in out


def test_repair_brings_both_sides_back_in_sync(tmp_path, monkeypatch, secrets_env, runner):
    """Orders are read again through the simulator's API, a contact is delivered again from
    the inbox, ticket checks come from the export itself; a second reconcile finds them all
    in sync."""
    w = World(tmp_path, monkeypatch)
    try:
        gen = Generator(21)
        people = gen.records("contacts", 30)
        orders = gen.records("orders", 60)
        checks = gen.records("ticketchecks", 40)
        w.api.stores["testvenue"].add(people)
        w.api.order_stores["testvenue"].add(orders)

        def invoke(*args):
            return runner.invoke(cli, [*args, "-c", str(w.config)])
        seed_world(tmp_path, invoke, "orders", orders[5:])  # 5 never arrived
        seed_world(tmp_path, invoke, "contacts", people)
        seed_world(tmp_path, invoke, "ticketchecks", checks[3:])  # 3 never arrived
        with sqlite3.connect(tmp_path / "warehouse.db") as conn:  # somebody edited the DWH
            conn.execute("UPDATE orders SET sale_amount = 1 WHERE order_id = ?",
                         (orders[30]["orderDetailsData"]["orderId"],))
            conn.execute("DELETE FROM contacts WHERE contact_number = ?",
                         (people[3]["contactNumber"],))
        with sqlite3.connect(tmp_path / "engine.db") as conn:  # and the inbox was purged
            conn.execute("DELETE FROM inbox WHERE record_key = ?",
                         (str(orders[0]["orderDetailsData"]["orderId"]),))
        for stream, records in (("orders", orders), ("contacts", people),
                                ("ticketchecks", checks)):
            export = tmp_path / f"s360-{stream}.csv"
            write_csv(stream, records, export, ZURICH)
            code, out, _ = reconcile(invoke, tmp_path, stream, export, "--repair")
            assert code == 1, out
            assert "need a human" in out
            code, out, found = reconcile(invoke, tmp_path, stream, export)
            assert code == 0, (out, found)
        assert w.calls("getOrderDetails") == 6  # 5 missing + 1 different
        assert w.calls("getContactData") == 0  # the deleted row came back from the inbox
    finally:
        w.close()


def test_the_simulator_writes_its_export(tmp_path, runner):
    from s360bridge.core.plugin.manager import Hooks
    Hooks().add_commands(cli)
    result = runner.invoke(cli, ["simulate-export", "--stream", "orders", "--records", "25",
                                 "--csv", str(tmp_path / "o.csv"), "--jsonl",
                                 str(tmp_path / "o.jsonl")])
    assert result.exit_code == 0, result.output
    with (tmp_path / "o.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 25 and set(rows[0]) >= {"orderId", "saleAmount", "creationDateTime"}
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 25
    assert json.loads((tmp_path / "o.jsonl").read_text().splitlines()[0])["orderDetailsData"]


def test_the_reconcile_hook_answers_for_every_stream(bridge):
    inst = bridge.institution("testvenue")
    for name in ("contacts", "orders", "ticketchecks"):
        spec = bridge.hooks.reconcile(inst, bridge.stream(name), bridge.target(inst, "datx"))
        assert spec.key and spec.fields and spec.target_rows is not None


def test_contacts_against_a_crm_export_file(tmp_path, monkeypatch, secrets_env, runner):
    """The CRM's side is its export; its columns are those the target's mapping writes."""
    w = World(tmp_path, monkeypatch)
    try:
        people = [c for c in Generator(8).records("contacts", 30) if "individualContact" in c]
        post(w.client, "contacts", people)
        w.drain()
        crm_export = tmp_path / "crm.csv"
        with crm_export.open("w", newline="") as f:
            out = csv.DictWriter(f, fieldnames=["crm_id", "contact_number", "first_name",
                                                "last_name", "email"], extrasaction="ignore")
            out.writeheader()
            rows = sorted(w.crm.contacts.values(), key=lambda c: c["crm_id"])
            rows[0] = {**rows[0], "email": "somebody.else@example.org"}
            out.writerows(rows[:-1])  # the CRM lost one
        export = tmp_path / "s360.csv"
        write_csv("contacts", people, export, ZURICH)
        report = tmp_path / "crm-report.csv"
        result = runner.invoke(cli, [
            "reconcile", "-c", str(w.config), "--institution", "testvenue", "--stream",
            "contacts", "--s360-export", str(export), "--target", "crm", "--target-export",
            str(crm_export), "--report", str(report)])
        assert result.exit_code == 1, result.output
        found = {(d["key"], d["status"], d["field"] or None)
                 for d in differences(report, "csv")}
        assert found == {(rows[0]["contact_number"], "different", "email"),
                         (rows[-1]["contact_number"], "missing_in_target", None)}
    finally:
        w.close()


def test_export_columns_compared_fields_and_zone_come_from_the_config(
        tmp_path, secrets_env, runner):
    from .conftest import base_config, bridge_of, write_config
    cfg = base_config(tmp_path)
    cfg["reconcile"] = {"orders": {"columns": {"order_id": "ORDER_ID",
                                               "sale_amount": "AMOUNT"},
                                   "compare": ["sale_amount"], "amount_unit": "thousandths"}}
    config = write_config(tmp_path, cfg)
    bridge_of(config).close()

    def invoke(*args):
        return runner.invoke(cli, [*args, "-c", str(config)])
    orders = generated("orders", 20)
    seed_world(tmp_path, invoke, "orders", orders)
    export = tmp_path / "custom.csv"
    with export.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["ORDER_ID", "AMOUNT", "STATE"])
        for i, o in enumerate(orders):
            d = o["orderDetailsData"]
            out.writerow([d["orderId"], d["saleAmount"] + (5 if i == 3 else 0), "ignored"])
    code, out, found = reconcile(invoke, tmp_path, "orders", export)
    assert code == 1, out
    assert [(d["key"], d["field"]) for d in found] == [
        (str(orders[3]["orderDetailsData"]["orderId"]), "sale_amount")]
    cfg["reconcile"]["orders"]["timezone"] = "Mars/Olympus"
    write_config(tmp_path, cfg)
    code, out, _ = reconcile(invoke, tmp_path, "orders", export)
    assert code == 2 and "unknown time zone 'Mars/Olympus'" in out
