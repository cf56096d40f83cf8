"""Offers against the simulator's sales side, over real HTTP: every family and type, follow-ups,
races for the last seats, idempotency, and the catalog cache's limits."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import requests
from click.testing import CliRunner

from s360bridge.core.cli.main import cli
from s360bridge.core.plugin.manager import Hooks
from s360bridge.plugins.offers import catalog as cache
from s360bridge.plugins.offers import recover, store

from .helpers.processes import free_port, healthy, start, wait_until
from .helpers.shop import CAT1, LINES, PERF

OFFER_KEY = "offers-key-of-the-crm-0123"


@pytest.mark.parametrize("kind", ["reservation", "option"])
@pytest.mark.parametrize("family", sorted(LINES))
def test_every_family_as_reservation_and_option(shop, family, kind):
    r = shop.offer(f"{kind}-{family}", LINES[family], kind=kind)
    assert r.status_code == 201, r.text
    offer = r.json()
    assert (offer["order_type"], offer["order_state"], offer["barcodes"]) == \
        (kind.upper(), "CLOSED", [])
    amount = offer["amounts"][f"{kind}Amount"]
    assert isinstance(amount, int) and amount > 0


@pytest.mark.parametrize("family", sorted(LINES))
def test_a_sale_of_every_family(shop, family):
    r = shop.offer(f"sale-{family}", LINES[family])
    assert r.status_code == 201, r.text
    offer = r.json()
    assert (offer["state"], offer["order_type"], offer["order_state"]) == \
        ("closed", "SALE", "CLOSED")
    assert len(offer["barcodes"]) == LINES[family]["quantity"]
    assert all(isinstance(b, str) for b in offer["barcodes"])
    assert isinstance(offer["amounts"]["saleAmount"], int)
    # the closed order reaches the bridge through S-360's order webhook, then the CRM
    shop.orders_webhook.run_once()
    shop.drain()
    assert shop.crm.orders[offer["order_id"]]["state"] == "CLOSED"


QUOTAS = {"event": ("seats", PERF, 302), "open pass": ("item", 10228231108401),
          "visit pass": ("timeslot", 10228231108630), "season ticket": ("item", 10228231108513)}


@pytest.mark.parametrize("kind", ["reservation", "option"])
@pytest.mark.parametrize("family", sorted(LINES))
def test_reservation_and_option_then_sale_partial_cancel_cancel_and_release(shop, family, kind):
    """Every family, as a reservation and as an option: confirmed (a sale, paid, its
    tickets), a ticket cancelled, then the rest; another released. The places follow."""
    line, quota = LINES[family], QUOTAS[family]
    before, n = shop.left(*quota), LINES[family]["quantity"]
    r = shop.offer(f"{kind}-1", line, kind=kind)
    assert r.status_code == 201, r.text
    offer = r.json()
    assert offer["order_type"] == kind.upper() and offer["barcodes"] == []
    held = n if kind == "reservation" else 0  # an option holds no place (REFERENCE §h.1)
    assert shop.left(*quota) == before - held
    confirmed = shop.follow_up(offer["id"], "confirm")
    assert confirmed.status_code == 201, confirmed.text
    assert confirmed.json()["order_type"] == "SALE" and len(confirmed.json()["barcodes"]) == n
    assert shop.left(*quota) == before - n
    again = shop.follow_up(offer["id"], "confirm")  # repeated: the same sale, no new order
    assert again.json()["order_id"] == confirmed.json()["order_id"]
    if n > 1:  # one ticket first
        first = confirmed.json()["tickets"][0]["movement_id"]
        one = requests.post(f"{shop.proc.url}/crm/offers/testvenue/{offer['id']}/cancel",
                            json={"tickets": [first]}, timeout=30,
                            headers={"x-api-key": "crm-posts-its-changes-with-this"})
        assert one.status_code == 200 and one.json()["state"] == "closed", one.text
        assert shop.left(*quota) == before - n + 1
    cancelled = shop.follow_up(offer["id"], "cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled", \
        cancelled.text
    assert shop.left(*quota) == before

    r = shop.offer(f"{kind}-2", line, kind=kind)
    released = shop.follow_up(r.json()["id"], "release")
    assert released.status_code == 201, released.text
    assert released.json()["state"] == "released"
    assert shop.left(*quota) == before


def test_two_offers_racing_for_the_last_seats(shop):
    line = {**LINES["event"], "seat_category": CAT1, "quantity": 3}  # 4 seats in CAT1
    answers = {}

    def buy(key):
        answers[key] = shop.offer(key, line)
    threads = [threading.Thread(target=buy, args=(k,)) for k in ("racer-a", "racer-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(a.status_code for a in answers.values())
    assert codes == [201, 409], [a.text for a in answers.values()]
    lost = next(a.json() for a in answers.values() if a.status_code == 409)
    assert lost["asked"] == [{"line": 0, "quota": f"seats:{PERF}:301", "quantity": 3,
                              "left": 1}]
    assert shop.left("seats", PERF, 301) == 1
    holding = [o for o in shop.sales.orders.values() if o.held]
    assert len(holding) == 1 and sum(holding[0].held.values()) == 3  # one order holds them


def test_the_same_idempotency_key_never_makes_a_second_order(shop):
    first = shop.offer(OFFER_KEY, LINES["open pass"])
    second = shop.offer(OFFER_KEY, LINES["open pass"])
    assert first.status_code == second.status_code == 201
    assert first.json()["order_id"] == second.json()["order_id"]
    assert shop.calls("createOrUpdateOrder") == 1
    other = shop.offer(OFFER_KEY, LINES["season ticket"])
    assert other.status_code == 422 and "was used for another offer" in other.text


@pytest.mark.parametrize("line, message", [
    ({"product": "NOPE"}, "unknown product 'NOPE'"),
    ({**LINES["event"], "performance": 1}, "unknown performance 1 of HAMLET"),
    ({**LINES["event"], "seat_category": "VIP"}, "unknown seat category 'VIP'"),
    ({**LINES["open pass"], "tariff": "SENIOR"}, "unknown tariff 'SENIOR'"),
    ({**LINES["visit pass"], "timeslot": 5}, "unknown time slot 5 of VISIT10"),
])
def test_unknown_catalog_entries_are_422_naming_them(shop, line, message):
    r = shop.offer(f"bad-{message}", line)
    assert r.status_code == 422 and message in r.json()["error"]
    assert shop.calls("createOrUpdateOrder") == 0


def test_bad_requests_change_nothing(shop):
    url = f"{shop.proc.url}/crm/offers/testvenue"
    key = {"x-api-key": "crm-posts-its-changes-with-this"}
    assert requests.post(url, data=b"{", headers=key, timeout=10).status_code == 400
    assert requests.post(url, json={"lines": []}, headers=key, timeout=10).status_code == 400
    assert requests.post(url, json={"lines": [LINES["open pass"]]}, headers=key,
                         timeout=10).status_code == 400  # no idempotency key
    assert requests.post(url, json={"idempotency_key": "k", "lines": [LINES["open pass"]]},
                         timeout=10).status_code == 401
    assert shop.calls("createOrUpdateOrder") == 0


def test_the_cache_respects_its_refresh_limits(shop, runner):
    inst = shop.inst
    assert cache.refresh_catalog(shop.bridge, inst, force=True)
    assert not cache.refresh_catalog(shop.bridge, inst, force=True)  # within a minute
    assert cache.refresh_availability(shop.bridge, inst, 3600)
    assert not cache.refresh_availability(shop.bridge, inst, 3600, force=True)
    # the events' performances, then the season ticket's (composedProductId, §g.3)
    assert (shop.calls("getCatalogDetailed"), shop.calls("getEventAvailability"),
            shop.calls("getProductAvailability")) == (1, 2, 1)
    Hooks().add_commands(cli)
    result = runner.invoke(cli, ["catalog", "-c", str(shop.config), "--institution",
                                 "testvenue", "--search", "hamlet"])
    assert result.exit_code == 0, result.output
    assert "HAMLET" in result.output and "MUSPASS" not in result.output
    assert "ADULT 65.00 EUR" in result.output
    passes = runner.invoke(cli, ["catalog", "-c", str(shop.config), "--institution",
                                 "testvenue", "--search", "pass"])
    assert "item 10228231108401 left 200" in passes.output  # the open pass's quota
    seasons = runner.invoke(cli, ["catalog", "-c", str(shop.config), "--institution",
                                  "testvenue", "--search", "season26"])
    assert "item 10228231108513 left 10" in seasons.output
    assert shop.calls("getCatalogDetailed") == 1  # the command read the cache


def crashed_mid_call(shop, tmp_path, method: str, follow_up: str = "", **extra):
    """Start ``s360bridge run``, ask it for an offer (with ``extra`` fields; or
    ``follow_up`` of the one made before: ``/{id}/confirm``), and kill -9 it while S-360 has
    done ``method`` but not answered yet; answer the offer's id."""
    made_before = shop.api.count(method)
    shop.api.slow[method] = 30
    port = free_port()
    proc = start(["run", "-c", str(shop.config), "--port", str(port)], tmp_path / "run.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: healthy(url), 30, "the bridge to listen", proc)
        def ask():
            try:
                requests.post(f"{url}/crm/offers/testvenue{follow_up}", timeout=60,
                              headers={"x-api-key": "crm-posts-its-changes-with-this"},
                              json=None if follow_up else {"idempotency_key": "crash",
                                                           "lines": [LINES["event"]], **extra})
            except requests.ConnectionError:
                pass  # the bridge is killed while this waits
        threading.Thread(target=ask, daemon=True).start()
        wait_until(lambda: shop.api.count(method) > made_before, 30,
                   f"S-360 to receive {method}")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    shop.api.slow.clear()
    return store.by_key(shop.bridge.engine, "testvenue", "crash")["id"]


def restart(shop, offer_id: int) -> dict:
    """What a restarted bridge does: once the dead process's lease has ended, its recovery
    job carries the offer on."""
    wait_until(lambda: offer_id in store.unfinished(shop.bridge.engine, ["testvenue"]), 30,
               "the dead process's lease to end")
    recover(shop.bridge, shop.inst)
    return store.row(shop.bridge.engine, offer_id)


def test_killed_after_s360_created_the_order_the_offer_is_uncertain_until_it_expires(
        shop, tmp_path):
    offer_id = crashed_mid_call(shop, tmp_path, "createOrUpdateOrder")
    row = restart(shop, offer_id)
    assert row["state"] == "uncertain" and row["expires_at"]
    assert f"holds places until it expires at {row['expires_at']}" in row["error"]
    assert shop.calls("createOrUpdateOrder") == 1  # never a second order
    assert shop.left("seats", PERF, 302) == 38  # the open order S-360 made holds 2 seats
    shop.sales.clock = lambda: time.time() + 3  # S-360's open orders last 2 s here
    shop.sales.expire()
    assert shop.left("seats", PERF, 302) == 40  # nothing left held
    Hooks().add_commands(cli)
    listing = CliRunner().invoke(cli, ["offers", "list", "-c", str(shop.config)])
    assert "uncertain" in listing.output and "may hold places until" in listing.output


@pytest.mark.parametrize("method", ["createPaymentsAndCloseOrder", "getOrderDetails"])
def test_killed_while_closing_the_offer_is_completed_on_restart(shop, tmp_path, method):
    """kill -9 while S-360 closes the order, or while the bridge reads it back after the
    close: the restarted bridge reads the order and finishes, never pays twice."""
    offer_id = crashed_mid_call(shop, tmp_path, method)
    row = restart(shop, offer_id)
    assert row["state"] == "done", row
    assert shop.calls("createOrUpdateOrder") == 1
    assert shop.calls("createPaymentsAndCloseOrder") == 1  # S-360 had closed it: read back
    orders = [o for o in shop.sales.orders.values()]
    assert [(o.type, o.state) for o in orders] == [("SALE", "CLOSED")]
    assert shop.left("seats", PERF, 302) == 38


def test_killed_while_s360_sets_the_holders_the_offer_is_completed_on_restart(shop, tmp_path):
    """kill -9 while S-360 applies the ticket holders: the restarted bridge sets them again
    (setting a movement's contact twice leaves it as set once), closes the one order it
    made, and never makes a second."""
    shop.sales.open_seconds = 60  # the order outlives the restart
    offer_id = crashed_mid_call(shop, tmp_path, "setMovementContactData",
                                holders=["0001234", "0005678"])
    assert store.row(shop.bridge.engine, offer_id)["state"] == "open"
    row = restart(shop, offer_id)
    assert row["state"] == "done", row
    assert (shop.calls("createOrUpdateOrder"), shop.calls("createPaymentsAndCloseOrder"),
            shop.calls("setMovementContactData")) == (1, 1, 2)  # the holders set again
    order = shop.api.order_stores["testvenue"].get(row["order_id"])["orderDetailsData"]
    assert order["orderState"] == "CLOSED"
    assert [m["contactNumber"] for m in order["movementDatas"]] == ["0001234", "0005678"]
    assert shop.left("seats", PERF, 302) == 38


@pytest.mark.parametrize("kind, action, method, made, seats", [
    ("reservation", "confirm", "createOrUpdateOrder", "SALE", 38),
    ("reservation", "release", "createOrUpdateOrder", "RESERVATION_FREEING", 40),
    ("sale", "cancel", "cancelOperations", "REFUND_CLIENT", 40)])
def test_killed_during_a_follow_up_the_file_is_read_on_restart(shop, tmp_path, kind, action,
                                                               method, made, seats):
    """kill -9 after S-360 made the follow-up's order and before the bridge stored its
    answer: the restarted bridge reads the file, finds that order and carries it on; the
    call is never made twice."""
    r = shop.offer("crash", LINES["event"], kind=kind)
    assert r.status_code == 201, r.text
    offer_id, before = r.json()["id"], shop.calls(method)
    crashed_mid_call(shop, tmp_path, method, f"/{offer_id}/{action}")
    shop.inst.services["offers"].options["uncertain_read_after_seconds"] = 0
    row = restart(shop, offer_id)
    assert (row["state"], row["action"]) == ("done", action), row
    assert shop.calls(method) == before + 1 and shop.calls("getFileDetails") >= 1
    orders = [o for o in shop.sales.orders.values() if o.type == made]
    assert [o.state for o in orders] == ["CLOSED"]
    assert shop.left("seats", PERF, 302) == seats
    if action == "confirm":
        assert shop.calls("createPaymentsAndCloseOrder") == 1


def test_offers_create_command_waits_with_progress(shop, tmp_path):
    request = tmp_path / "offer.json"
    request.write_text('{"idempotency_key": "from-the-cli", "type": "reservation", '
                       '"lines": [{"product": "SEASON26", "tariff": "CHILD", "quantity": 2}]}')
    Hooks().add_commands(cli)
    result = CliRunner().invoke(cli, ["offers", "create", "-c", str(shop.config),
                                      "--institution", "testvenue", str(request)])
    assert result.exit_code == 0, result.output
    shown = result.output[result.output.index("{"):]
    offer = json.loads(shown)
    assert (offer["state"], offer["order_type"], offer["amounts"]["reservationAmount"]) == \
        ("closed", "RESERVATION", 2 * 160000)
    confirm = CliRunner().invoke(cli, ["offers", "confirm", "-c", str(shop.config),
                                       str(offer["id"])])
    assert confirm.exit_code == 0, confirm.output
    assert '"order_type": "SALE"' in confirm.output


def test_holders_a_purchaser_found_or_created_and_a_slow_answer(shop):
    shop.store.add([{"contactNumber": "0007777", "type": "INDIVIDUAL", "role": "PUBLIC",
                     "individualContact": {"email": "known@example.org"}}])
    r = shop.offer("holders", LINES["open pass"], holders=["0007777", "0001234"],
                   purchaser={"email": "known@example.org"})
    assert r.status_code == 201, r.text
    order = shop.api.order_stores["testvenue"].get(r.json()["order_id"])["orderDetailsData"]
    assert order["contactReference"] == "0007777"  # found by e-mail
    assert [m["contactNumber"] for m in order["movementDatas"]] == ["0007777", "0001234"]
    r = shop.offer("new-buyer", LINES["open pass"],
                   purchaser={"email": "new@example.org", "first_name": "N", "last_name": "B"})
    assert shop.calls("createCulturalContact") == 1 and r.status_code == 201
    shop.api.slow["getOrderDetails"] = 1.5  # S-360 slower than the answer may wait
    shop.inst.services["offers"].options["wait_seconds"] = 0.2
    slow = shop.offer("slow", LINES["season ticket"])
    assert slow.status_code == 202 and slow.headers["Location"].endswith(
        f"/crm/offers/testvenue/{slow.json()['id']}")
    shop.api.slow.clear()
    key = {"x-api-key": "crm-posts-its-changes-with-this"}
    wait_until(lambda: requests.get(shop.proc.url + slow.headers["Location"], headers=key,
                                    timeout=10).status_code == 201, 10, "the offer to finish")
    catalog = requests.get(f"{shop.proc.url}/crm/catalog/testvenue", headers=key, timeout=10)
    assert catalog.status_code == 200 and catalog.json()["audiences"] == {"ADULT": 1,
                                                                          "CHILD": 2}

