"""The ``orders``, ``order_operations`` and ``order_movements`` warehouse tables.

Amounts stay the integers S-360 sends (most likely thousandths of the currency unit).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, DateTime, Integer, String

from s360bridge.core.api import StoredRecord, WarehouseRow, utc_of, warehouse_table

AMOUNTS = ("saleAmount", "preSaleAmount", "reservationAmount", "optionAmount",
           "waitingAccountBalanceAmount")


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


AMOUNT_COLUMNS = tuple((a, _snake(a)) for a in AMOUNTS)  # once, not for every order

ORDERS = warehouse_table(
    "orders",
    Column("order_id", BigInteger, primary_key=True),
    Column("order_type", String(40)),
    Column("order_state", String(40)),
    Column("creation_utc", DateTime),
    Column("reference_date_utc", DateTime),
    Column("expiration_utc", DateTime),
    Column("contact_reference", String(20)),
    Column("sales_channel_code", String(40)),
    Column("currency_code", String(3)),
    *(Column(column, BigInteger) for _, column in AMOUNT_COLUMNS),
)

OPERATIONS = warehouse_table(
    "order_operations",
    Column("order_id", BigInteger, primary_key=True),
    Column("operation_id", BigInteger, primary_key=True),
    Column("file_id", BigInteger),
    Column("kind", String(40)),
    Column("product_family_type", String(40)),
    Column("product_id", BigInteger),
    Column("product_code", String(40)),
    Column("product", String(200)),
    Column("item_id", BigInteger),
    Column("performance_id", BigInteger),
    Column("event_id", BigInteger),
    Column("audience_sub_category_id", BigInteger),
    Column("quantity", Integer),
    Column("base_price", BigInteger),
    Column("unit_price", BigInteger),
    Column("total_amount", BigInteger),
    child=True,
)

MOVEMENTS = warehouse_table(
    "order_movements",
    Column("order_id", BigInteger, primary_key=True),
    Column("movement_id", BigInteger, primary_key=True),
    Column("operation_id", BigInteger),
    Column("instance_number", Integer),
    Column("start_validity_utc", DateTime),
    Column("end_validity_utc", DateTime),
    Column("transferable", Boolean),
    Column("resumed", Boolean),
    child=True,
)


def _int(value):
    """Ids and amounts are integers; JSON ``45000.0`` is taken as the integer it denotes."""
    return None if value is None else int(value)


def order_row(institution, stored: StoredRecord) -> WarehouseRow:
    o = stored.record["orderDetailsData"]
    zone = institution.timezone
    inst, order_id = institution.code, _int(o["orderId"])
    values = {
        "institution": inst, "order_id": order_id,
        "order_type": o.get("orderType"), "order_state": o.get("orderState"),
        "creation_utc": utc_of(o.get("creationDateTime"), zone),
        "reference_date_utc": utc_of(o.get("referenceDate"), zone),
        "expiration_utc": utc_of(o.get("expirationDate"), zone),
        "contact_reference": o.get("contactReference"),
        "sales_channel_code": o.get("salesChannelCode"),
        "currency_code": (o.get("catalogCurrency") or {}).get("currencyCode"),
        **{column: _int(o.get(a)) for a, column in AMOUNT_COLUMNS},
        "source_seq": stored.seq, "received_at": stored.received_at, "raw": stored.payload,
    }
    operations = [{
        "institution": inst, "order_id": order_id, "operation_id": _int(op["operationId"]),
        "file_id": _int(op.get("fileId")), "kind": op.get("kind"),
        "product_family_type": op.get("productFamilyType"),
        "product_id": _int(op.get("productId")), "product_code": op.get("productCode"),
        "product": op.get("product"), "item_id": _int(op.get("itemId")),
        "performance_id": _int(op.get("performanceId")), "event_id": _int(op.get("eventId")),
        "audience_sub_category_id": _int(op.get("audienceSubCategoryId")),
        "quantity": _int(op.get("quantity")), "base_price": _int(op.get("basePrice")),
        "unit_price": _int(op.get("unitPrice")), "total_amount": _int(op.get("totalAmount")),
    } for op in o.get("operationDatas") or []]
    movements = [{
        "institution": inst, "order_id": order_id, "movement_id": _int(mv["movementId"]),
        "operation_id": _int(mv.get("operationId")),
        "instance_number": _int(mv.get("instanceNumber")),
        "start_validity_utc": utc_of(mv.get("startValidityDate"), zone),
        "end_validity_utc": utc_of(mv.get("endValidityDate"), zone),
        "transferable": mv.get("transferable"), "resumed": mv.get("resumed"),
    } for mv in o.get("movementDatas") or []]
    return WarehouseRow(ORDERS, values, {OPERATIONS: operations, MOVEMENTS: movements})
