"""ExtCRM both ways, over real HTTP on loopback: S-360 (the simulator's API and contact webhook)
-> bridge -> reference CRM, and CRM changes -> bridge -> S-360, without ping-pong."""

from __future__ import annotations

import json
import logging
import time

import pytest
import requests

from s360bridge.core.cli.main import cli
from s360bridge.core.errors import S360BridgeError
from s360bridge.core.operations import admin, erasure
from s360bridge.core.operations.audit import Actor
from s360bridge.core.pipeline.claims import claim
from s360bridge.core.pipeline.queue import release
from s360bridge.core.storage import migrate
from s360bridge.core.storage.db import make_engine
from s360bridge.plugins.contacts.crm_changes import poll, watermark

from .conftest import fixture, post
from .helpers import ledger
from .helpers.clock import erasure_gives_up_at_once
from .helpers.world import API_SECRET, CRM_IN_KEY, World, spend_concurrently


@pytest.fixture
def world(tmp_path, monkeypatch, secrets_env):
    w = World(tmp_path, monkeypatch)
    yield w
    w.close()


def test_contacts_and_orders_reach_the_crm_with_the_mapping(world):
    person, orders = fixture("contacts_person.json"), fixture("order_sale.json")
    assert post(world.client, "contacts", person).status_code == 200
    assert post(world.client, "orders", orders).status_code == 200
    world.drain()
    crm = world.crm.by_number(person[0]["contactNumber"])
    who = person[0]["individualContact"]
    assert (crm["first_name"], crm["last_name"], crm["email"]) == (
        who["individualFirstname"], who["individualLastname"], who["email"])
    assert crm["s360_created"] == person[0]["creationDate"][:10]
    order = orders[0]["orderDetailsData"]
    sent = world.crm.orders[order["orderId"]]
    assert sent["sale_amount"] == f"{order['saleAmount'] / 1000:.2f}"  # thousandths -> "45.00"
    assert isinstance(sent["sale_amount"], str)
    assert [line["product"] for line in sent["lines"]] == \
        [op["productCode"] for op in order["operationDatas"]]


def test_crm_down_for_a_while_then_everything_arrives_once(world):
    from s360bridge.simulator.data import Generator
    gen = Generator(5)
    contacts, orders = gen.records("contacts", 40), gen.records("orders", 30)
    world.crm.down = 10_000
    books = {"contacts": ledger.Ledger(), "orders": ledger.Ledger()}
    books["contacts"].answer(40, post(world.client, "contacts", contacts))
    books["orders"].answer(30, post(world.client, "orders", orders))
    assert books["contacts"].accepted == 40 and books["orders"].accepted == 30
    world.drain()
    assert world.crm.received == {}
    world.drain(later=3600)  # a retry while still down
    world.crm.down = 0
    world.drain(later=7200)
    assert sorted(k for s, k in world.crm.received if s == "contacts") == \
        sorted(c["contactNumber"] for c in contacts)
    assert len({k for s, k in world.crm.received if s == "orders"}) == 30
    assert set(world.crm.received.values()) == {1}  # each record once
    for stream, book in books.items():  # the warehouse is checked by tests/test_delivery.py
        book.settle(ledger.engine_url(world.config), stream,
                    lambda stream=stream: [ledger.crm(world.crm, stream)])


def test_crm_change_goes_to_s360_and_the_loop_stops_there(world):
    person = fixture("contacts_person.json")[0]
    number = person["contactNumber"]
    crm_id = world.known_to_both(person)  # S-360 -> CRM first: the CRM knows the contact
    assert world.crm.received["contacts", number] == 1
    world.crm_pushes_changes()  # the CRM reports the bridge's write: an echo, not sent
    assert world.calls("saveIndividualContactData") == 0

    world.crm.change(crm_id, last_name="Dubois-Martin")
    world.crm_pushes_changes()
    assert world.calls("saveIndividualContactData") == 1
    assert world.store.get(number)["individualContact"]["individualLastname"] == "Dubois-Martin"
    world.s360_webhook()  # S-360 sends the changed contact back
    world.crm_pushes_changes()
    assert world.crm.received["contacts", number] == 1  # not pushed back to the CRM
    assert world.calls("saveIndividualContactData") == 1  # and not sent to S-360 again

    # a real later change on the S-360 side still flows, once, and stops there
    world.store.save_individual(number, {"phoneNumber1": "+41 79 000 00 00"})
    world.s360_webhook()
    assert world.crm.received["contacts", number] == 2
    assert world.crm.by_number(number)["phone"] == "+41 79 000 00 00"
    world.crm_pushes_changes()
    world.s360_webhook()
    assert world.calls("saveIndividualContactData") == 1
    assert world.crm.received["contacts", number] == 2


