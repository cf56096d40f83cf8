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
from contextlib import nullcontext

import orjson
from sqlalchemy import select

from s360bridge.core.api import RequestRefused, S360ApiError, parse_s360_time, received

from . import resellers, store

SERVICE = "externalOrderService"
COLUMNS = ("day", "currency", "sales", "sold", "refunds", "refunded", "cancelled_tickets")


MAX_READS = 50  # S-360 reads a report may make (the rest is listed as not checked)


def report(bridge, inst, reseller: str, first: dt.date, last: dt.date) -> dict:
    """``{"days": [row per day with anything], "differences": [...]}``. Only the orders of
    the period (a day around it, for time zones) are checked, within the reseller's share of
    the call budget, ``MAX_READS`` reads of S-360 at most."""
    since = dt.datetime.combine(first - dt.timedelta(days=1), dt.time(), inst.timezone)
    until = dt.datetime.combine(last + dt.timedelta(days=2), dt.time(), inst.timezone)
    orders = [o for o in _orders(bridge, inst, reseller, until.timestamp())
              if since.timestamp() <= o["at"] < until.timestamp()]
    held = received(bridge, inst.code, "orders",
                    [str(o["order_id"]) for o in orders if o["order_id"]])
    days: dict[tuple, dict] = {}
    differences = []
    reads = [MAX_READS]
    share = resellers.options_of(inst, reseller).get("calls_per_minute")
    client = resellers.client_of(bridge, inst, reseller)
    with client.share(reseller, share) if share else nullcontext():
        for o in orders:
            record, difference = _checked(client, o, held.get(str(o["order_id"])), reads)
            if difference:
                differences.append(difference)
            day = _day(inst, record, o)
            if not first <= day <= last:
                continue
            row = days.setdefault((day, o["currency"] or ""), {
                "day": day.isoformat(), "currency": o["currency"], "sales": 0, "sold": 0,
                "refunds": 0, "refunded": 0, "cancelled_tickets": 0})
            if o["kind"] == "refund":
                row["refunds"] += 1
                row["refunded"] += o["amount"]
                row["cancelled_tickets"] += o["tickets"]
            else:
                row["sales"] += 1
                row["sold"] += o["amount"]
    return {"days": [days[k] for k in sorted(days)], "differences": differences}


def _day(inst, record: dict | None, order: dict) -> dt.date:
    """The order's day in the institution's time zone: S-360's creation time, else when the
    bridge saw it made."""
    created = ((record or {}).get("orderDetailsData") or {}).get("creationDateTime")
    try:
        local = parse_s360_time(created, inst.timezone) if created else None
    except ValueError:
        local = None
    if local:
        return local[1].date()
    return dt.datetime.fromtimestamp(order["at"], inst.timezone).date()


def _orders(bridge, inst, reseller: str, until: float) -> list[dict]:
    """The reseller's paid sales and the refunds of their cancelled tickets, as its offers
    know them (the amounts are S-360's, read back when each closed). An offer in the middle
    of a follow-up counts as it was before it."""
    offers = store.OFFERS
    with bridge.engine.connect() as conn:
        rows = conn.execute(select(offers.c.result, offers.c.state, offers.c.created_at,
                                   offers.c.request).where(
            offers.c.institution == inst.code, offers.c.caller == reseller,
            offers.c.created_at < until)).all()  # one made later has nothing in the period
    out = []
    for text, state, created, request in rows:
        result = orjson.loads(text or "{}")
        if state != "done":
            result = (result.get("before") or {}).get("result") or {}
        if result.get("order_type") != "SALE" or orjson.loads(request).get("pay") is False:
            continue
        at = (result.get("plan") or {}).get("asked_at") or created
        out.append({"kind": "sale", "order_id": result["order_id"], "at": at,
                    "amount": (result.get("amounts") or {}).get("saleAmount") or 0,
                    "currency": result.get("currency")})
        for refund in result.get("refunds", []):
            out.append({"kind": "refund", "order_id": refund["order_id"], "at": refund["at"],
                        "currency": result.get("currency"), "amount": refund["amount"],
                        "tickets": len(refund["movements"])})
    return out


def _checked(client, order: dict, record: dict | None,
             reads: list[int]) -> tuple[dict | None, dict | None]:
    """The order as S-360 knows it (the webhook's record, else read from S-360), and the
    difference with the bridge's figure, if any."""
    if record is not None and _amount(record) == order["amount"]:
        return record, None
    said = {"order_id": order["order_id"], "kind": order["kind"], "bridge": order["amount"],
            "webhook": None if record is None else _amount(record)}
    if order["order_id"] is None:
        return record, {**said, "s360": None, "why": "S-360 gave no id for this refund"}
    if reads[0] <= 0:
        return record, {**said, "s360": None, "why": f"not checked: {MAX_READS} reads of "
                                                    "S-360 a report at most"}
    reads[0] -= 1
    try:
        read = client.call(SERVICE, "getOrderDetails", {"orderId": order["order_id"]})
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
    """The days asked (``YYYY-MM-DD``, both included, a year at most); a bad one is a 400."""
    try:
        start, end = dt.date.fromisoformat(first or ""), dt.date.fromisoformat(last or "")
    except ValueError:
        raise RequestRefused(400, "from and to are days, YYYY-MM-DD") from None
    if end < start:
        raise RequestRefused(400, f"to ({end}) is before from ({start})")
    if (end - start).days > 366 or start.year < 2000:
        raise RequestRefused(400, "a report covers a year at most, from 2000 on")
    return start, end
