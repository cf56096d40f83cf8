"""A reseller's own sales channel, season-ticket availability and the CRM operator's own
settings, through the bridge against the simulator (tests/helpers/shop.py: ``eventim`` sells
on channel EVENTIM, where the venue put the play and the open pass; ``passhop`` on the
institution's)."""

from __future__ import annotations

import json

import pytest
import requests
from click.testing import CliRunner

from s360bridge.core.cli.main import cli
from s360bridge.core.plugin.manager import Hooks
from s360bridge.plugins.offers import catalog as cache

from .helpers.shop import EVENTIM_CHANNEL, LINES, Shop

SEASON_ITEM = "item:10228231108513"
CRM_KEY = {"x-api-key": "crm-posts-its-changes-with-this"}


def products(answer: dict) -> set[str]:
    return {p["code"] for s in answer["catalog"]["seasons"] for p in s["products"]}


def test_a_reseller_sees_and_sells_its_own_channel(shop):
    assert products(shop.reseller("eventim", "GET", "/catalog").json()) == {"HAMLET", "MUSPASS"}
    assert products(shop.reseller("passhop", "GET", "/catalog").json()) == {"MUSPASS",
                                                                            "VISIT10"}
    crm = requests.get(f"{shop.proc.url}/crm/catalog/testvenue", headers=CRM_KEY, timeout=10)
    assert products(crm.json()) == {"HAMLET", "MUSPASS", "VISIT10", "SEASON26"}
    # a pass, a family it sells, but not on its channel: S-360 would not know it there
    visit = shop.reseller("eventim", "POST", "/orders", json={
        "idempotency_key": "v", "lines": [LINES["visit pass"]]})
    assert visit.status_code == 422 and "unknown product 'VISIT10'" in visit.text
    sold = {name: shop.reseller(name, "POST", "/orders", json={
        "idempotency_key": "s", "lines": [LINES["open pass"]]}) for name in ("eventim",
                                                                             "passhop")}
    assert [r.status_code for r in sold.values()] == [201, 201], [r.text for r in sold.values()]
    channels = {name: shop.sales.orders[r.json()["order_id"]].channel
                for name, r in sold.items()}
    assert channels == {"eventim": "EVENTIM", "passhop": "RESAPI"}
    assert shop.calls("createOrUpdateOrder") == 2  # the VISIT10 order was never sent
    Hooks().add_commands(cli)
    seen = CliRunner().invoke(cli, ["catalog", "-c", str(shop.config), "--institution",
                                    "testvenue", "--reseller", "eventim", "--json"])
    assert seen.exit_code == 0, seen.output
    assert "HAMLET" in seen.output and "VISIT10" not in seen.output
    unknown = CliRunner().invoke(cli, ["catalog", "-c", str(shop.config), "--institution",
                                       "testvenue", "--reseller", "nobody"])
    assert unknown.exit_code == 2 and "no reseller 'nobody'" in unknown.output


def test_the_scheduled_jobs_warm_every_channel(shop):
    jobs = dict((name, run) for name, _, run in shop.bridge.hooks.services["offers"].jobs(
        shop.bridge, shop.inst, shop.inst.services["offers"]))
    jobs["catalog"]()
    jobs["availabilities"]()
    assert shop.calls("getPOSConfig") == 2  # the institution's channel and eventim's
    own = shop.reseller("eventim", "GET", "/availability").json()["availability"]
    assert own["item:10228231108401"] == 200 and "timeslot:10228231108630" not in own
    assert EVENTIM_CHANNEL.pos_id == cache.catalog_of(shop.bridge, shop.inst, "TEST_EVENTIM")[
        1]["pos"]["posId"]


def test_a_channel_s360_refuses_leaves_the_others_warm_and_tells_no_secret(shop):
    """The institution's operator withdrawn in S-360: its channel cannot be read, eventim's
    still is; then eventim's withdrawn too: its API says so in words that name nothing of the
    venue's set-up, and an offer fails with nothing ordered."""
    jobs = {name: run for name, _, run in shop.bridge.hooks.services["offers"].jobs(
        shop.bridge, shop.inst, shop.inst.services["offers"])}
    access = shop.api.access["testvenue"]
    access.operators = frozenset()  # TEST_OP: 401 unknown operator
    with pytest.raises(Exception, match="refused the credentials"):
        jobs["catalog"]()
    assert cache.catalog_of(shop.bridge, shop.inst, "TEST_EVENTIM")[1]["pos"]["posId"] == \
        EVENTIM_CHANNEL.pos_id  # warmed although the channel before it failed
    del access.channels["TEST_EVENTIM"]
    r = shop.reseller("eventim", "POST", "/orders", json={"idempotency_key": "k",
                                                          "lines": [LINES["open pass"]]})
    assert r.status_code == 503 and "refused the bridge's credentials" in r.json()["error"]
    assert "TEST_S360_SECRET" not in r.text and "TEST_EVENTIM" not in r.text
    assert r.json()["state"] == "failed" and shop.calls("createOrUpdateOrder") == 0
    fresh = shop.reseller("eventim", "GET", "/availability")
    assert fresh.status_code == 503 and "TEST_EVENTIM" not in fresh.text


