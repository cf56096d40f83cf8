"""Offers when S-360 is slow, refuses, or lacks what a sale needs: a sales call is never made
again blindly, a refusal ends the attempt and gives back what was held, a failed follow-up
leaves the offer as it was."""

from __future__ import annotations

import dataclasses
import json

import pytest
import requests

from s360bridge.plugins.offers import recover, store
from s360bridge.simulator import catalog as sim_catalog
from s360bridge.simulator import sales as sim_sales
from s360bridge.simulator.contacts import BusinessError

from .helpers.processes import free_port, start, stop, wait_until
from .helpers.shop import LINES, PERF


def offer_of(shop, response: requests.Response) -> dict:
    return store.row(shop.bridge.engine, response.json()["id"])


def test_a_timed_out_sale_is_never_sent_again_and_fails_once_its_order_expired(shop):
    """S-360 makes the order but answers after the client's timeout: the offer answers 202
    ``uncertain`` (never a 500, never a second createOrUpdateOrder); S-360 documents no way to
    find the order, so it stays uncertain until that order has expired (2 s here, and a
    margin), then fails, certain that nothing was sold or held."""
    client = shop.bridge.s360(shop.inst)
    client.settings = dataclasses.replace(client.settings, timeout_seconds=0.3)
    shop.api.slow["createOrUpdateOrder"] = 1.0
    r = shop.offer("slow-sale", LINES["event"])
    assert r.status_code == 202 and r.json()["state"] == "uncertain", r.text
    assert r.headers["Location"] == r.json()["url"]
    assert "holds places until it expires" in r.json()["error"]
    assert shop.calls("createOrUpdateOrder") == 1
    assert shop.left("seats", PERF, 302) == 38  # the order S-360 made holds its 2 seats
    shop.api.slow.clear()

    def resolved() -> bool:
        recover(shop.bridge, shop.inst)
        shop.sales.expire()
        return offer_of(shop, r)["state"] == "failed"

    wait_until(resolved, 20, "the uncertain offer to resolve once its order expired")
    shown = requests.get(shop.proc.url + r.json()["url"], timeout=10,
                         headers={"x-api-key": "crm-posts-its-changes-with-this"})
    assert shown.status_code == 410 and "nothing was sold and nothing is held" in shown.text
    assert shop.calls("createOrUpdateOrder") == 1
    assert shop.left("seats", PERF, 302) == 40


def test_a_sale_without_a_pending_account_method_fails_before_any_order(shop, monkeypatch):
    monkeypatch.setitem(sim_catalog.METHODS, "getPOSConfig", lambda c, b: {"posConfigData": {
        "posId": sim_catalog.POS_ID, "paymentMethods": [{"id": 16362, "code": "CASH"}]}})
    r = shop.offer("no-pending-account", LINES["open pass"])
    assert r.status_code == 422 and "no pending-account payment method" in r.json()["error"]
    assert shop.calls("createOrUpdateOrder") == 0


def test_a_refused_close_gives_the_places_back_at_once(shop):
    shop.inst.services["offers"].options["payment_method_id"] = 999  # S-360 knows no such one
    r = shop.offer("refused-close", LINES["event"])
    assert r.status_code == 422 and "error.payment.unknownMethod" in r.json()["error"]
    assert shop.calls("abandonMovements") == 1
    assert shop.left("seats", PERF, 302) == 40  # not held until the open order expires
    assert offer_of(shop, r)["state"] == "failed"


def test_a_refusal_while_naming_holders_ends_the_attempt(shop, monkeypatch):
    """A business refusal is an answer, not S-360 being unavailable: made once, the offer
    fails with it, its open order is abandoned."""
    def refuse(s, b):
        raise BusinessError("failed", "error.contact.notFound: 0009999")
    monkeypatch.setitem(sim_sales.SERVICE, "setMovementContactData", refuse)
    r = shop.offer("refused-holders", LINES["open pass"], holders=["0009999"])
    assert r.status_code == 422 and "error.contact.notFound" in r.json()["error"]
    recover(shop.bridge, shop.inst)  # nothing left to do: not tried again
    assert shop.calls("setMovementContactData") == 1
    assert shop.calls("abandonMovements") == 1 and shop.calls("closeOrder") == 0


