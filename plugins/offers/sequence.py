"""The S-360 sales sequence of one offer, step by step, each step durable before its call.

create:  new -> ordering (createOrUpdateOrder sent) -> open (orderId kept) -> holders ->
         closing (closeOrder, or createPaymentsAndCloseOrder with a pending-account payment)
         -> done (getOrderDetails read back: amounts, barcodes)
confirm: the same, from ``createOrUpdateOrder{SALE, fileId, RESUME_ALL_…_OPERATIONS}``
release: the same, with ``RESERVATION_FREEING`` / ``OPTION_FREEING`` and closeOrder
cancel:  ordering (cancelOperations sent) -> done

The Sales API is not idempotent and S-360 offers no look-up of an order by our reference. So
an offer found in ``ordering`` after a crash is ``uncertain``: it may hold an open order, which
S-360 abandons when it expires (``expires_at``), and the operator sees it. An offer found in
``open`` or ``closing`` is completed (its order is known).
"""

from __future__ import annotations

import datetime as dt
import logging
import time

import orjson

from s360bridge.core.api import CONTACT_SERVICE as CONTACTS
from s360bridge.core.api import (
    SEARCH_RESULTS,
    S360ApiError,
    S360BusinessError,
    best_match,
    leases,
)

from . import catalog as cache
from . import families, store

log = logging.getLogger("s360bridge.offers")
FACADE, SERVICE = "externalOrderFacade", "externalOrderService"
TYPES = {"sale": "SALE", "reservation": "RESERVATION", "option": "OPTION"}


class Failed(Exception):
    """The offer cannot go on: answered with ``status`` and ``body``."""

    def __init__(self, status: int, body: dict):
        super().__init__(body.get("error"))
        self.status, self.body = status, body


def _options(inst) -> dict:
    return inst.services["offers"].options


def _plan(bridge, inst, row: dict) -> dict:
    """The createOrUpdateOrder body (and what goes with it) for the offer's action."""
    request = _json(row["request"])
    kind = TYPES[request.get("type", "sale")]
    catalog, pos = cache.catalog_of(bridge, inst)
    base = {"pointOfSalesId": pos["pos"].get("posId"),
            "externalReference": f"s360bridge:{inst.code}:{row['idempotency_key']}"}
    previous = _json(row["result"]) or {}
    purchaser = previous.get("purchaser") or _purchaser(bridge, inst, request)
    if purchaser:
        base["purchasersInfo"] = [{"contactReference": purchaser}]
    if row["action"] == "confirm":
        option = f"RESUME_ALL_{kind}_OPERATIONS"
        return {"body": {**base, "orderType": "SALE", "fileId": row["file_id"],
                         "orderCreationOptions": [option]},
                "close_as": "SALE", "purchaser": purchaser, "type": "sale"}
    if row["action"] == "release":
        return {"body": {**base, "orderType": f"{kind}_FREEING", "fileId": row["file_id"]},
                "close_as": f"{kind}_FREEING", "purchaser": purchaser,
                "type": previous.get("type")}
    try:
        lines = [families.build(catalog, pos["audiences"], line) for line in request["lines"]]
    except families.UnknownInCatalog as exc:
        raise Failed(422, {"error": str(exc)}) from None
    return {"body": {**base, "orderType": kind, **families.order_body(lines)},
            "close_as": kind, "purchaser": purchaser, "type": request.get("type", "sale"),
            "asked": [{"line": i, "quota": ":".join(map(str, x.quota)),
                       "quantity": x.operation["quantity"]} for i, x in enumerate(lines)]}


def _purchaser(bridge, inst, request: dict) -> str | None:
    """The purchaser's contact number: given, or found by e-mail, or created."""
    who = request.get("purchaser") or {}
    if who.get("contact_number"):
        return who["contact_number"]
    if not who.get("email"):
        return None
    client = bridge.s360(inst)
    found = best_match(client.call(CONTACTS, "searchContact", {"email": who["email"]}).get(
        SEARCH_RESULTS) or [])
    if found:
        return found
    made = client.call(CONTACTS, "createCulturalContact", {"contactDataList": [
        {"identifier": 1, "email": who["email"], "firstName": who.get("first_name"),
         "lastName": who.get("last_name"), "createLogin": False}]})
    return (made.get("identifierContactMap") or {}).get("1")


