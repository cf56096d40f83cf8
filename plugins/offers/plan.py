"""What an offer's S-360 order is made of, read before any call: the createOrUpdateOrder body
for its action (catalog lines, purchaser, pending-account payment), and what is left of the
quotas it asked for when S-360 refuses it (sequence.py makes the calls)."""

from __future__ import annotations

import datetime as dt
import time

import orjson

from s360bridge.core.api import CONTACT_SERVICE as CONTACTS
from s360bridge.core.api import SEARCH_RESULTS, S360ApiError, best_match

from . import catalog as cache
from . import families, resellers

TYPES = {"sale": "SALE", "reservation": "RESERVATION", "option": "OPTION"}


class Failed(Exception):
    """The offer cannot go on: answered with ``status`` and ``body``."""

    def __init__(self, status: int, body: dict):
        super().__init__(body.get("error"))
        self.status, self.body = status, body


def settings(inst) -> dict:
    """The institution's ``services.offers.options``."""
    return inst.services["offers"].options


def loaded(text):
    """A JSON column of the offer's row, None when empty."""
    return orjson.loads(text) if text else None


def order_plan(bridge, inst, row: dict) -> dict:
    """The createOrUpdateOrder body (and what goes with it) for the offer's action; every
    read it needs (catalog, purchaser, payment method) is done here, before any order."""
    request = loaded(row["request"])
    kind = TYPES[request.get("type", "sale")]
    channel = resellers.offer_channel(inst, row)
    catalog, pos = cache.catalog_of(bridge, inst, channel)
    reseller = resellers.options_of(inst, row["caller"])
    caller = f"{row['caller']}:" if row["caller"] else ""
    base = {"pointOfSalesId": reseller.get("point_of_sales_id") or pos["pos"].get("posId"),
            "externalReference": f"s360bridge:{inst.code}:{caller}{row['idempotency_key']}"}
    previous = loaded(row["result"]) or {}
    purchaser = previous.get("purchaser") or _purchaser(bridge, inst, row, request)
    if purchaser:
        base["purchasersInfo"] = [{"contactReference": purchaser}]
    common = {"purchaser": purchaser, "asked_at": time.time(), "channel": channel}
    if row["action"] == "confirm":
        option = f"RESUME_ALL_{kind}_OPERATIONS"
        return {**common, "close_as": "SALE", "type": "sale",
                "pay": _payment(pos, inst, request, reseller),
                "body": {**base, "orderType": "SALE", "fileId": row["file_id"],
                         "orderCreationOptions": [option]}}
    if row["action"] == "release":
        return {**common, "close_as": f"{kind}_FREEING", "type": previous.get("type"),
                "body": {**base, "orderType": f"{kind}_FREEING", "fileId": row["file_id"]}}
    try:
        lines = [families.build(catalog, pos["audiences"], line) for line in request["lines"]]
    except families.UnknownInCatalog as exc:
        raise Failed(422, {"error": str(exc)}) from None
    return {**common, "close_as": kind, "type": request.get("type", "sale"),
            "pay": _payment(pos, inst, request, reseller) if kind == "SALE" else None,
            "body": {**base, "orderType": kind, **families.order_body(lines)},
            "asked": [{"line": i, "quota": ":".join(map(str, x.quota)),
                       "quantity": x.operation["quantity"]} for i, x in enumerate(lines)]}


def _payment(pos: dict, inst, request: dict, reseller: dict) -> int | None:
    """The pending-account payment method of a sale to be paid (None: closed unpaid): the
    reseller's, else the service's, else the point of sales' PENDING_ACCOUNT method."""
    if not request.get("pay", True):
        return None
    return reseller.get("payment_method_id") or settings(inst).get("payment_method_id") \
        or _pending_method(pos)


def _pending_method(pos: dict) -> int:
    for m in pos["pos"].get("paymentMethods", []):
        if m.get("code") == "PENDING_ACCOUNT":
            return m["id"]
    raise Failed(422, {"error": "S-360's point of sales has no pending-account payment "
                                "method: set services.offers.options.payment_method_id"})


def client_of(bridge, inst, row: dict):
    """The S-360 client of the offer (as the operator of the channel it is made on)."""
    return resellers.offer_client(bridge, inst, row)


def _purchaser(bridge, inst, row: dict, request: dict) -> str | None:
    """The purchaser's contact number: given, or found by e-mail, or created (by e-mail or
    by name alone)."""
    who = request.get("purchaser") or {}
    if who.get("contact_number"):
        return who["contact_number"]
    if not (who.get("email") or who.get("first_name") or who.get("last_name")):
        return None
    client = client_of(bridge, inst, row)
    if who.get("email"):
        found = best_match(client.call(CONTACTS, "searchContact", {"email": who["email"]}).get(
            SEARCH_RESULTS) or [])
        if found:
            return found
    made = client.call(CONTACTS, "createCulturalContact", {"contactDataList": [
        {"identifier": 1, "createLogin": False, **{k: v for k, v in (
            ("email", who.get("email")), ("firstName", who.get("first_name")),
            ("lastName", who.get("last_name"))) if v}}]})
    return (made.get("identifierContactMap") or {}).get("1")


def left_of(bridge, inst, row: dict, plan: dict) -> list[dict]:
    """What is left of each quota the offer asked for (a fresh read, within the limits)."""
    channel = resellers.offer_channel(inst, row)
    try:
        cache.refresh_availability(bridge, inst, 3600, channel, force=True)
    except S360ApiError:
        pass
    return [{**a, "left": cache.left_for(bridge, inst, tuple(a["quota"].split(":")), channel)}
            for a in plan.get("asked", [])]


def expiry(inst) -> str:
    """When an order opened now expires at the latest (S-360's open-order lifetime)."""
    seconds = settings(inst).get("open_order_seconds", 1200)
    return dt.datetime.fromtimestamp(time.time() + seconds, dt.UTC).isoformat()