def test_a_purchaser_given_by_name_alone_is_created(shop):
    r = shop.offer("by-name", LINES["open pass"],
                   purchaser={"first_name": "Ada", "last_name": "Lovelace"})
    assert r.status_code == 201, r.text
    assert shop.calls("createCulturalContact") == 1 and shop.calls("searchContact") == 0
    order = shop.api.order_stores["testvenue"].get(r.json()["order_id"])["orderDetailsData"]
    made = shop.store.get(order["contactReference"])["individualContact"]
    assert (made["individualFirstname"], made["individualLastname"]) == ("Ada", "Lovelace")


@pytest.mark.parametrize("kind, action, why", [
    ("sale", "release", "is a sale offer, closed: it cannot be released"),
    ("reservation", "cancel", "is a reservation offer, closed: it cannot be cancelled")])
def test_a_follow_up_that_does_not_apply_says_why(shop, kind, action, why):
    r = shop.offer(f"{kind}-{action}", LINES["open pass"], kind=kind)
    assert r.status_code == 201, r.text
    refused = shop.follow_up(r.json()["id"], action)
    assert refused.status_code == 409 and why in refused.json()["error"]


def test_the_scheduler_warms_the_catalog_and_availabilities_when_it_starts(shop, tmp_path):
    """Jobs run once when the scheduler starts, then at their interval (availabilities every
    hour by default): a sale is never planned on an empty cache for the first hour."""
    proc = start(["run", "-c", str(shop.config), "--port", str(free_port())],
                 tmp_path / "run.log")
    try:
        wait_until(lambda: store.cached(shop.bridge.engine, "testvenue", "availability"), 30,
                   "the availabilities to be cached", proc)
        assert store.cached(shop.bridge.engine, "testvenue", "catalog") is not None
    finally:
        assert stop(proc) == 0


def slow_s360(shop, method: str) -> None:
    """S-360 does ``method``'s work and answers after the client's timeout."""
    client = shop.bridge.s360(shop.inst)
    client.settings = dataclasses.replace(client.settings, timeout_seconds=0.3)
    shop.api.slow[method] = 1.0
    shop.inst.services["offers"].options["uncertain_read_after_seconds"] = 0.5


def settled(shop, offer_id: int) -> dict:
    """The offer once the recovery job has resolved it (S-360 answering again)."""
    shop.api.slow.clear()
    wait_until(lambda: recover(shop.bridge, shop.inst) >= 0 and store.row(
        shop.bridge.engine, offer_id)["state"] in store.FINAL, 20, "the offer to settle")
    return store.row(shop.bridge.engine, offer_id)


def test_a_timed_out_confirm_is_resolved_by_reading_its_file(shop):
    """The sale resuming the reservation was made but not answered: the file shows it, and
    it is closed; never a second sale, and the holders are named on its tickets."""
    r = shop.offer("to-confirm", LINES["event"], kind="reservation",
                   holders=["0001234", "0005678"])
    assert r.status_code == 201, r.text
    slow_s360(shop, "createOrUpdateOrder")
    confirming = shop.follow_up(r.json()["id"], "confirm")
    assert confirming.status_code == 202 and confirming.json()["state"] == "uncertain"
    row = settled(shop, r.json()["id"])
    assert (row["state"], row["action"]) == ("done", "confirm"), row
    assert json.loads(row["result"])["type"] == "sale"
    assert shop.calls("createOrUpdateOrder") == 2 and shop.calls("getFileDetails") >= 1
    assert shop.calls("createPaymentsAndCloseOrder") == 1  # paid, as a confirmed sale is
    sales = [o for o in shop.sales.orders.values() if o.type == "SALE"]
    assert [(o.state, o.id) for o in sales] == [("CLOSED", row["order_id"])]
    assert [m["contactNumber"] for m in sales[0].movements] == ["0001234", "0005678"]
    assert shop.left("seats", PERF, 302) == 38


def test_a_timed_out_close_is_read_back_never_sent_again(shop):
    """S-360 closed and booked the payment but answered after the timeout: the offer waits,
    reads the order (closed) and finishes; never a second payment, never a failure."""
    slow_s360(shop, "createPaymentsAndCloseOrder")
    r = shop.offer("slow-close", LINES["event"])
    assert r.status_code == 202 and r.json()["state"] == "closing", r.text
    row = settled(shop, r.json()["id"])
    assert row["state"] == "done" and json.loads(row["result"])["order_state"] == "CLOSED"
    assert shop.calls("createPaymentsAndCloseOrder") == 1
    assert shop.calls("abandonMovements") == 0


