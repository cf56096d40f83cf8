"""A closed order's tickets, one per movement: what its operation says (product, performance,
seat category, tariff, unit price: ``operationDatas``, FOUND W2 and K6) and what S-360 does not
document on the movement (barcode, seat, holder: INFERRED, REFERENCE §c.5), read at the paths
``options.ticket_fields`` names."""

from __future__ import annotations

from s360bridge.core.api import lookup

# INFERRED: where a movement holds them (the simulator's shape); a venue corrects them in
# services.offers.options.ticket_fields once its S-360 shows the real names
TICKET_FIELDS = {"barcode": "barcode", "holder": "contactNumber", "seat": "seat"}


def tickets(details: dict, fields: dict | None = None, cancelled=()) -> list[dict]:
    d = details.get("orderDetailsData") or {}
    operations = {o.get("operationId"): o for o in d.get("operationDatas") or []}
    paths = {**TICKET_FIELDS, **(fields or {})}
    out = []
    for m in d.get("movementDatas") or []:
        op = operations.get(m.get("operationId"), {})
        out.append({"movement_id": m.get("movementId"), "operation_id": m.get("operationId"),
                    "product_id": op.get("productId"),
                    "product": op.get("productCode") or op.get("product"),
                    "performance_id": op.get("performanceId"),
                    "seat_category_id": op.get("seatCategoryId"),
                    "tariff_id": op.get("audienceSubCategoryId"), "price": op.get("unitPrice"),
                    **{name: lookup(m, path) for name, path in paths.items()},
                    "cancelled": m.get("movementId") in cancelled})
    return out
