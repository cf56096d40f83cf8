"""Orders stream: the S-360 Order webhook V2, one ``{"orderDetailsData": {...}}`` per record.

Natural key ``orderDetailsData.orderId`` (64-bit integer). Finalised orders arrive: closed or
abandoned; an ``orderState`` or ``orderType`` value not seen before is stored as it is.
"""

from __future__ import annotations

from s360bridge.core.api import (
    Comparison,
    Field,
    RecordValidator,
    Stream,
    hookimpl,
    load_schema,
    stream_hooks,
)

from .warehouse import ORDERS, order_row

# An order that S-360 closed or abandoned does not change any more (a refund is an order of its
# own): those versions rank above any other. CLOSED is FOUND; ABANDONED is INFERRED (REFERENCE
# c.3: the webhook fires on "closed or abandoned"), and counting it final is the tolerant reading.
FINAL_STATES = frozenset({"CLOSED", "ABANDONED"})


def order_rank(_institution, record: dict) -> int:
    return 1 if record["orderDetailsData"].get("orderState") in FINAL_STATES else 0


STREAM = Stream("orders", "S-360 orders",
                dated=lambda inst, r: r["orderDetailsData"].get("creationDateTime"),
                rank=order_rank)
VALIDATOR = RecordValidator(load_schema(__name__))


def order_key(record: dict) -> str:
    return str(record["orderDetailsData"]["orderId"])


register_streams, receive = stream_hooks(STREAM, lambda inst: VALIDATOR, lambda inst: order_key)


@hookimpl
def register_transforms(register):
    register(STREAM.name, "sql")  # rows of ORDERS, with their operations and movements


@hookimpl
def transform(institution, stream, target, records):
    return [order_row(institution, r) for r in records]


KEY = Field("order_id", "text", "orderId", "orderDetailsData.orderId")
COMPARED = [
    Field("state", "text", "orderState", "orderDetailsData.orderState"),
    Field("type", "text", "orderType", "orderDetailsData.orderType"),
    Field("sale_amount", "amount", "saleAmount", "orderDetailsData.saleAmount"),
    Field("created", "datetime", "creationDateTime", "orderDetailsData.creationDateTime"),
    Field("contact_number", "text", "contactReference", "orderDetailsData.contactReference"),
]
WAREHOUSE_COLUMNS = {"order_id": "order_id", "state": "order_state", "type": "order_type",
                     "sale_amount": "sale_amount", "created": "creation_utc",
                     "contact_number": "contact_reference"}


@hookimpl
def reconcile(institution, stream, target):
    return Comparison(KEY, COMPARED, ORDERS, WAREHOUSE_COLUMNS,
                      lambda keys, export_rows: fetch_orders(target.ctx, institution, keys))


def fetch_orders(bridge, institution, order_ids: list[str]) -> dict[str, dict | None]:
    """Orders as S-360 has them now (``getOrderDetails``), in the webhook's record shape."""
    found = bridge.s360(institution).fetch_each(
        "externalOrderService", "getOrderDetails", order_ids,
        lambda order_id: {"orderId": int(order_id)})
    return {k: r and {"orderDetailsData": r.get("orderDetailsData")} for k, r in found.items()}