def test_a_timed_out_cancel_is_resolved_by_reading_its_file(shop):
    r = shop.offer("to-cancel", LINES["event"])
    assert r.status_code == 201, r.text
    slow_s360(shop, "cancelOperations")
    cancelling = shop.follow_up(r.json()["id"], "cancel")
    assert cancelling.status_code == 202 and cancelling.json()["state"] == "uncertain"
    row = settled(shop, r.json()["id"])
    assert row["state"] == "done" and shop.calls("cancelOperations") == 1
    assert [o.type for o in shop.sales.orders.values()] == ["SALE", "REFUND_CLIENT"]
    assert shop.left("seats", PERF, 302) == 40


def test_a_refused_confirm_leaves_the_reservation_as_it_was_and_releasable(shop):
    r = shop.offer("keep-me", LINES["event"], kind="reservation")
    assert r.status_code == 201, r.text
    shop.inst.services["offers"].options["payment_method_id"] = 999  # S-360 knows no such one
    refused = shop.follow_up(r.json()["id"], "confirm")
    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert (body["state"], body["type"], body["action"]) == ("closed", "reservation", "create")
    assert body["last_follow_up"]["action"] == "confirm"
    assert shop.left("seats", PERF, 302) == 38  # the reservation holds them again
    released = shop.follow_up(r.json()["id"], "release")
    assert released.status_code == 201 and released.json()["state"] == "released", released.text
    assert shop.left("seats", PERF, 302) == 40


def test_tickets_are_read_with_their_line_and_cancelled_one_by_one(shop):
    """Each ticket: its movement, product, performance, seat category, tariff, price, barcode
    and holder; a cancel may name some tickets (refunded once each), then the rest."""
    r = shop.offer("tickets", LINES["event"], holders=["0001234", "0005678"])
    assert r.status_code == 201, r.text
    made = r.json()["tickets"]
    assert [(t["performance_id"], t["seat_category_id"], t["tariff_id"], t["price"],
             t["holder"], t["cancelled"]) for t in made] == [
        (PERF, 302, 1, 45000, "0001234", False), (PERF, 302, 1, 45000, "0005678", False)]
    assert [t["barcode"] for t in made] == r.json()["barcodes"] and all(r.json()["barcodes"])
    key = {"x-api-key": "crm-posts-its-changes-with-this"}
    url = f"{shop.proc.url}/crm/offers/testvenue/{r.json()['id']}/cancel"
    one = requests.post(url, json={"tickets": [made[0]["movement_id"]]}, headers=key, timeout=30)
    assert one.status_code == 200, one.text
    assert (one.json()["state"], [t["cancelled"] for t in one.json()["tickets"]]) == \
        ("closed", [True, False])
    assert shop.left("seats", PERF, 302) == 39
    again = requests.post(url, json={"tickets": [made[0]["movement_id"]]}, headers=key,
                          timeout=30)
    assert again.status_code == 200 and shop.calls("cancelOperations") == 1
    unknown = requests.post(url, json={"tickets": [1]}, headers=key, timeout=30)
    assert unknown.status_code == 422 and "not tickets of offer" in unknown.text
    rest = requests.post(url, headers=key, timeout=30)
    assert rest.status_code == 200 and rest.json()["state"] == "cancelled", rest.text
    assert shop.calls("cancelOperations") == 2 and shop.left("seats", PERF, 302) == 40
    assert [o.type for o in shop.sales.orders.values()] == ["SALE", "REFUND_CLIENT",
                                                             "REFUND_CLIENT"]


def test_two_follow_ups_at_once_one_wins_the_other_is_409(shop):
    from s360bridge.plugins.offers.offering import start_follow_up

    r = shop.offer("race", LINES["event"], kind="reservation")
    seen = store.row(shop.bridge.engine, r.json()["id"])
    start_follow_up(shop.bridge, seen, "confirm")  # the first, from the row as read
    with pytest.raises(Exception, match="changed meanwhile"):
        start_follow_up(shop.bridge, seen, "release")  # the second read the same row
    assert store.row(shop.bridge.engine, seen["id"])["action"] == "confirm"
