"""What a reseller owes: per day in the institution's time zone, what it sold and what was
refunded (cancelled tickets) on pending account, in S-360's integer amounts with the currency.

The figures come from the reseller's offers and are checked against what S-360's order webhook
brought the bridge (the ``orders`` stream); an order the webhook did not bring, or brought with
another amount, is read from S-360 (``getOrderDetails``), and every difference is listed, not
hidden.
"""

from __future__ import annotations

import csv
import datetime as dt
import io

import orjson
from sqlalchemy import select

from s360bridge.core.api import RequestRefused, S360ApiError, parse_s360_time, received

from . import store

SERVICE = "externalOrderService"
COLUMNS = ("day", "currency", "sales", "sold", "refunds", "refunded", "cancelled_tickets")


def report(bridge, inst, reseller: str, first: dt.date, last: dt.date) -> dict:
    """``{"days": [row per day with anything], "differences": [...]}``."""
    orders = _orders(bridge, inst, reseller)
    held = received(bridge, inst.code, "orders", [str(o["order_id"]) for o in orders])
    days: dict[tuple, dict] = {}
    differences = []
    for o in orders:
        record, difference = _checked(bridge, inst, o, held.get(str(o["order_id"])))
        if difference:
            differences.append(difference)
        d = (record or {}).get("orderDetailsData") or {}
        local = parse_s360_time(d.get("creationDateTime"), inst.timezone)
        day = local[1].date() if local else \
            dt.datetime.fromtimestamp(o["created_at"], inst.timezone).date()
        if not first <= day <= last:
            continue
        row = days.setdefault((day, o["currency"]), {
            "day": day.isoformat(), "currency": o["currency"], "sales": 0, "sold": 0,
            "refunds": 0, "refunded": 0, "cancelled_tickets": 0})
        kind = "refunds" if o["kind"] == "refund" else "sales"
        row[kind] += 1
        row["refunded" if kind == "refunds" else "sold"] += o["amount"]
        row["cancelled_tickets"] += o.get("tickets", 0)
    return {"days": [days[k] for k in sorted(days)], "differences": differences}


def _orders(bridge, inst, reseller: str) -> list[dict]:
    """The reseller's closed sales and the refunds of their cancelled tickets, as its offers
    know them (the amounts are S-360's, read back when each closed)."""
    offers = store.OFFERS
    with bridge.engine.connect() as conn:
        rows = conn.execute(select(offers.c.result, offers.c.created_at).where(
            offers.c.institution == inst.code, offers.c.caller == reseller,
            offers.c.state == "done")).all()
    out = []
    for text, created in rows:
        result = orjson.loads(text or "{}")
        if result.get("order_type") != "SALE":
            continue
        out.append({"kind": "sale", "order_id": result["order_id"], "created_at": created,
                    "amount": (result.get("amounts") or {}).get("saleAmount") or 0,
                    "currency": result.get("currency")})
        gone = [t for t in result.get("tickets", []) if t.get("cancelled")]
        for refund in result.get("orders_seen", []):
            out.append({"kind": "refund", "order_id": refund, "created_at": created,
                        "currency": result.get("currency"), "tickets": len(gone),
                        "amount": -sum(t.get("price") or 0 for t in gone)})
            gone = []  # the tickets count once, with the first refund
    return out


def _checked(bridge, inst, order: dict, record: dict | None) -> tuple[dict | None, dict | None]:
    """The order as S-360 knows it (the webhook's record, else read from S-360), and the
    difference with the bridge's figure, if any."""
    if record is not None and _amount(record) == order["amount"]:
        return record, None
    said = {"order_id": order["order_id"], "kind": order["kind"], "bridge": order["amount"],
            "webhook": None if record is None else _amount(record)}
    try:
        read = bridge.s360(inst).call(SERVICE, "getOrderDetails", {"orderId": order["order_id"]})
    except S360ApiError as exc:
        return record, {**said, "s360": None, "why": f"S-360 could not be read: {exc}"}
    s360 = _amount(read)
    if s360 == order["amount"] and record is None:
        return read, None  # the webhook has not brought it (yet): S-360 agrees
    why = "S-360 agrees with the bridge, not with the webhook" if s360 == order["amount"] \
        else "S-360 says another amount"
    return read, {**said, "s360": s360, "why": why}


def _amount(record: dict) -> int | None:
    return ((record or {}).get("orderDetailsData") or {}).get("saleAmount")


def as_csv(days: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(days)
    return out.getvalue()


def period(first: str | None, last: str | None) -> tuple[dt.date, dt.date]:
    """The days asked (``YYYY-MM-DD``, both included); a bad one is a 400."""
    try:
        start, end = dt.date.fromisoformat(first or ""), dt.date.fromisoformat(last or "")
    except ValueError:
        raise RequestRefused(400, "from and to are days, YYYY-MM-DD") from None
    if end < start:
        raise RequestRefused(400, f"to ({end}) is before from ({start})")
    return start, end
