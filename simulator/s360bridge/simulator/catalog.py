"""S-360's catalog and availabilities (CatalogService, AvailabilityService v1_33), seeded with
one product of every family: an open pass, a visit pass with time slots, an event with
performances and seat categories, and a season ticket (REFERENCE §g).

Shapes not documented (INFERRED) are marked where they are built: the visit pass's
``timeslots``, the items of simple and composed products, and the availability answers.
"""

from __future__ import annotations

import copy
import datetime as dt
import threading

from .channels import PENDING_ACCOUNT, POS_ID, current  # noqa: F401  (their home for tests)
from .contacts import BusinessError

COMPOSED = {"SEASONTICKET", "PACKAGE", "MEMBERSHIP"}
AUDIENCES = [{"id": 1, "code": "ADULT", "kind": "FULL"}, {"id": 2, "code": "CHILD",
                                                          "kind": "REDUCED"}]
CURRENCY = {"currencyCode": "EUR", "fractionDigit": 2, "minAmount": 10, "symbol": "€"}


def _iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.000+00:00")


def seeded_catalog(start: dt.datetime | None = None) -> dict:
    """One season with a product of each family; amounts in thousandths."""
    start = start or dt.datetime(2026, 12, 1, 18, 0, tzinfo=dt.UTC)
    prices = lambda adult, child: [{"audSubCatId": 1, "amount": adult},  # noqa: E731
                                   {"audSubCatId": 2, "amount": child}]
    hamlet = [10228231109243 + i for i in range(2)]
    return {"seasons": [{"code": "S2026", "products": [
        {"id": 10228231108400, "code": "MUSPASS", "productFamilyType": "PASS",
         "productFamilySubType": "OPEN_PASS", "state": "RUNNING",
         "externalName": {"translations": [{"locale": "en", "value": "Museum open pass"}]},
         "items": [{"id": 10228231108401, "capacity": 200}],  # INFERRED
         "prices": prices(25000, 12000)},
        {"id": 10228231108620, "code": "VISIT10", "productFamilyType": "PASS",
         "productFamilySubType": "TIMESLOT_PASS", "state": "RUNNING",
         "externalName": {"translations": [{"locale": "en", "value": "Guided visit"}]},
         "items": [{"id": 10228231108621, "capacity": None}],
         "timeslots": [{"id": 10228231108630 + i, "start": _iso(start + dt.timedelta(hours=i)),
                        "capacity": 6} for i in range(3)],  # INFERRED
         "prices": prices(18000, 9000)},
        {"id": 10228231108335, "code": "HAMLET", "productFamilyType": "SINGLE_ENTRY",
         "productFamilySubType": "SIMPLE_TICKET", "state": "RUNNING",
         "externalName": {"translations": [{"locale": "en", "value": "Hamlet"}]},
         "event": {"id": 10228231109000, "performances": [
             {"id": hamlet[i], "start": _iso(start + dt.timedelta(days=i)),
              "duration": 150, "seatCategories": [
                  {"id": 301, "code": "CAT1", "capacity": 4,
                   "externalName": {"translations": [{"locale": "en", "value": "Stalls"}]}},
                  {"id": 302, "code": "CAT2", "capacity": 40,
                   "externalName": {"translations": [{"locale": "en", "value": "Balcony"}]}}],
              "prices": [{"seatCatId": 301, "audSubCatId": 1, "priceLevelId": 1,
                          "amount": 65000},
                         {"seatCatId": 301, "audSubCatId": 2, "priceLevelId": 1,
                          "amount": 40000},
                         {"seatCatId": 302, "audSubCatId": 1, "priceLevelId": 1,
                          "amount": 45000},
                         {"seatCatId": 302, "audSubCatId": 2, "priceLevelId": 1,
                          "amount": 25000}]} for i in range(2)]}},
        {"id": 10228231108512, "code": "SEASON26", "productFamilyType": "SEASONTICKET",
         "productFamilySubType": "FIXED_SEASON_TICKET", "state": "RUNNING",
         "externalName": {"translations": [{"locale": "en", "value": "Season ticket"}]},
         # INFERRED (§g.2 B5d names SeasonTicket -> item -> line -> inner event, not the
         # fields): the item is the season tickets' contingent, its lines the performances
         "items": [{"id": 10228231108513, "capacity": 10, "lines": [
             {"productId": 10228231108335, "performanceIds": hamlet}]}],
         "prices": prices(320000, 160000)},
    ]}]}


