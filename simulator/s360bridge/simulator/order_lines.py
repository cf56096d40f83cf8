"""The lines of an order: operations checked against the catalog (and the caller's sales
channel) and priced, with the quotas they draw on (REFERENCE §h.2). INFERRED: ``timeslotId`` on
a simple-product operation."""

from __future__ import annotations

from collections import Counter

from .catalog import Catalog
from .channels import Channel
from .contacts import BusinessError


def _price(prices: list[dict], audience, seat_cat=None) -> int:
    for p in prices:
        if p["audSubCatId"] == audience and seat_cat in (None, p.get("seatCatId")):
            return p["amount"]
    raise BusinessError("failed", f"error.order.unknownTariff: {audience}")


def lines_of(catalog: Catalog, body: dict,
             channel: Channel | None = None) -> tuple[list[dict], Counter]:
    """An order's lines and the places they draw on, priced from the catalog; with
    ``channel``, only products on that sales channel."""
    lines, wanted = [], Counter()
    by_item = {i["id"]: p for p in catalog.products() for i in p.get("items", [])}
    perfs = {perf["id"]: (perf, p) for p in catalog.products()
             for perf in (p.get("event") or {}).get("performances", [])}

    def on_channel(product: dict) -> None:
        if channel is not None and not channel.sells(product):  # INFERRED error code
            raise BusinessError("failed", "error.order.productNotInSalesChannel: "
                                          f"{product['code']}")
    for group in ("simpleProductOperations", "composedProductOperations"):
        for op in body.get(group) or []:
            product = by_item.get(op.get("itemId"))
            if product is None:
                raise BusinessError("failed", f"error.order.unknownItem: {op.get('itemId')}")
            on_channel(product)
            qty = int(op.get("quantity", 1))
            wanted["item", op["itemId"]] += qty
            slot = op.get("timeslotId")
            if product.get("timeslots"):
                if slot not in {s["id"] for s in product["timeslots"]}:
                    raise BusinessError("failed", f"error.order.unknownTimeslot: {slot}")
                wanted["timeslot", slot] += qty
            price = _price(product["prices"], op.get("audienceSubCategoryId"))
            lines.append({"productId": product["id"], "productCode": product["code"],
                          "productFamilyType": product["productFamilyType"],
                          "itemId": op["itemId"], "timeslotId": slot,
                          "audienceSubCategoryId": op.get("audienceSubCategoryId"),
                          "quantity": qty, "unitPrice": price, "totalAmount": qty * price})
    entry = body.get("singleEntryAttributionOperations") or {}
    for op in entry.get("operationAttributions") or []:
        perf, product = perfs.get(op.get("performanceId"), (None, None))
        if perf is None:
            raise BusinessError("failed", "error.order.unknownPerformance: "
                                          f"{op.get('performanceId')}")
        on_channel(product)
        cat = op.get("seatCategoryId")
        if cat not in {c["id"] for c in perf["seatCategories"]}:
            raise BusinessError("failed", f"error.order.unknownSeatCategory: {cat}")
        qty = int(op.get("quantity", 1))
        wanted["seats", perf["id"], cat] += qty
        price = _price(perf["prices"], op.get("audienceSubCategoryId"), cat)
        lines.append({"performanceId": perf["id"], "seatCategoryId": cat,
                      "productFamilyType": "SINGLE_ENTRY",
                      "audienceSubCategoryId": op.get("audienceSubCategoryId"),
                      "quantity": qty, "unitPrice": price, "totalAmount": qty * price})
    return lines, wanted


def as_body(lines: list[dict]) -> dict:
    """An order's lines as the body of a createOrUpdateOrder that would make them."""
    simple = [{"itemId": x["itemId"], "audienceSubCategoryId": x["audienceSubCategoryId"],
               "quantity": x["quantity"], "timeslotId": x.get("timeslotId")}
              for x in lines if "itemId" in x]
    entry = [{"performanceId": x["performanceId"], "seatCategoryId": x["seatCategoryId"],
              "audienceSubCategoryId": x["audienceSubCategoryId"], "quantity": x["quantity"]}
             for x in lines if "performanceId" in x]
    return {"simpleProductOperations": simple,
            "singleEntryAttributionOperations": {"operationAttributions": entry}}
