"""The simulator's sales channels and season tickets: an operator sees and sells only its
channel's products on its channel's point of sales (REFERENCE §g.2), and a season ticket's
availability is asked per performance with its ``composedProductId`` (§g.3)."""

from __future__ import annotations

import pytest

from s360bridge.simulator.catalog import POS_ID
from s360bridge.simulator.channels import Channel

from .helpers.sales_api import ADULT, CAT2, PASS_ITEM, PERF, served_sim

OWN_POS, VISIT_ITEM, SEASON, SEASON_ITEM = 101053522399, 10228231108621, 10228231108512, \
    10228231108513
HAMLET_PERFS = [PERF, PERF + 1]
CHANNEL = Channel(pos_id=OWN_POS, code="EVENTIM", products=frozenset({"HAMLET", "MUSPASS"}))


@pytest.fixture
def shop_sim():
    with served_sim(channels={"RESELLER_OP": CHANNEL}) as s:
        yield s


def as_reseller(sim, service: str, method: str, body: dict) -> dict:
    r = sim.post(service, method, body, aud="RESELLER_OP")
    assert r.status_code == 200, r.text
    return r.json()


def test_an_operator_sees_its_channels_products_and_point_of_sales(shop_sim):
    pos = as_reseller(shop_sim, "catalogService", "getPOSConfig", {})["posConfigData"]
    assert pos["posId"] == OWN_POS
    catalog = as_reseller(shop_sim, "catalogService", "getCatalogDetailed", {})["catalogData"]
    assert {p["code"] for s in catalog["seasons"] for p in s["products"]} == {"HAMLET",
                                                                              "MUSPASS"}
    everything = shop_sim.post("catalogService", "getCatalogDetailed", {}).json()
    assert len(everything["catalogData"]["seasons"][0]["products"]) == 4  # the default channel
    assert shop_sim.post("catalogService", "getPOSConfig", {}, aud="NOBODY").status_code == 401


def test_an_operator_sells_only_on_its_point_of_sales_and_its_products(shop_sim):
    seats = {"singleEntryAttributionOperations": {"operationAttributions": [
        {"performanceId": PERF, "seatCategoryId": CAT2, "audienceSubCategoryId": ADULT,
         "quantity": 2}]}}
    facade = "externalOrderFacade"
    wrong_pos = as_reseller(shop_sim, facade, "createOrUpdateOrder",
                            {"pointOfSalesId": POS_ID, "orderType": "SALE", **seats})
    assert wrong_pos["statusDetail"] == "error.parameter.invalid: pointOfSalesId"
    visit = as_reseller(shop_sim, facade, "createOrUpdateOrder", {
        "pointOfSalesId": OWN_POS, "orderType": "SALE", "simpleProductOperations": [
            {"itemId": VISIT_ITEM, "audienceSubCategoryId": ADULT, "quantity": 1,
             "timeslotId": 10228231108630}]})
    assert visit["statusDetail"] == "error.order.productNotInSalesChannel: VISIT10"
    assert shop_sim.left(("seats", PERF, CAT2)) == 40  # neither held anything
    made = as_reseller(shop_sim, facade, "createOrUpdateOrder", {
        "pointOfSalesId": OWN_POS, "orderType": "SALE", **seats, "simpleProductOperations": [
            {"itemId": PASS_ITEM, "audienceSubCategoryId": ADULT, "quantity": 1}]})
    assert made["statusCode"] == "success", made
    details = shop_sim.details(made["orderUpdateData"]["orderId"])
    assert details["salesChannelCode"] == "EVENTIM"
    assert shop_sim.left(("seats", PERF, CAT2)) == 38


def test_season_ticket_availability_is_asked_with_its_performances(sim):
    ask = {"pointOfSalesId": POS_ID, "composedProductId": SEASON}
    refused = sim.post("availabilityService", "getEventAvailability", ask).json()
    assert refused["statusDetail"] == "error.parameter.missing: performanceIds"  # [FOUND g.3]
    left = sim.post("availabilityService", "getEventAvailability",
                    {**ask, "performanceIds": HAMLET_PERFS}).json()["eventAvailabilityData"]
    assert [(a["performanceId"], a["itemId"], a["available"]) for a in left] == [
        (PERF, SEASON_ITEM, 10), (PERF + 1, SEASON_ITEM, 10)]
    other = sim.post("availabilityService", "getEventAvailability",
                     {**ask, "performanceIds": [PERF + 7]}).json()
    assert other["statusCode"] == "failed" and "not in SEASON26" in other["statusDetail"]
    as_product = sim.post("availabilityService", "getProductAvailability",
                          {"pointOfSalesId": POS_ID, "productIds": [SEASON]}).json()
    assert "is a composed product" in as_product["statusDetail"]
    sim.ok("createOrUpdateOrder", {"pointOfSalesId": POS_ID, "orderType": "SALE",
                                   "composedProductOperations": [
                                       {"itemId": SEASON_ITEM, "audienceSubCategoryId": ADULT,
                                        "quantity": 3}]})
    after = sim.post("availabilityService", "getEventAvailability",
                     {**ask, "performanceIds": [PERF]}).json()["eventAvailabilityData"]
    assert [a["available"] for a in after] == [7]