class Catalog:
    """The catalog, what is left of each quota, and when the setup last changed."""

    def __init__(self, catalog: dict | None = None):
        self.data = catalog or seeded_catalog()
        self.last_setup_update = "2026-11-01T08:00:00.000+00:00"
        self.left: dict[tuple, int] = {}  # quota key -> places left
        self._lock = threading.RLock()
        for p in self.products():
            for item in p.get("items", []):
                if item.get("capacity") is not None:
                    self.left["item", item["id"]] = item["capacity"]
            for slot in p.get("timeslots", []):
                self.left["timeslot", slot["id"]] = slot["capacity"]
            for perf in (p.get("event") or {}).get("performances", []):
                for cat in perf["seatCategories"]:
                    self.left["seats", perf["id"], cat["id"]] = cat["capacity"]

    def products(self) -> list[dict]:
        return [p for s in self.data["seasons"] for p in s["products"]]

    def take(self, wanted: dict[tuple, int]) -> None:
        """Hold places for every quota at once, or none (error.order.availability)."""
        with self._lock:
            short = {k: n for k, n in wanted.items() if k in self.left and self.left[k] < n}
            if short:
                raise BusinessError("failed", "error.order.availability")
            for k, n in wanted.items():
                if k in self.left:
                    self.left[k] -= n

    def give_back(self, held: dict[tuple, int]) -> None:
        with self._lock:
            for k, n in held.items():
                if k in self.left:
                    self.left[k] += n


def get_catalog_detailed(catalog: Catalog, body: dict) -> dict:
    """The products of the caller's sales channel."""
    channel = current()
    data = copy.deepcopy(catalog.data)
    for season in data["seasons"]:
        season["products"] = [p for p in season["products"] if channel.sells(p)]
    return {"catalogData": data}


def get_pos_config(catalog: Catalog, body: dict) -> dict:
    """The point of sales of the caller's sales channel and its payment methods (§g.2)."""
    channel = current()
    return {"posConfigData": {"posId": channel.pos_id, "currencyCode": "EUR",
                              "organizationTimeZone": "Europe/Zurich",
                              "paymentMethods": channel.payment_methods()}}


def list_audience_subcategories(catalog: Catalog, body: dict) -> dict:
    return {"audienceSubCategories": AUDIENCES}  # INFERRED answer field


def get_last_setup_update(catalog: Catalog, body: dict) -> dict:
    return {"lastSetupUpdate": catalog.last_setup_update}


def get_event_availability(catalog: Catalog, body: dict) -> dict:
    """[FOUND g.3] ``performanceIds`` mandatory; with ``composedProductId``, what is left of
    that season ticket's contingent for its performances (the answer's shape is INFERRED)."""
    channel = current()
    channel.check_pos(body)
    if not body.get("performanceIds"):
        raise BusinessError("failed", "error.parameter.missing: performanceIds")
    wanted = set(body["performanceIds"])
    if body.get("composedProductId") is not None:
        return _composed_availability(catalog, body["composedProductId"], wanted)
    on_channel = {perf["id"] for p in catalog.products() if channel.sells(p)
                  for perf in (p.get("event") or {}).get("performances", [])}
    cats = set(body.get("seatCategoryIds") or [-1])
    with catalog._lock:
        data = [{"performanceId": k[1], "seatCategoryId": k[2], "available": n}  # INFERRED
                for k, n in catalog.left.items() if k[0] == "seats"
                and k[1] in wanted & on_channel and (-1 in cats or k[2] in cats)]
    return {"eventAvailabilityData": data}


def _composed_availability(catalog: Catalog, product_id, performances: set) -> dict:
    product = next((p for p in catalog.products() if p["id"] == product_id
                    and current().sells(p)), None)
    if product is None or product.get("productFamilyType") not in COMPOSED:
        raise BusinessError("failed", f"error.parameter.invalid: composedProductId {product_id}")
    data = []
    with catalog._lock:
        for item in product.get("items", []):
            inner = {perf for line in item.get("lines", []) for perf in line["performanceIds"]}
            if performances - inner:  # INFERRED: only the season ticket's own performances
                raise BusinessError("failed", "error.parameter.invalid: performanceIds "
                                    f"{sorted(performances - inner)} not in {product['code']}")
            data += [{"performanceId": perf, "composedProductId": product_id,
                      "itemId": item["id"], "available": catalog.left.get(("item", item["id"]))}
                     for perf in sorted(performances)]
    return {"eventAvailabilityData": data}


def get_product_availability(catalog: Catalog, body: dict) -> dict:
    """[FOUND g.3] passes, time slots and simple products; composed products are asked with
    getEventAvailability (refusing them here is INFERRED)."""
    channel = current()
    channel.check_pos(body)
    wanted = set(body.get("productIds") or [])
    out = []
    with catalog._lock:
        for p in catalog.products():
            if p["id"] not in wanted or not channel.sells(p):
                continue
            if p.get("productFamilyType") in COMPOSED:
                raise BusinessError("failed", f"error.parameter.invalid: productIds {p['id']} is "
                                              "a composed product")
            for item in p.get("items", []):  # INFERRED answer shape
                left = catalog.left.get(("item", item["id"]))
                out.append({"productId": p["id"], "itemId": item["id"], "available": left})
            for slot in p.get("timeslots", []):
                out.append({"productId": p["id"], "timeslotId": slot["id"],
                            "available": catalog.left["timeslot", slot["id"]]})
    return {"productAvailabilityData": out}


METHODS = {"getCatalogDetailed": get_catalog_detailed, "getPOSConfig": get_pos_config,
           "getLastSetupUpdate": get_last_setup_update,
           "listAudienceSubcategories": list_audience_subcategories}
AVAILABILITY_METHODS = {"getEventAvailability": get_event_availability,
                        "getProductAvailability": get_product_availability}