def test_contact_created_in_the_crm_is_created_in_s360_and_numbered_back(world):
    crm_id = world.crm.create(first_name="Lena", last_name="Keller",
                              email="lena.keller@example.net")
    world.crm_pushes_changes()
    assert world.calls("searchContact") == 1
    assert world.calls("createCulturalContact") == 1
    number = world.crm.contacts[crm_id]["contact_number"]
    assert number and world.store.get(number)["individualContact"]["email"] == \
        "lena.keller@example.net"
    world.s360_webhook()  # the new contact comes back with what S-360 added (type, date)
    assert world.crm.received["contacts", number] == 1
    world.crm_pushes_changes()  # the CRM reports the number and the push: echoes
    world.s360_webhook()
    assert (world.calls("createCulturalContact"), world.calls("saveIndividualContactData"),
            world.crm.received["contacts", number]) == (1, 0, 1)
    assert len(world.store.search("lena.keller@example.net")) == 1


def test_existing_s360_contact_found_by_email_is_updated_not_duplicated(world):
    person = fixture("contacts_person.json")[0]
    world.store.add([person])
    world.crm.create(first_name="Claire", last_name="Dubois", phone="+41 22 000",
                     email=person["individualContact"]["email"])
    world.crm_pushes_changes()
    assert (world.calls("createCulturalContact"), world.calls("saveIndividualContactData")) \
        == (0, 1)
    assert world.store.get(person["contactNumber"])["individualContact"]["phoneNumber1"] == \
        "+41 22 000"
    assert [c["contact_number"] for c in world.crm.contacts.values()] == \
        [person["contactNumber"]]  # the CRM learns the number of the contact found


@pytest.mark.parametrize("email, made", [("lea.crash@example.org", 1), (None, 2)],
                         ids=["with an e-mail", "without"])
def test_a_stop_after_s360_created_a_contact_creates_it_again_only_without_an_email(
        world, monkeypatch, email, made):
    """The point docs/guarantees.md names: S-360 created the contact, and the bridge stopped
    before storing its number (here storing it fails there, as a process killed at that point
    never does it). The change is delivered again: its e-mail finds the contact created the
    first time; without one, S-360 holds it twice."""
    from s360bridge.plugins.contacts import to_s360

    remember, stopped = to_s360.crm_links.remember, []

    def stops_once(*args, **kwargs):
        if not stopped:
            stopped.append(args)
            raise RuntimeError("the process stops here")
        return remember(*args, **kwargs)

    monkeypatch.setattr(to_s360.crm_links, "remember", stops_once)
    world.crm.create(first_name="Léa", last_name="Crash", email=email)
    world.crm_pushes_changes()
    assert stopped and world.calls("createCulturalContact") == 1
    world.drain(later=3600)  # past the retry's delay
    assert world.calls("createCulturalContact") == made
    in_s360 = [c for c in world.store.contacts.values()
               if c["individualContact"].get("individualLastname") == "Crash"]
    assert len(in_s360) == made
    crm_id = next(iter(world.crm.contacts))
    assert world.crm.contacts[crm_id]["contact_number"] == in_s360[-1]["contactNumber"]


def test_edits_on_both_sides_end_on_s360s_state(world):
    person = fixture("contacts_person.json")[0]
    number = person["contactNumber"]
    crm_id = world.known_to_both(person)
    world.crm_pushes_changes()
    world.store.save_individual(number, {"individualLastname": "From-S360"})  # not sent yet
    world.crm.change(crm_id, last_name="From-CRM")
    world.crm_pushes_changes()  # reaches S-360 last: it wins there
    world.s360_webhook()
    world.crm_pushes_changes()
    assert world.store.get(number)["individualContact"]["individualLastname"] == "From-CRM"
    assert world.crm.contacts[crm_id]["last_name"] == "From-CRM"


