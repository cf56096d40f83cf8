"""Operator commands: status, quarantine, forget, retention purge, and secrets kept out of sight."""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time

import pytest
from sqlalchemy import func, select

from s360bridge.core.errors import S360BridgeError
from s360bridge.core.operations import audit, erasure, retention
from s360bridge.core.operations.audit import Actor
from s360bridge.core.operations.retention import purge
from s360bridge.core.pipeline.claims import claim
from s360bridge.core.pipeline.receiver import create_app
from s360bridge.core.pipeline.worker import Worker
from s360bridge.core.storage.tables import INBOX, QUARANTINE, STATES
from s360bridge.plugins.sql import SqlTarget

from .conftest import API_KEY, PASSWORD, Journal, base_config, drain, fixture, post, write_config
from .helpers.clock import erasure_gives_up_at_once


def test_status_counts_per_institution_stream_and_state(bridge, client, invoke):
    post(client, "orders", fixture("order_sale.json"))
    post(client, "contacts", [{"contactNumber": 12}])  # quarantined
    drain(bridge)
    post(client, "orders", fixture("order_refund.json"))  # pending
    result = invoke("status", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)["testvenue"]
    assert report["streams"]["orders"]["states"] == {"done": 2, "pending": 1}
    assert report["streams"]["orders"]["oldest_pending_seconds"] >= 0
    assert report["streams"]["contacts"]["quarantined"] == 1
    assert report["targets"]["datx"].startswith("sql sqlite:///")
    text = invoke("status")
    assert "orders        done 2, pending 1" in text.output


def test_secrets_never_appear_in_status_logs_or_errors(bridge, client, invoke, caplog):
    caplog.set_level(logging.DEBUG)
    post(client, "contacts", fixture("contacts_person.json"))
    post(client, "contacts", b"[{}]", auth=("s360", "wrong-password"))
    post(client, "ticketchecks", b"[{}]", headers={"x-api-key": "wrong"})
    drain(bridge)
    assert "POST /s360/contacts/testvenue from 127.0.0.1 refused with 401: missing or wrong " \
           "basic authentication" in caplog.text  # the operator sees why, not with what
    outputs = [invoke("status", "--json").output, invoke("status").output,
               invoke("check-config").output, caplog.text,
               repr(bridge.settings), str(bridge.settings)]
    for text in outputs:
        assert PASSWORD not in text and API_KEY not in text
    assert "<secret $TEST_WEBHOOK_PASSWORD>" in repr(bridge.settings)


def test_quarantine_list_show_and_reprocess_after_a_config_fix(bridge, client, invoke,
                                                               tmp_path):
    row = dict(fixture("ticketchecks.json")[0])
    row["scan_id"] = row.pop("ticket_check_id")  # the venue's query names the id differently
    assert post(client, "ticketchecks", [row]).json["quarantined"] == 1

    listed = invoke("quarantine", "list")
    assert "testvenue/ticketchecks" in listed.output and "ticket_check_id" in listed.output
    entry_id = listed.output.split()[0]
    shown = invoke("quarantine", "show", entry_id)
    assert '"scan_id": 10228845124401' in shown.output

    still = invoke("quarantine", "reprocess")
    assert "accepted 0, duplicates 0, still invalid 1" in still.output

    # the fix: map the venue's column name in the stream options
    cfg = base_config(tmp_path)
    cfg["streams"]["ticketchecks"]["options"] = {"columns": {"ticket_check_id": "scan_id"}}
    write_config(tmp_path, cfg)
    fixed = invoke("quarantine", "reprocess")
    assert "accepted 1, duplicates 0, still invalid 0" in fixed.output
    assert invoke("quarantine", "list").output == ""
    with bridge.engine.connect() as conn:
        assert conn.execute(select(INBOX.c.record_key)).scalar_one() == "10228845124401"


def test_forget_waits_for_the_contact_s_delivery_in_flight(any_bridge, monkeypatch, tmp_path):
    """A worker has claimed the contact's version and is about to push it when the erasure
    starts: the erasure waits until that batch is delivered and completed, and then erases it
    from the targets too. Erased first, the targets would get the contact back."""
    post(create_app(any_bridge).test_client(), "contacts", fixture("contacts_person.json"))
    pushing, go = threading.Event(), threading.Event()
    real_deliver = SqlTarget.deliver

    def held_back(self, institution, stream, items):
        pushing.set()
        assert go.wait(30)
        return real_deliver(self, institution, stream, items)

    monkeypatch.setattr(SqlTarget, "deliver", held_back)
    worker = threading.Thread(target=Worker(any_bridge).run_once)
    worker.start()
    assert pushing.wait(30)
    waits = []

    def let_it_deliver(seconds):  # the erasure saw the lease: the worker goes on, and ends
        waits.append(seconds)
        go.set()
        worker.join(30)

    monkeypatch.setattr(erasure, "_pause", let_it_deliver)
    removed = erasure.forget_contact(any_bridge, "testvenue", "3346662", actor=Actor("dpo"))
    go.set()
    worker.join(30)
    assert not worker.is_alive()
    assert len(waits) == 1
    assert "engine inbox: 1 version(s)" in removed
    assert "target datx: 1 row(s) from table contacts" in removed
    assert set(Journal(tmp_path / "journal.jsonl").pushes()) == {"0004711"}  # the other one
    target = any_bridge.target(any_bridge.institution("testvenue"), "datx")
    with target.engine.connect() as conn:
        left = [r[0] for r in conn.exec_driver_sql("SELECT contact_number FROM contacts")]
    assert left == ["0004711"]
    with any_bridge.engine.connect() as conn:
        assert [r[0] for r in conn.execute(select(INBOX.c.record_key))] == ["0004711"]


