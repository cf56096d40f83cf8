"""How one offer line becomes an S-360 order operation, per product family (REFERENCE §g.1, §h.5).

Every shape S-360 does not document is here, one place per family, to correct once a sandbox is
available:

* open pass / simple product: ``simpleProductOperations[{itemId, audienceSubCategoryId,
  quantity}]`` (FOUND, K6);
* visit pass: the same with ``timeslotId`` (the field name is NOT FOUND);
* event: ``singleEntryAttributionOperations.operationAttributions[{performanceId,
  seatCategoryId, audienceSubCategoryId, quantity}]`` (FOUND, K3);
* season ticket and other composed products: ``composedProductOperations[{itemId,
  audienceSubCategoryId, quantity}]`` (the inner names are NOT FOUND);
* ticket holders: ``setMovementContactData{orderId, movementContactDatas[{movementId,
  contactNumber}]}`` (only the method name is FOUND).
"""

from __future__ import annotations

from dataclasses import dataclass

COMPOSED = {"SEASONTICKET", "PACKAGE", "MEMBERSHIP"}


class UnknownInCatalog(Exception):
    """An offer names something the catalog does not have (answered 422)."""


@dataclass(frozen=True)
class Line:
    group: str  # the createOrUpdateOrder operation group
    operation: dict
    quota: tuple  # what availability it draws on, to say what is left
    amount: int  # unit price in thousandths, from the catalog


def _product(catalog: dict, code: str) -> dict:
    for season in catalog.get("seasons", []):
        for p in season.get("products", []):
            if p.get("code") == code or str(p.get("id")) == str(code):
                return p
    raise UnknownInCatalog(f"unknown product {code!r}")


def family_of(catalog: dict, code) -> str:
    """The ``productFamilyType`` of a product, by code or id."""
    return _product(catalog, code).get("productFamilyType")


def _audience(audiences: dict[str, int], tariff) -> int:
    if isinstance(tariff, int):
        return tariff
    if tariff not in audiences:
        raise UnknownInCatalog(f"unknown tariff {tariff!r} (known: {', '.join(audiences)})")
    return audiences[tariff]


def _price(prices: list[dict], audience: int, seat_cat=None) -> int:
    for p in prices:
        if p.get("audSubCatId") == audience and seat_cat in (None, p.get("seatCatId")):
            return p["amount"]
    raise UnknownInCatalog(f"no price for tariff {audience} here")


def build(catalog: dict, audiences: dict[str, int], line: dict) -> Line:
    """The operation for one requested line: product, performance or time slot, seat
    category, tariff, quantity."""
    p = _product(catalog, line["product"])
    audience = _audience(audiences, line.get("tariff", "ADULT"))
    qty = int(line.get("quantity", 1))
    family = p.get("productFamilyType")
    if family == "SINGLE_ENTRY":
        perfs = {perf["id"]: perf for perf in (p.get("event") or {}).get("performances", [])}
        perf = perfs.get(line.get("performance"))
        if perf is None:
            raise UnknownInCatalog(f"unknown performance {line.get('performance')!r} of "
                                   f"{p['code']}")
        cats = {c["code"]: c["id"] for c in perf.get("seatCategories", [])}
        cat = line.get("seat_category")
        cat_id = cat if cat in cats.values() else cats.get(cat)
        if cat_id is None:
            raise UnknownInCatalog(f"unknown seat category {cat!r} (known: "
                                   f"{', '.join(cats)})")
        op = {"performanceId": perf["id"], "seatCategoryId": cat_id,
              "audienceSubCategoryId": audience, "quantity": qty}
        return Line("singleEntryAttributionOperations", op, ("seats", perf["id"], cat_id),
                    _price(perf.get("prices", []), audience, cat_id))
    items = p.get("items") or []
    if not items:
        raise UnknownInCatalog(f"product {p['code']} has no item to sell")
    op = {"itemId": items[0]["id"], "audienceSubCategoryId": audience, "quantity": qty}
    price = _price(p.get("prices", []), audience)
    if family in COMPOSED:
        return Line("composedProductOperations", op, ("item", items[0]["id"]), price)
    slots = {s["id"] for s in p.get("timeslots") or []}
    if slots:
        if line.get("timeslot") not in slots:
            raise UnknownInCatalog(f"unknown time slot {line.get('timeslot')!r} of {p['code']}")
        return Line("simpleProductOperations", {**op, "timeslotId": line["timeslot"]},
                    ("timeslot", line["timeslot"]), price)
    return Line("simpleProductOperations", op, ("item", items[0]["id"]), price)


def order_body(lines: list[Line]) -> dict:
    """The operation groups of a createOrUpdateOrder body."""
    body: dict = {}
    for line in lines:
        if line.group == "singleEntryAttributionOperations":
            body.setdefault(line.group, {"operationAttributions": []})[
                "operationAttributions"].append(line.operation)
        else:
            body.setdefault(line.group, []).append(line.operation)
    return body


def holders_body(order_id: int, movements: list[int], holders: list[str]) -> dict:
    return {"orderId": order_id, "movementContactDatas": [
        {"movementId": m, "contactNumber": c} for m, c in zip(movements, holders, strict=False)]}