def test_polling_reads_changes_since_the_stored_watermark(world):
    for i in range(3):
        world.crm.create(first_name=f"P{i}", last_name="Poll", email=f"p{i}@example.org")
    assert poll(world.bridge, world.inst) == 3
    assert watermark(world.bridge.engine, "testvenue") == "3"
    assert poll(world.bridge, world.inst) == 0
    world.drain()
    assert world.calls("createCulturalContact") == 1  # three new contacts in one list
    assert all(c["contact_number"] for c in world.crm.contacts.values())
    jobs = [name for name, *_ in world.bridge.hooks.jobs(world.bridge)]
    assert "poll CRM changes of testvenue" in jobs


@pytest.mark.parametrize("body, headers, status", [
    (b"not json", {"x-api-key": CRM_IN_KEY}, 400),
    (b"[]", {"x-api-key": CRM_IN_KEY}, 400),
    (b'[{"crm_id": "C1"}]', {"x-api-key": "wrong"}, 401),
    (b'[{"crm_id": "C1"}]', {}, 401),
])
def test_bad_input_on_the_crm_endpoint_changes_nothing(world, body, headers, status):
    r = requests.post(f"{world.proc.url}/crm/contacts/testvenue", data=body, headers=headers,
                      timeout=10)
    assert r.status_code == status
    with world.bridge.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM inbox").scalar_one() == 0


def test_crm_records_without_their_key_are_quarantined(world):
    r = requests.post(f"{world.proc.url}/crm/contacts/testvenue", timeout=10,
                      json=[{"crm_id": "C9", "email": "a@b.c"}, {"email": "nokey@b.c"}],
                      headers={"x-api-key": CRM_IN_KEY})
    assert r.json() == {"accepted": 1, "duplicates": 0, "quarantined": 1, "before_cutoff": 0}
    r = requests.post(f"{world.proc.url}/crm/contacts/nowhere", json=[{"crm_id": "C1"}],
                      headers={"x-api-key": CRM_IN_KEY}, timeout=10)
    assert r.status_code == 401  # as wrong credentials: no venue code is told apart


def test_the_limiter_keeps_to_the_rate_and_absorbs_a_509(tmp_path, monkeypatch, secrets_env):
    w = World(tmp_path, monkeypatch, client_calls=5, s360_limit=6, window=1.0)
    try:
        people = [dict(fixture("contacts_person.json")[0], contactNumber=f"00{i:05d}")
                  for i in range(16)]
        w.store.add(people)
        for p in people:
            w.crm.create(contact_number=p["contactNumber"], first_name="Rate", last_name="Lim")
        w.api.force_509 = 2
        w.crm_pushes_changes()
        assert w.calls("saveIndividualContactData") == 16  # every change made it
        assert w.api.count("saveIndividualContactData", 509) == 2
        times = sorted(c.at for c in w.api.calls if c.status == 200)
        # never more than 5 calls in any second (100 ms allowed for the way over loopback)
        assert all(b - a >= 0.9 for a, b in zip(times, times[5:], strict=False))
        assert max(w.api.per_window("saveIndividualContactData").values()) <= 6
    finally:
        w.close()


def test_bad_credentials_toward_s360_show_in_status_and_logs_without_the_secret(
        tmp_path, monkeypatch, secrets_env, caplog, runner):
    wrong = "the-wrong-secret-that-must-never-show-0000"
    w = World(tmp_path, monkeypatch, api_secret=wrong)
    try:
        w.crm.create(contact_number="0001234", first_name="A", last_name="B")
        with caplog.at_level(logging.INFO):
            w.crm_pushes_changes()
        result = runner.invoke(cli, ["status", "--json", "-c", str(w.config)])
        assert result.exit_code == 0, result.output
        stream = json.loads(result.output)["testvenue"]["streams"]["crm_contacts"]
        assert "refused the credentials" in stream["last_error"]
        assert "TEST_S360_SECRET" in stream["last_error"]
        assert "refused the credentials" in caplog.text
        for text in (result.output, caplog.text):
            assert wrong not in text and API_SECRET not in text
    finally:
        w.close()


def test_the_budget_is_shared_by_processes_on_one_database(tmp_path):
    url = f"sqlite:///{tmp_path}/shared.db"
    engines = [make_engine(url) for _ in range(3)]  # three "processes", one database
    migrate.upgrade(engines[0], [])  # the call log is in the engine's branch
    taken = spend_concurrently(engines, 4, 0.5)
    assert len(taken) == 12
    # never 5 calls within one window (the log keeps milliseconds)
    assert all(b - a >= 0.499 for a, b in zip(taken, taken[4:], strict=False))