def test_a_follow_up_is_made_on_the_channel_its_offer_was_made_on(shop):
    r = shop.reseller("eventim", "POST", "/orders", json={
        "idempotency_key": "r", "type": "reservation", "lines": [LINES["event"]]})
    assert r.status_code == 201, r.text
    shop.inst.services["offers"].callers["eventim"].options.pop("operator")  # moved since
    confirm = shop.reseller("eventim", "POST", f"/orders/{r.json()['id']}/confirm")
    assert confirm.status_code == 201, confirm.text
    sale = shop.sales.orders[confirm.json()["order_id"]]
    assert (sale.type, sale.state, sale.channel) == ("SALE", "CLOSED", "EVENTIM")


def test_a_refused_season_ticket_leaves_the_other_availabilities(shop, monkeypatch):
    from s360bridge.simulator import catalog as sim_catalog
    from s360bridge.simulator.contacts import BusinessError

    def refused(*args):
        raise BusinessError("failed", "error.parameter.invalid: composedProductId")
    monkeypatch.setattr(sim_catalog, "_composed_availability", refused)
    assert cache.refresh_availability(shop.bridge, shop.inst, 3600, force=True)
    left = cache.availability_of(shop.bridge, shop.inst)["data"]
    assert left[SEASON_ITEM] is None and left["seats:10228231109243:302"] == 40


def test_season_ticket_availability_comes_from_its_performances(shop):
    r = shop.offer("season", LINES["season ticket"])
    assert r.status_code == 201, r.text
    assert cache.refresh_availability(shop.bridge, shop.inst, 3600, force=True)
    assert cache.left_for(shop.bridge, shop.inst, ("item", 10228231108513)) == 9
    asked = [c for c in shop.api.calls if c.method == "getEventAvailability"]
    assert len(asked) == 2 and shop.api.count("getProductAvailability", 200) == 1


def test_a_season_ticket_without_its_performances_has_no_known_availability(shop):
    """The season ticket's inner performances are INFERRED catalog fields: without them S-360
    cannot be asked (performanceIds are mandatory), and the bridge does not guess."""
    for item in shop.api.catalogs["testvenue"].products()[3]["items"]:
        item.pop("lines")
    assert cache.refresh_availability(shop.bridge, shop.inst, 3600, force=True)
    left = cache.availability_of(shop.bridge, shop.inst)["data"]
    assert SEASON_ITEM in left and left[SEASON_ITEM] is None  # said unknown, not left out
    assert shop.calls("getEventAvailability") == 1  # the play's, not the season ticket's


@pytest.fixture
def crm_shop(tmp_path, monkeypatch, secrets_env):
    s = Shop(tmp_path, monkeypatch, crm_settings={
        "families": ["PASS", "SEASONTICKET"], "max_tickets_per_order": 3,
        "orders_per_minute": 2})
    yield s
    s.close()


def test_the_crm_operator_has_settings_of_its_own(crm_shop):
    play = crm_shop.offer("play", LINES["event"])
    assert play.status_code == 403
    assert "the CRM operator may not sell product family SINGLE_ENTRY (HAMLET)" in play.text
    many = crm_shop.offer("many", {**LINES["open pass"], "quantity": 4})
    assert many.status_code == 422 and "more than the 3 an order of the CRM" in many.text
    assert crm_shop.offer("one", LINES["open pass"]).status_code == 201
    assert crm_shop.offer("two", LINES["season ticket"]).status_code == 201
    again = crm_shop.offer("one", LINES["open pass"])  # a repeat, whatever the rate
    assert again.status_code == 201
    third = crm_shop.offer("three", LINES["open pass"])
    assert third.status_code == 429 and third.headers["Retry-After"] == "60"
    assert crm_shop.calls("createOrUpdateOrder") == 2
    catalog = requests.get(f"{crm_shop.proc.url}/crm/catalog/testvenue", headers=CRM_KEY,
                           timeout=10)
    assert products(catalog.json()) == {"MUSPASS", "VISIT10", "SEASON26"}  # its families


def test_the_offers_create_command_applies_the_crm_operators_settings(crm_shop, tmp_path):
    request = tmp_path / "offer.json"
    request.write_text(json.dumps({"idempotency_key": "cli", "lines": [LINES["event"]]}))
    Hooks().add_commands(cli)
    refused = CliRunner().invoke(cli, ["offers", "create", "-c", str(crm_shop.config),
                                       "--institution", "testvenue", str(request)])
    assert refused.exit_code == 2
    assert "may not sell product family SINGLE_ENTRY" in refused.output
    assert crm_shop.calls("createOrUpdateOrder") == 0
