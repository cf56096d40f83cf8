"""The operator's console through Flask's test client: nothing without the listener's
credentials, no action without its CSRF token, and the operator's flows: the overview, search
by key, dead letters replayed after a dry run, a quarantined record reprocessed after the fix,
pause and resume, reconcile runs, the audit trail, and the offers' page a plugin adds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import text

from s360bridge.core.operations import erasure, pause, reconcile_runs
from s360bridge.core.operations.audit import Actor, entries
from s360bridge.core.operations.reconcile import Summary
from s360bridge.core.operator.app import create_operator_app
from s360bridge.core.operator.console import problems
from s360bridge.core.pipeline.receiver import create_app
from s360bridge.core.storage.tables import INBOX

from .conftest import bridge_of, drain, fixture, post, write_config
from .helpers.gate import GatePlugin
from .helpers.metrics import OPERATOR_AUTH, gate_console_config
from .helpers.plugins import registered

CHECK_ID = "10228845124401"


@pytest.fixture
def venue(tmp_path, monkeypatch, secrets_env):
    """Orders to the warehouse and to a gate that refuses them (dead letters); the console."""
    cfg = gate_console_config(tmp_path, monkeypatch)
    with registered(GatePlugin(), "gate-plugin"):
        path = write_config(tmp_path, cfg)
        bridge = bridge_of(path)
        yield bridge, create_app(bridge).test_client(), cfg, path
        bridge.close()


def console(bridge):
    return create_operator_app(bridge).test_client()


def token(page) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def test_a_visitor_without_credentials_gets_nothing(venue):
    bridge, *_ = venue
    ops = console(bridge)
    for method, path in (("get", "/"), ("get", "/search?institution=testvenue&key=1"),
                         ("get", "/problems"), ("get", "/audit"), ("get", "/offers"),
                         ("post", "/targets/testvenue/gate/pause"), ("post", "/replay")):
        for auth in (None, ("ops", "wrong")):
            r = getattr(ops, method)(path, auth=auth)
            assert (r.status_code, r.data) == (401, b""), path
    assert pause.paused(bridge) == []


def test_an_action_needs_the_pages_csrf_token(venue):
    bridge, *_ = venue
    ops = console(bridge)
    forged = ops.post("/targets/testvenue/gate/pause", auth=OPERATOR_AUTH)
    assert forged.status_code == 400 and "CSRF" in forged.text
    assert pause.paused(bridge) == []
    page = ops.get("/", auth=OPERATOR_AUTH)
    done = ops.post("/targets/testvenue/gate/pause", data={"csrf_token": token(page)},
                    auth=OPERATOR_AUTH, follow_redirects=True)
    assert done.status_code == 200 and "testvenue/gate paused" in done.text
    assert [(p["target"], p["paused_by"]) for p in pause.paused(bridge)] == [("gate", "ops")]
    assert [(e["actor"], e["via"], e["action"]) for e in entries(bridge)] == [
        ("ops", "console", "pause")]


def test_dead_letters_found_by_key_replayed_after_a_dry_run(venue):
    bridge, receiver, *_ = venue
    assert post(receiver, "orders", fixture("order_sale.json")).json["accepted"] == 2
    drain(bridge)
    ops = console(bridge)
    overview = ops.get("/", auth=OPERATOR_AUTH).text
    row = re.search(r'id="stream-testvenue-orders">(.*?)</tr>', overview, re.S).group(1)
    # (the counters are this test process's, shared with other tests; the database's are not)
    assert re.findall(r"<td class=\"num[^\"]*\">(\d+)</td>", row)[-2:] == ["2", "0"]
    page = ops.get("/problems?target=gate", auth=OPERATOR_AUTH)
    keys = re.findall(r"key=(\d+)\">", page.text)
    assert len(keys) == 2 and "the gate refuses it" in page.text
    other = ops.get("/problems?target=datx", auth=OPERATOR_AUTH).text  # the filter filters
    assert "no dead letter matching these filters" in other and keys[0] not in other
    found = ops.get(f"/search?institution=testvenue&key={keys[0]}", auth=OPERATOR_AUTH).text
    assert "version 2 · dead" in found and "refused <code>the gate refuses it" in found
    form = {"csrf_token": token(page), "target": "gate", "institution": "testvenue"}
    dry = ops.post("/replay", data=form, auth=OPERATOR_AUTH)
    assert "This would act on <strong>2</strong> dead letter(s)" in dry.text
    through = re.search(r'name="through" value="(\d+)"', dry.text).group(1)
    assert entries(bridge) == []  # a dry run changes nothing and is not in the trail
    assert ops.post("/replay", data={**form, "confirm": "yes"},  # no dry run: refused
                    auth=OPERATOR_AUTH).status_code == 400
    late = fixture("order_sale.json")[:1]
    late[0] = {"orderDetailsData": {**late[0]["orderDetailsData"], "orderId": 10000815999}}
    assert post(receiver, "orders", late).json["accepted"] == 1
    drain(bridge)  # a third dead letter, after the dry run: not in what was confirmed
    bridge.target(bridge.institution("testvenue"), "gate").mode = "open"  # the fix
    done = ops.post("/replay", data={**form, "confirm": "yes", "through": through},
                    auth=OPERATOR_AUTH, follow_redirects=True)
    assert "2 dead letter(s) queued again for delivery" in done.text
    assert drain(bridge) == 2
    after = ops.get(f"/search?institution=testvenue&key={keys[0]}", auth=OPERATOR_AUTH).text
    assert re.search(r"<td>gate</td><td class=\"state\">done", after), after
    assert [(e["action"], e["detail"]["replayed"]) for e in entries(bridge)] == [("replay", 2)]
    assert "10000815999" in ops.get("/problems", auth=OPERATOR_AUTH).text  # still dead


def test_the_dead_letters_page_reads_their_partial_index(venue):
    """Not the inbox's primary key walked backwards looking for dead versions: at ten
    million rows that is seconds a page."""
    bridge, *_ = venue
    query = problems.dead_letters_query(["testvenue"]).order_by(INBOX.c.id.desc()).limit(200)
    sql = query.compile(bridge.engine, compile_kwargs={"literal_binds": True})
    with bridge.engine.connect() as conn:
        plan = str(conn.execute(text(f"EXPLAIN QUERY PLAN {sql}")).all())
    assert "USING INDEX ix_inbox_dead" in plan, plan


def test_a_quarantined_record_reprocessed_after_the_config_is_fixed(venue, tmp_path):
    bridge, receiver, cfg, path = venue
    row = dict(fixture("ticketchecks.json")[0])
    row["scan_id"] = row.pop("ticket_check_id")  # the venue's query names the id differently
    assert post(receiver, "ticketchecks", [row]).json["quarantined"] == 1
    ops = console(bridge)
    found = ops.get(f"/search?institution=testvenue&key={CHECK_ID}", auth=OPERATOR_AUTH).text
    assert "quarantined (ticketchecks, held" in found and "ticket_check_id" in found
    page = ops.get("/problems", auth=OPERATOR_AUTH)
    entry = re.search(r'name="entry" value="(\d+)"', page.text).group(1)
    form = {"csrf_token": token(page), "entry": entry}
    still = ops.post("/reprocess", data=form, auth=OPERATOR_AUTH)
    assert "0\nwould be accepted" in still.text and "1 are still" in still.text
    cfg["streams"]["ticketchecks"]["options"] = {"columns": {"ticket_check_id": "scan_id"}}
    write_config(tmp_path, cfg)  # the fix, and the listener started again with it
    fixed = bridge_of(path)  # (the gate plugin is still registered by the fixture)
    ops = console(fixed)
    page = ops.get("/problems", auth=OPERATOR_AUTH)
    form = {"csrf_token": token(page), "entry": entry}
    dry = ops.post("/reprocess", data=form, auth=OPERATOR_AUTH)
    assert "1\nwould be accepted" in dry.text
    done = ops.post("/reprocess", data={**form, "confirm": "yes"}, auth=OPERATOR_AUTH,
                    follow_redirects=True)
    assert "1 quarantined record(s) reprocessed: 1 accepted" in done.text
    assert drain(fixed) == 1
    after = ops.get(f"/search?institution=testvenue&key={CHECK_ID}", auth=OPERATOR_AUTH).text
    assert re.search(r"<td>datx</td><td class=\"state\">done", after), after
    fixed.close()


def test_a_paused_target_shows_what_it_holds_and_resumes(venue):
    bridge, receiver, *_ = venue
    ops = console(bridge)
    page = ops.get("/", auth=OPERATOR_AUTH)
    ops.post("/targets/testvenue/journal/pause", data={"csrf_token": token(page)},
             auth=OPERATOR_AUTH)
    checks = fixture("ticketchecks.json")[:2]
    assert post(receiver, "ticketchecks", checks).json["accepted"] == 2
    assert drain(bridge) == 2  # to the warehouse; held for the journal
    held = ops.get("/", auth=OPERATOR_AUTH).text
    row = re.search(r'id="target-testvenue-journal">(.*?)</tr>', held, re.S).group(1)
    assert "paused</span> by ops" in row and "2 held" in row
    assert re.search(r'class="num backlog">2<', row)  # the held records are its backlog
    done = ops.post("/targets/testvenue/journal/resume", data={"csrf_token": token(page)},
                    auth=OPERATOR_AUTH, follow_redirects=True)
    assert "testvenue/journal resumed: 2 record(s) queued again" in done.text
    assert drain(bridge) == 2
    assert [e["action"] for e in entries(bridge)] == ["resume", "pause"]
    trail = ops.get("/audit", auth=OPERATOR_AUTH).text
    assert trail.count("<td>ops</td><td>console</td>") == 2


def test_reconcile_runs_and_their_differences(venue, tmp_path):
    bridge, *_ = venue
    report = Path(tmp_path / "reconcile.csv")
    report.write_text("key,status,field,s360_value,target_value\n"
                      "10000815533,different,total,45000,44000\n"
                      "10000815534,missing_in_target,,,\n")
    summary = Summary(3, 2, {"missing_in_target": 1, "missing_in_s360": 0, "different": 1},
                      {"total": 1})
    run_id = reconcile_runs.kept(bridge, "testvenue", "orders", "datx", summary, report, "csv")
    ops = console(bridge)
    listed = ops.get("/reconcile", auth=OPERATOR_AUTH).text
    assert "missing_in_target 1, different 1" in listed
    shown = ops.get(f"/reconcile/{run_id}", auth=OPERATOR_AUTH).text
    assert "<td>different</td><td>total</td></tr>" in shown
    assert "45000" not in shown  # values stay in the report file, never in the database
    assert ops.get("/reconcile/999", auth=OPERATOR_AUTH).status_code == 404


def test_forget_removes_a_contact_from_the_reconcile_runs(venue, tmp_path):
    bridge, *_ = venue
    report = Path(tmp_path / "contacts.csv")
    report.write_text("key,status,field,s360_value,target_value\n"
                      "0004711,different,email,a@example.org,b@example.org\n"
                      "0004712,missing_in_target,,,\n")
    summary = Summary(2, 1, {"missing_in_target": 1, "different": 1}, {"email": 1})
    run_id = reconcile_runs.kept(bridge, "testvenue", "contacts", "datx", summary, report,
                                 "csv")
    removed = erasure.forget_contact(bridge, "testvenue", "0004711", actor=Actor("dpo"))
    assert "reconcile runs: 1 difference(s)" in removed
    assert [d["key"] for d in reconcile_runs.run(bridge, run_id)["differences"]] == ["0004712"]


def test_console_pages_are_never_framed_nor_cached(venue):
    bridge, *_ = venue
    r = console(bridge).get("/", auth=OPERATOR_AUTH)
    assert (r.headers["X-Frame-Options"], r.headers["Cache-Control"]) == ("DENY", "no-store")
    assert r.headers["Content-Security-Policy"] == "frame-ancestors 'none'"


def test_forget_a_contact_after_a_confirmation(venue):
    bridge, receiver, *_ = venue
    people = fixture("contacts_person.json")
    number = people[0]["contactNumber"]
    assert post(receiver, "contacts", people).json["accepted"] == 2
    drain(bridge)
    ops = console(bridge)
    page = ops.get("/forget", auth=OPERATOR_AUTH)
    form = {"csrf_token": token(page), "institution": "testvenue", "contact": number}
    asked = ops.post("/forget", data=form, auth=OPERATOR_AUTH)
    assert f"Forget contact <strong>{number}</strong>" in asked.text
    assert "1 version" in ops.get(f"/search?institution=testvenue&key={number}",
                                  auth=OPERATOR_AUTH).text  # nothing erased yet
    done = ops.post("/forget", data={**form, "confirm": "yes"}, auth=OPERATOR_AUTH,
                    follow_redirects=True)
    assert f"contact {number} of testvenue forgotten: " in done.text
    assert "engine inbox: 1 version(s)" in done.text
    assert "Nothing found" in ops.get(f"/search?institution=testvenue&key={number}",
                                      auth=OPERATOR_AUTH).text
    (entry,) = entries(bridge, action="forget")
    assert (entry["actor"], entry["via"], entry["detail"]["contact"]) == ("ops", "console",
                                                                         number)