def _json(text):
    return orjson.loads(text) if text else None


def _left(bridge, inst, plan: dict) -> list[dict]:
    """What is left of each quota the offer asked for (a fresh read, within the limits)."""
    try:
        cache.refresh_availability(bridge, inst, 3600, force=True)
    except S360ApiError:
        pass
    return [{**a, "left": cache.left_for(bridge, inst, tuple(a["quota"].split(":")))}
            for a in plan.get("asked", [])]


def _expiry(inst) -> str:
    """When an order opened now expires at the latest (S-360's open-order lifetime)."""
    seconds = _options(inst).get("open_order_seconds", 1200)
    return dt.datetime.fromtimestamp(time.time() + seconds, dt.UTC).isoformat()


def step(bridge, inst, row: dict) -> None:
    """Do the next step of the offer; raises Failed when it cannot go on."""
    engine, client, oid = bridge.engine, bridge.s360(inst), row["id"]
    state, action = row["state"], row["action"]
    if state == "new" and action == "cancel":  # a closed sale: nothing to plan
        store.save(engine, oid, state="ordering")
        try:
            client.call(SERVICE, "cancelOperations", {"orderId": row["order_id"]})
        except S360BusinessError as exc:
            raise Failed(422, {"error": str(exc)}) from None
        store.save(engine, oid, state="done", http_status=200,
                   result={**(_json(row["result"]) or {}), "state": "cancelled"})
    elif state == "new":
        plan = _plan(bridge, inst, row)
        store.save(engine, oid, state="ordering", expires_at=_expiry(inst),
                   result={**(_json(row["result"]) or {}), "plan": plan})
        try:
            answer = client.call(FACADE, "createOrUpdateOrder", plan["body"])
        except S360BusinessError as exc:
            if "availability" in f"{exc.detail} {exc.expected_exception}":
                raise Failed(409, {"error": "not enough places left",
                                   "asked": _left(bridge, inst, plan)}) from None
            raise Failed(422, {"error": str(exc)}) from None
        data = answer.get("orderUpdateData") or {}
        updates = data.get("operationDataUpdates") or [{}]
        store.save(engine, oid, state="open", order_id=data.get("orderId"),
                   file_id=updates[0].get("fileId") or row["file_id"],
                   expires_at=data.get("expirationDate") or _expiry(inst),
                   result={"plan": plan, "purchaser": plan["purchaser"], "type": plan["type"],
                           "movements": [m["movementId"] for m in
                                         data.get("movementDataUpdates") or []],
                           "total": data.get("totalAmount")})
    elif state == "open":
        result = _json(row["result"])
        holders = (_json(row["request"]) or {}).get("holders") or []
        if holders and action == "create":
            client.call(SERVICE, "setMovementContactData", families.holders_body(
                row["order_id"], result["movements"], holders))
        store.save(engine, oid, state="closing")
        _close(bridge, inst, row, result)
    elif state == "closing":
        details = client.call(SERVICE, "getOrderDetails", {"orderId": row["order_id"]})
        order_state = (details.get("orderDetailsData") or {}).get("orderState")
        if order_state == "CLOSED":
            _finish(bridge, inst, row, details)
        elif order_state == "ABANDONED":
            raise Failed(410, {"error": "S-360 abandoned the open order (it expired)"})
        else:
            _close(bridge, inst, row, _json(row["result"]))
    elif state == "ordering" and action == "cancel":  # found after a crash
        store.save(engine, oid, state="uncertain", http_status=500,
                   error="the bridge stopped after asking S-360 to cancel order "
                         f"{row['order_id']} and before storing its answer: check it in S-360")
    elif state == "ordering":  # found after a crash: S-360 may hold an open order
        store.save(engine, oid, state="uncertain", http_status=500,
                   error="the bridge stopped after asking S-360 for an order and before "
                         "storing its answer; S-360 offers no way to find it: if it was "
                         f"created it holds places until it expires at {row['expires_at']}")


