"""Reconcile: both sides compared by key, with seeded differences found (and nothing else),
then repaired; the configuration's columns, fields and zone."""

from __future__ import annotations

import copy
import csv
import json
import sqlite3
from pathlib import Path

import pytest

from s360bridge.core.cli.main import cli
from s360bridge.core.operations import reconcile_runs
from s360bridge.core.operations.reconcile import differences
from s360bridge.simulator.data import Generator
from s360bridge.simulator.export import write_csv, write_jsonl

from .conftest import post
from .helpers.history import ZURICH, generated, run
from .helpers.world import World


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


def test_a_bad_row_past_what_the_sniffer_reads_names_its_file(tmp_path):
    """The sides are read as the comparison joins them: a row that is not CSV after all
    (here invalid UTF-8, past the rows DuckDB samples for the dialect) still fails with the
    file's name and the line, not a database error, and without the row's data."""
    from s360bridge.core.operations.reconcile import (
        Field,
        ReconcileError,
        Reconciliation,
        Side,
        compare,
    )
    key, amount = Field("id", "text", "ID"), Field("amount", "amount", "AMOUNT")
    good, bad = tmp_path / "target.csv", tmp_path / "s360.csv"
    rows = [f"{i},{i}.5".encode() for i in range(30_000)]
    good.write_bytes(b"id,amount\n" + b"\n".join(rows) + b"\n")
    rows[25_000] += b"\xff"
    bad.write_bytes(b"ID,AMOUNT\n" + b"\n".join(rows) + b"\n")
    spec = Reconciliation(key, [amount], Side({"id": "id", "amount": "amount"}))
    with pytest.raises(ReconcileError, match=f"{bad}: cannot read as CSV: .*Line: 25002 "
                                             ".*Invalid unicode") as failed:
        compare(spec, Side({"id": "ID", "amount": "AMOUNT"}), bad, good,
                tmp_path / "report.csv")
    assert "25000.5" not in str(failed.value)  # the row's data is not repeated
    same = compare(spec, Side({"id": "id", "amount": "amount"}), good, good,
                   tmp_path / "report.csv")
    assert same.in_sync and same.s360_records == same.target_records == 30_000


def test_a_key_written_twice_is_counted_and_reported_as_written(tmp_path):
    """Each side's records are its file's rows, a key written twice counted twice; each pair
    the join makes of it is compared (a difference reported once per pair); a row without a
    key is missing on the other side, whichever side has it."""
    s360, target = tmp_path / "s360.csv", tmp_path / "target.csv"
    s360.write_text("ID,AMOUNT\n1,1.5\n2,2.5\n2,2.5\n3,3.5\n3,3.5\n4,4\n,9\n5,5\n", "utf-8")
    target.write_text("id,amount\n1,1500\n2,2500\n3,3500\n3,3600\n4,4000\n4,4000\n,7\n6,6000\n",
                      "utf-8")
    summary, rows = amounts_compared(tmp_path, s360, target, "AMOUNT")
    assert (summary.s360_records, summary.target_records) == (8, 8)
    assert summary.counts == {"missing_in_target": 2, "missing_in_s360": 2, "different": 2}
    assert rows == [
        ("", "missing_in_s360", "", ""), ("", "missing_in_target", "", ""),
        ("3", "different", "3.5", "3600"), ("3", "different", "3.5", "3600"),
        ("5", "missing_in_target", "", ""), ("6", "missing_in_s360", "", "")]


def test_quotes_in_a_file_name_or_column_and_a_sniffed_dialect(tmp_path):
    """Each file is read with the dialect DuckDB sniffed (here semicolons, a quoted amount
    with a comma, a folder and a column named with quotes), and its records are counted."""
    folder = tmp_path / "O'Brien's exports"
    folder.mkdir()
    s360, target = folder / "s360 'orders'.csv", folder / "target.csv"
    s360.write_text('ID;"the ""amount"""\n1;"1,000.5"\n2;2\n3;3\n', "utf-8")
    target.write_text("id,amount\n1,1000500\n2,2001\n", "utf-8")
    summary, rows = amounts_compared(tmp_path, s360, target, 'the "amount"')
    assert (summary.s360_records, summary.target_records) == (3, 2)
    assert summary.counts == {"missing_in_target": 1, "missing_in_s360": 0, "different": 1}
    assert rows == [
        ("2", "different", "2", "2001"), ("3", "missing_in_target", "", "")]


def amounts_compared(tmp_path, s360, target, amount_column: str):
    """S-360's file (``ID`` and ``amount_column``, in currency units) compared with the
    target's (``id``, ``amount`` in thousandths): the summary and the report's rows, sorted."""
    from s360bridge.core.operations.reconcile import Field, Reconciliation, Side, compare

    spec = Reconciliation(Field("id", "text", "ID"), [Field("amount", "amount", "AMOUNT")],
                          Side({"id": "id", "amount": "amount"}, "thousandths"))
    report = tmp_path / "report.csv"
    summary = compare(spec, Side({"id": "ID", "amount": amount_column}), s360, target, report)
    return summary, sorted((d["key"], d["status"], d["s360_value"], d["target_value"])
                           for d in differences(report, "csv"))
