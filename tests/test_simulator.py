"""The simulator's webhook side over real HTTP on loopback: data, batching, resends, abandonment."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from s360bridge.core.cli.main import cli
from s360bridge.core.pipeline.processes import Process
from s360bridge.core.plugin.manager import Hooks
from s360bridge.simulator.data import Generator
from s360bridge.simulator.webhooks import MAX_TRIES, WebhookQueue, WebhookSettings

from .conftest import API_KEY, PASSWORD, SECRETS_ENV, base_config, drain, write_config


@pytest.fixture
def live(bridge):
    """The receiver served by waitress on a free loopback port (no worker)."""
    proc = Process(bridge, receiver=True, workers=0, scheduler=False, port=0)
    proc.start()
    yield proc
    proc.shutdown()


AUTH = {"contacts": ("basic", "s360", PASSWORD), "orders": ("none",),
        "ticketchecks": ("api_key", "x-api-key", API_KEY)}


def queue(live, stream: str, **settings) -> WebhookQueue:
    return WebhookQueue(WebhookSettings(f"{live.url}/s360/{stream}/testvenue",
                                        auth=AUTH[stream], **settings))


def test_same_seed_same_data():
    assert Generator(7).records("orders", 20) == Generator(7).records("orders", 20)
    assert Generator(7).records("orders", 20) != Generator(8).records("orders", 20)


TABLES = {"contacts": "contacts", "orders": "orders", "ticketchecks": "ticket_checks"}


@pytest.mark.parametrize("stream", ["contacts", "orders", "ticketchecks"])
def test_simulator_to_receiver_to_inbox_to_warehouse(bridge, live, journal, stream):
    gen = Generator(3)
    gen.records("contacts", 30)  # orders refer to existing contacts
    q = queue(live, stream, batch_size=500, bucket_size=50)
    q.enqueue(gen.records(stream, 200))
    report = q.run(threading.Event())
    assert (report.delivered, report.failed_posts, report.posts) == (200, 0, 4)
    drain(bridge)
    assert sum(journal.pushes(stream).values()) == 200
    target = bridge.target(bridge.institution("testvenue"), "datx")
    with target.engine.connect() as conn:
        n = conn.exec_driver_sql(f"SELECT count(*) FROM {TABLES[stream]}").scalar_one()
    assert n == 200


def test_generated_orders_cover_every_kind(bridge):
    orders = [o["orderDetailsData"] for o in Generator(1).records("orders", 200)]
    assert {(o["orderType"], o["orderState"]) for o in orders} == {
        ("SALE", "CLOSED"), ("REFUND_CLIENT", "CLOSED"), ("RESERVATION", "CLOSED"),
        ("SALE", "ABANDONED")}
    contacts = Generator(1).records("contacts", 200)
    assert {c["type"] for c in contacts} == {"INDIVIDUAL", "STRUCTURE"}
    assert any(c["contactNumber"].startswith("0") for c in contacts)


def test_at_most_s_records_a_run_and_bs_a_post(live):
    q = queue(live, "orders", batch_size=20, bucket_size=7)
    q.enqueue(Generator(1).records("orders", 45))
    first = q.run_once()
    assert (first.posts, first.delivered, q.pending) == (3, 20, 25)  # 7 + 7 + 6
    second, third = q.run_once(), q.run_once()
    assert (second.delivered, third.delivered, q.pending) == (20, 5, 0)


def test_single_object_payloads_as_in_the_order_example(bridge, live):
    q = queue(live, "orders", bucket_size=1, single_object=True)
    q.enqueue(Generator(1).records("orders", 3))
    assert q.run_once().statuses == [200, 200, 200]


def test_refused_payload_is_resent_the_same_until_accepted(bridge, live, journal):
    q = queue(live, "contacts", batch_size=10, bucket_size=10)
    q.settings.auth = ("basic", "s360", "an-old-password")
    q.enqueue(Generator(1).records("contacts", 10))
    for _ in range(3):
        assert q.run_once().statuses == [401]
    assert q.pending == 10 and q.retrying[0].tries == 3
    q.settings.auth = AUTH["contacts"]  # the venue's admin fixes the interface
    assert q.run_once().statuses == [200]
    drain(bridge)
    assert len(journal.pushes("contacts")) == 10


def test_abandoned_after_twelve_refusals(live, caplog):
    q = queue(live, "ticketchecks")
    q.settings.auth = ("api_key", "x-api-key", "wrong")
    q.enqueue(Generator(1).records("ticketchecks", 1))
    for _ in range(MAX_TRIES):
        q.run_once()
    assert (q.pending, len(q.abandoned), q.total.abandoned) == (0, 1, 1)
    assert q.total.posts == MAX_TRIES == 12
    assert "abandoned after 12 tries" in caplog.text
    assert q.run_once().posts == 0


def test_demo_runs_the_main_job_and_a_rerun_is_all_duplicates(tmp_path, monkeypatch, runner):
    """`make demo` in small: the bridge fed by the simulator until everything is delivered."""
    for name in SECRETS_ENV:
        monkeypatch.setenv(name, "")  # unset for the demo, which makes up its own; restored after
    monkeypatch.delenv("S360BRIDGE_DATABASE_URL", raising=False)
    path = write_config(tmp_path, base_config(tmp_path))
    Hooks().add_commands(cli)
    args = ["demo", "-c", str(path), "--records", "30", "--every", "0.05", "--timeout", "60"]
    first = runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "generated secrets for TEST_EXPORT_KEY, TEST_WEBHOOK_PASSWORD" in first.output
    for stream, posts in (("contacts", 2), ("orders", 2), ("ticketchecks", 1)):  # bs 20, 20, 50
        assert f"testvenue/{stream}: 30 sent in {posts} POSTs" in first.output
    assert first.output.count("30 accepted, 0 duplicates, 0 quarantined") == 3
    with sqlite3.connect(tmp_path / "warehouse.db") as conn:
        counts = [conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("contacts", "orders", "ticket_checks")]
    assert counts == [30, 30, 30]
    again = runner.invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert again.output.count("0 accepted, 30 duplicates, 0 quarantined") == 3


def test_simulate_pushes_to_a_running_receiver(bridge, live, runner, config_path):
    Hooks().add_commands(cli)
    result = runner.invoke(cli, ["simulate", "-c", str(config_path), "--url", live.url,
                                 "--stream", "ticketchecks", "--records", "60", "--every", "0"])
    assert result.exit_code == 0, result.output
    assert "testvenue/ticketchecks: 60 sent in 2 POSTs (0 refused, 0 abandoned): 60 accepted, " \
           "0 duplicates, 0 quarantined" in result.output


def test_demo_of_the_worked_example_follows_crm_edits_to_s360_and_back(
        tmp_path, monkeypatch, runner):
    """`make demo` itself: the CRM round trip runs against the simulator's API and CRM."""
    example = Path(__file__).resolve().parent.parent / "config" / "myvenue.yaml"
    for name in ("MYVENUE_WEBHOOK_PASSWORD", "MYVENUE_EXPORT_API_KEY", "MYVENUE_S360_API_URL",
                 "MYVENUE_S360_API_SECRET", "MYVENUE_CRM_URL", "MYVENUE_CRM_API_KEY",
                 "MYVENUE_CRM_PUSH_KEY"):
        monkeypatch.setenv(name, "")  # the demo sets them; restored after
    monkeypatch.delenv("S360BRIDGE_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)  # var/ of the example lands here
    Hooks().add_commands(cli)
    result = runner.invoke(cli, ["demo", "-c", str(example), "--records", "30", "--every",
                                 "0.05", "--timeout", "120"])
    assert result.exit_code == 0, result.output
    # 30 contacts pushed once, plus the 5 contacts created from the CRM, once each with what
    # S-360 added; the 10 contacts changed in the CRM do not come back to it
    assert ("myvenue: CRM received 35 contact and 30 order pushes; S-360 API calls: 10 "
            "saveIndividualContactData, 5 searchContact, 1 createCulturalContact, 0 answered "
            "509") in result.output
    # S-360's export of the same records (contacts as S-360 now has them) agrees with the DWH
    assert "reconcile myvenue/contacts with datx: 35 records in S-360's export, 35 in the " \
           "target: in sync" in result.output
    # the offer: sold through the bridge, back through the order webhook, in the DWH too
    assert "a sale of 2 HAMLET seats, S-360 order" in result.output
    assert "CLOSED, 2 barcodes" in result.output
    for stream, n in (("orders", 31), ("ticketchecks", 30)):
        assert f"reconcile myvenue/{stream} with datx: {n} records in S-360's export, {n} in " \
               "the target: in sync" in result.output