def test_retry_after_of_a_busy_crm_is_honoured(world):
    world.crm.down, world.crm.retry_after = 1, 900  # longer than the engine's own backoff
    post(world.client, "orders", fixture("order_sale.json"))
    before = time.time()
    world.drain()
    with world.bridge.engine.connect() as conn:
        waits = [r[0] - before for r in conn.exec_driver_sql(
            "SELECT next_attempt_at FROM inbox_state WHERE state = 'pending'")]
    assert len(waits) == 2 and all(900 <= w < 910 for w in waits)
    assert "HTTP 503" in admin.status(world.bridge)["testvenue"]["streams"]["orders"][
        "last_error"]


def a_change_waiting(world) -> str:
    """A contact both sides know, one CRM change of it applied to S-360 (the link learns the
    CRM's id) and one waiting in the inbox; answer its contact number."""
    person = fixture("contacts_person.json")[0]
    crm_id = world.known_to_both(person)
    world.crm.change(crm_id, last_name="Applied")
    world.crm_pushes_changes()
    world.crm.change(crm_id, last_name="Waiting")
    items = world.crm.changes_since(world.seen)
    requests.post(f"{world.proc.url}/crm/contacts/testvenue", json=items,
                  headers={"x-api-key": CRM_IN_KEY}, timeout=10).raise_for_status()
    return person["contactNumber"]


def test_forget_erases_the_crm_link_and_the_crms_waiting_changes(world, runner):
    number = a_change_waiting(world)
    result = runner.invoke(cli, ["forget", "--institution", "testvenue", "--contact", number,
                                 "-c", str(world.config)])
    assert result.exit_code == 0, result.output
    # the CRM's report of the bridge's write, the applied change and the waiting one
    assert "crm link: 1 row; CRM changes in the inbox: 3" in result.output
    with world.bridge.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM crm_link").scalar_one() == 0
        assert conn.exec_driver_sql(
            "SELECT count(*) FROM inbox WHERE stream = 'crm_contacts'").scalar_one() == 0


def test_forget_stopped_by_a_change_on_its_way_to_s360_can_be_run_again(world, monkeypatch):
    """A CRM change of the contact is leased by a worker that keeps it past
    ``engine.lease_seconds``: the erasure stops before the link goes (a push to S-360 would
    write the link again, and only the link knows the CRM's id), and once that delivery is
    over, the erasure run again takes the link and the change."""
    number = a_change_waiting(world)
    leased = claim(world.bridge.engine, ["testvenue"], 100, 3600)
    assert [stream for _, stream in leased.groups] == ["crm_contacts"]
    erasure_gives_up_at_once(monkeypatch)
    with pytest.raises(S360BridgeError, match="still holds it; the erasure stopped at that step"):
        erasure.forget_contact(world.bridge, "testvenue", number, actor=Actor("dpo"))
    with world.bridge.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM crm_link").scalar_one() == 1
    release(world.bridge.engine, leased.token, leased.seqs)  # that delivery is over
    removed = erasure.forget_contact(world.bridge, "testvenue", number, actor=Actor("dpo"))
    # the bridge's write reported back, the applied change and the waiting one
    assert "crm link: 1 row; CRM changes in the inbox: 3" in removed
    with world.bridge.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM crm_link").scalar_one() == 0
        assert conn.exec_driver_sql(
            "SELECT count(*) FROM inbox WHERE stream = 'crm_contacts'").scalar_one() == 0


def test_status_shows_the_monthly_quota_left(tmp_path, monkeypatch, secrets_env, runner):
    """With a plan's monthly quota, a contact created in S-360 counts one call, and status
    says what is left of the month."""
    from s360bridge.core.cli.main import cli

    def quota(data):
        data["s360_api"]["monthly_calls"] = 1000
    w = World(tmp_path, monkeypatch, configure=quota)
    try:
        w.crm.create(first_name="Quota", last_name="Counted", email=None)
        w.crm_pushes_changes()
        assert w.calls("createCulturalContact") == 1
        shown = runner.invoke(cli, ["status", "-c", str(w.config)])
        assert shown.exit_code == 0, shown.output
        assert "S-360 calls left this month: 999" in shown.output
    finally:
        w.close()