def _close(bridge, inst, row: dict, result: dict) -> None:
    client, plan = bridge.s360(inst), result["plan"]
    purchaser = plan.get("purchaser")
    kind = plan["close_as"]
    pay = (_json(row["request"]) or {}).get("pay", True)
    try:
        if kind == "SALE" and pay and result.get("total"):
            method = _options(inst).get("payment_method_id") or _pending_method(bridge, inst)
            client.call(SERVICE, "createPaymentsAndCloseOrder", {
                "orderId": row["order_id"], "orderType": "SALE", "maxWaitingTime": 0,
                "payments": [{"amount": result["total"], "paymentMethodId": method}],
                **({"purchasersInfo": [{"contactReference": purchaser}]} if purchaser else {})})
        else:
            client.call(SERVICE, "closeOrder", {
                "orderId": row["order_id"], "orderType": kind, "generateBarCodes": True,
                **({"purchaserInfo": {"contactReference": purchaser}} if purchaser else {})})
    except S360BusinessError as exc:
        try:  # give the places back now rather than when the open order expires
            client.call(SERVICE, "abandonMovements", {"orderId": row["order_id"]})
        except S360ApiError:
            pass
        raise Failed(422, {"error": str(exc)}) from None
    _finish(bridge, inst, row, client.call(SERVICE, "getOrderDetails",
                                           {"orderId": row["order_id"]}))


def _pending_method(bridge, inst) -> int:
    _, pos = cache.catalog_of(bridge, inst)
    for m in pos["pos"].get("paymentMethods", []):
        if m.get("code") == "PENDING_ACCOUNT":
            return m["id"]
    raise Failed(422, {"error": "S-360's point of sales has no pending-account payment "
                                "method: set services.offers.options.payment_method_id"})


def _finish(bridge, inst, row: dict, details: dict) -> None:
    d = details.get("orderDetailsData") or {}
    result = _json(store.row(bridge.engine, row["id"])["result"]) or {}
    state = {"release": "released"}.get(row["action"], "closed")
    store.save(bridge.engine, row["id"], state="done", http_status=201, result={
        **result, "state": state, "order_id": d.get("orderId"), "order_type": d.get("orderType"),
        "order_state": d.get("orderState"),
        "amounts": {k: d.get(k) for k in ("saleAmount", "reservationAmount", "optionAmount")},
        "currency": (d.get("catalogCurrency") or {}).get("currencyCode"),
        "barcodes": [m.get("barcode") for m in d.get("movementDatas") or [] if m.get("barcode")],
        "type": result.get("plan", {}).get("type") or result.get("type")})


def lease_of(inst) -> float:
    """How long a process may work on an offer before another may take it over."""
    return _options(inst).get("lease_seconds", 60.0)


def run(bridge, inst, offer_id: int, lease_seconds: float | None = None) -> dict:
    """Take the offer and carry it as far as it goes now; answer its row."""
    lease_seconds = lease_of(inst) if lease_seconds is None else lease_seconds
    with leases.holding(bridge.engine, store.OFFERS, offer_id, lease_seconds) as held:
        while held:
            row = store.row(bridge.engine, offer_id)
            if row["state"] in store.FINAL:
                return row
            try:
                step(bridge, inst, row)
            except Failed as exc:
                store.save(bridge.engine, offer_id, state="failed", http_status=exc.status,
                           error=str(exc), result={**(_json(row["result"]) or {}),
                                                   "failure": exc.body})
            except S360ApiError as exc:  # S-360 unavailable: the next round goes on
                log.warning("%s: offer %s waits at %s: %s", inst.code, offer_id, row["state"],
                            exc)
                break
    return store.row(bridge.engine, offer_id)