def test_forget_gives_up_on_a_delivery_that_outlasts_the_lease(bridge, client, monkeypatch):
    """A worker still holding the contact's version after ``engine.lease_seconds`` (renewing
    its lease against a slow target): the erasure stops with a message that says so, and has
    erased nothing."""
    post(client, "contacts", fixture("contacts_person.json"))
    assert claim(bridge.engine, ["testvenue"], 10, 3600).seqs
    erasure_gives_up_at_once(monkeypatch)
    with pytest.raises(S360BridgeError, match="still holds it; the erasure stopped at that step"):
        erasure.forget_contact(bridge, "testvenue", "3346662", actor=Actor("dpo"))
    with bridge.engine.connect() as conn:
        assert sorted(r[0] for r in conn.execute(select(INBOX.c.record_key))) == [
            "0004711", "3346662"]
    [entry] = audit.entries(bridge, action="forget")  # the request, and where it stopped
    assert entry["detail"]["removed"] == []
    assert "still holds it" in entry["detail"]["stopped"]


def test_forget_says_every_ten_seconds_that_it_still_waits(bridge, client, monkeypatch,
                                                             caplog):
    """A wait of up to ``engine.lease_seconds`` (two minutes by default) is not silent: a line
    at once, then one every ``PROGRESS_SECONDS`` (ten), each with the time waited and the
    limit."""
    post(client, "contacts", fixture("contacts_person.json"))
    assert claim(bridge.engine, ["testvenue"], 10, 3600).seqs
    seconds = iter(range(0, 10_000, 3))  # each look at the delivery 3 s after the one before
    monkeypatch.setattr(erasure, "_clock", lambda: next(seconds))
    monkeypatch.setattr(erasure, "_pause", lambda seconds: None)
    with caplog.at_level(logging.INFO, "s360bridge.erasure"), \
            pytest.raises(S360BridgeError, match="still holds it"):
        erasure.forget_contact(bridge, "testvenue", "3346662", actor=Actor("dpo"))
    waited = [re.search(r"\((\d+) s of at most ([\d.]+)", r.getMessage()).groups()
              for r in caplog.records if "in flight" in r.getMessage()]
    limit = bridge.settings.engine.lease_seconds
    step = math.ceil(erasure.PROGRESS_SECONDS / 3) * 3  # the first look at or past each mark
    assert waited == [(str(s), f"{limit:g}") for s in range(3, math.ceil(limit), step)]
    assert len(waited) > 3


def test_forget_erases_a_contact_everywhere_and_says_what(bridge, client, invoke, tmp_path):
    post(client, "contacts", fixture("contacts_person.json"))
    post(client, "contacts", [{"contactNumber": "0004711", "individualContact": {"email": 5}}])
    drain(bridge)
    result = invoke("forget", "--institution", "testvenue", "--contact", "0004711")
    assert result.exit_code == 0, result.output
    assert "engine inbox: 1 version(s)" in result.output
    assert "engine quarantine: 1 record(s)" in result.output
    assert "target datx: 1 row(s) from table contacts" in result.output
    assert "target journal: 1 journal line(s)" in result.output
    assert set(Journal(tmp_path / "journal.jsonl").pushes()) == {"3346662"}
    target = bridge.target(bridge.institution("testvenue"), "datx")
    with target.engine.connect() as conn:
        left = [r[0] for r in conn.exec_driver_sql("SELECT contact_number FROM contacts")]
    assert left == ["3346662"]
    with bridge.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(QUARANTINE)).scalar_one() == 0
        assert [r[0] for r in conn.execute(select(INBOX.c.record_key))] == ["3346662"]


def test_purge_keeps_what_is_recent_pending_or_dead(bridge, client, monkeypatch):
    monkeypatch.setattr(retention, "PURGE_CHUNK", 1)  # several transactions
    post(client, "orders", fixture("order_sale.json"))
    drain(bridge)
    post(client, "orders", fixture("order_refund.json"))  # still pending
    later = time.time() + bridge.settings.engine.retention_hours * 3600 + 60
    assert purge(bridge, now=time.time()) == 0
    assert purge(bridge, now=later) == 2
    with bridge.engine.connect() as conn:
        assert [r[0] for r in conn.execute(select(STATES.c.state))] == ["pending"]


def test_check_config_describes_the_endpoints(invoke):
    result = invoke("check-config")
    assert result.exit_code == 0
    assert "POST /s360/contacts/testvenue  enabled, auth basic, targets datx, journal" \
        in result.output
