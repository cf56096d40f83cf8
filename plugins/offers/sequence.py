"""The S-360 sales sequence of one offer, step by step, each step durable before its call.

create:  new -> ordering (createOrUpdateOrder sent) -> open (orderId kept) -> holders ->
         closing (closeOrder, or createPaymentsAndCloseOrder with a pending-account payment)
         -> done (getOrderDetails read back: amounts, barcodes)
confirm: the same, from ``createOrUpdateOrder{SALE, fileId, RESUME_ALL_…_OPERATIONS}``
release: the same, with ``RESERVATION_FREEING`` / ``OPTION_FREEING`` and closeOrder
cancel:  ordering (cancelOperations sent) -> done

The sales calls are not idempotent, and the client makes them again only where S-360 certainly
did nothing (core/s360/client.py). After a timeout, a 5xx or a crash between a call and its
answer the offer is ``uncertain``, and what S-360 holds is read before anything is sent again
(resolve.py). A business refusal ends the attempt with a clear answer and gives back what the
offer's open order held; a failed follow-up leaves the offer as it was (still releasable).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from contextlib import nullcontext

import orjson

from s360bridge.core.api import CONTACT_SERVICE as CONTACTS
from s360bridge.core.api import (
    SEARCH_RESULTS,
    S360ApiError,
    S360AuthError,
    S360BusinessError,
    S360QuotaSpent,
    S360Uncertain,
    best_match,
    leases,
)

from . import catalog as cache
from . import families, resellers, resolve, store, tickets

log = logging.getLogger("s360bridge.offers")
FACADE, SERVICE = "externalOrderFacade", "externalOrderService"
TYPES = {"sale": "SALE", "reservation": "RESERVATION", "option": "OPTION"}
CREDENTIALS_REFUSED = ("S-360 refused the bridge's credentials for this sales channel: nothing "
                       "was ordered; the venue must correct its S-360 set-up (the bridge's log "
                       "says what was refused)")


class Failed(Exception):
    """The offer cannot go on: answered with ``status`` and ``body``."""

    def __init__(self, status: int, body: dict):
        super().__init__(body.get("error"))
        self.status, self.body = status, body


def _options(inst) -> dict:
    return inst.services["offers"].options


def _json(text):
    return orjson.loads(text) if text else None


def _plan(bridge, inst, row: dict) -> dict:
    """The createOrUpdateOrder body (and what goes with it) for the offer's action; every
    read it needs (catalog, purchaser, payment method) is done here, before any order."""
    request = _json(row["request"])
    kind = TYPES[request.get("type", "sale")]
    channel = resellers.offer_channel(inst, row)
    catalog, pos = cache.catalog_of(bridge, inst, channel)
    reseller = resellers.options_of(inst, row["caller"])
    caller = f"{row['caller']}:" if row["caller"] else ""
    base = {"pointOfSalesId": reseller.get("point_of_sales_id") or pos["pos"].get("posId"),
            "externalReference": f"s360bridge:{inst.code}:{caller}{row['idempotency_key']}"}
    previous = _json(row["result"]) or {}
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
    return reseller.get("payment_method_id") or _options(inst).get("payment_method_id") \
        or _pending_method(pos)


def _pending_method(pos: dict) -> int:
    for m in pos["pos"].get("paymentMethods", []):
        if m.get("code") == "PENDING_ACCOUNT":
            return m["id"]
    raise Failed(422, {"error": "S-360's point of sales has no pending-account payment "
                                "method: set services.offers.options.payment_method_id"})


def _client(bridge, inst, row: dict):
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
    client = _client(bridge, inst, row)
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


def _left(bridge, inst, row: dict, plan: dict) -> list[dict]:
    """What is left of each quota the offer asked for (a fresh read, within the limits)."""
    channel = resellers.offer_channel(inst, row)
    try:
        cache.refresh_availability(bridge, inst, 3600, channel, force=True)
    except S360ApiError:
        pass
    return [{**a, "left": cache.left_for(bridge, inst, tuple(a["quota"].split(":")), channel)}
            for a in plan.get("asked", [])]


def _expiry(inst) -> str:
    """When an order opened now expires at the latest (S-360's open-order lifetime)."""
    seconds = _options(inst).get("open_order_seconds", 1200)
    return dt.datetime.fromtimestamp(time.time() + seconds, dt.UTC).isoformat()


def step(bridge, inst, row: dict) -> None:
    """Do the next step of the offer; raises Failed when it cannot go on."""
    engine, oid, state = bridge.engine, row["id"], row["state"]
    if state == "new" and row["action"] == "cancel":  # a closed sale: nothing to plan
        store.save(engine, oid, state="ordering", result={
            **(_json(row["result"]) or {}), "asked_at": time.time()})
        answer = _sent(bridge, row, lambda: _client(bridge, inst, row).call(
            SERVICE, "cancelOperations", {"orderId": row["order_id"], **_movements(row)}))
        cancelled(bridge, row, (answer.get("orderUpdateData") or {}).get("orderId"))
    elif state == "new":
        plan = _plan(bridge, inst, row)
        store.save(engine, oid, state="ordering", expires_at=_expiry(inst),
                   result={**(_json(row["result"]) or {}), "plan": plan,
                           "asked_at": plan["asked_at"], "channel": plan["channel"]})
        try:
            answer = _sent(bridge, row, lambda: _client(bridge, inst, row).call(
                FACADE, "createOrUpdateOrder", plan["body"]))
        except S360BusinessError as exc:
            if "availability" in f"{exc.detail} {exc.expected_exception}":
                raise Failed(409, {"error": "not enough places left",
                                   "asked": _left(bridge, inst, row, plan)}) from None
            raise
        opened(bridge, inst, row, plan, answer.get("orderUpdateData") or {})
    elif state == "open":
        result = _json(row["result"])
        holders = (_json(row["request"]) or {}).get("holders") or []
        if holders and row["action"] in ("create", "confirm"):
            _client(bridge, inst, row).call(SERVICE, "setMovementContactData",
                                            families.holders_body(row["order_id"],
                                                                  result["movements"], holders))
        store.save(engine, oid, state="closing")
        _close(bridge, inst, row, result)
    elif state == "closing":  # a close may have been sent: read the order first
        resolve.settling(inst, _json(row["result"]) or {}, "close_uncertain_since")
        details = _client(bridge, inst, row).call(SERVICE, "getOrderDetails",
                                                  {"orderId": row["order_id"]})
        order_state = (details.get("orderDetailsData") or {}).get("orderState")
        if order_state == "CLOSED":
            _finish(bridge, row, details)
        elif order_state == "ABANDONED":
            raise Failed(410, {"error": "S-360 abandoned the open order (it expired)"})
        else:
            _close(bridge, inst, row, _json(row["result"]))
    elif state in ("ordering", "uncertain"):  # the call may have been made: read first
        resolve.uncertain(bridge, inst, row)


def _sent(bridge, row: dict, call):
    """Make a call that changes an order: no clear answer makes the offer uncertain (raised
    on as S360Uncertain); a failure where S-360 did nothing takes the step back to ``new``."""
    try:
        return call()
    except S360Uncertain as exc:
        resolve.became_uncertain(bridge, row, str(exc))
        raise
    except S360BusinessError:
        raise
    except S360ApiError:
        store.save(bridge.engine, row["id"], state="new")
        raise


def opened(bridge, inst, row: dict, plan: dict, data: dict) -> None:
    """Keep what createOrUpdateOrder answered (or what the file shows it made)."""
    updates = data.get("operationDataUpdates") or [{}]
    store.save(bridge.engine, row["id"], state="open", order_id=data.get("orderId"),
               file_id=updates[0].get("fileId") or row["file_id"],
               expires_at=data.get("expirationDate") or _expiry(inst),
               result={**(_json(row["result"]) or {}), "plan": plan,
                       "purchaser": plan["purchaser"], "type": plan["type"],
                       "movements": [m["movementId"] for m in
                                     data.get("movementDataUpdates") or []],
                       "total": data.get("totalAmount")})


def _movements(row: dict) -> dict:
    """The movements a cancel names: the tickets asked, else those not cancelled yet."""
    result = _json(row["result"]) or {}
    moves = result.get("cancel_tickets") or [
        m for m in result.get("movements") or [] if m not in result.get("cancelled", [])]
    return {"movementIds": moves} if moves else {}


def cancelled(bridge, row: dict, refund: int | None) -> None:
    """A cancel done (``refund``: the order S-360 made for it): its tickets are cancelled; the
    offer too once none is left."""
    result = _json(store.row(bridge.engine, row["id"])["result"]) or {}
    now = set(_movements(row).get("movementIds", [])) - set(result.get("cancelled", []))
    gone = sorted({*result.get("cancelled", []), *now})
    left = [m for m in result.get("movements") or [] if m not in gone]
    prices = {t["movement_id"]: t.get("price") or 0 for t in result.get("tickets", [])}
    store.save(bridge.engine, row["id"], state="done", http_status=200, error=None, result={
        **result, "cancelled": gone, "cancel_tickets": None,
        "orders_seen": [*result.get("orders_seen", []), *([refund] if refund else [])],
        # what each cancel refunded, for the settlement (refund None: S-360 gave no order id)
        "refunds": [*result.get("refunds", []), {
            "order_id": refund, "movements": sorted(now),
            "amount": -sum(prices.get(m, 0) for m in now), "at": time.time()}],
        "state": "closed" if left else "cancelled",
        "tickets": [{**t, "cancelled": t["movement_id"] in gone}
                    for t in result.get("tickets", [])]})


def _close(bridge, inst, row: dict, result: dict) -> None:
    client, plan = _client(bridge, inst, row), result["plan"]
    purchaser, kind, method = plan.get("purchaser"), plan["close_as"], plan.get("pay")
    who = {"purchasersInfo": [{"contactReference": purchaser}]} if purchaser else {}
    order = {"orderId": row["order_id"]}
    try:
        if kind == "SALE" and method:
            total = result.get("total")
            if total is None:  # S-360 did not say: the order itself does
                total = (client.call(SERVICE, "getOrderDetails", order)
                         .get("orderDetailsData") or {}).get("saleAmount")
            client.call(SERVICE, "createPaymentsAndCloseOrder", {
                **order, "orderType": "SALE", "maxWaitingTime": 0,
                "payments": [{"amount": total, "paymentMethodId": method}], **who})
        else:
            client.call(SERVICE, "closeOrder", {
                **order, "orderType": kind, "generateBarCodes": True,
                **({"purchaserInfo": who["purchasersInfo"][0]} if who else {})})
    except S360Uncertain:  # read once S-360 can no longer be working on it
        now = _json(store.row(bridge.engine, row["id"])["result"]) or {}
        store.save(bridge.engine, row["id"], result={**now, "close_uncertain_since": time.time()})
        raise
    except S360BusinessError:  # a close before, with no clear answer, may have closed it
        details = client.call(SERVICE, "getOrderDetails", order)
        if (details.get("orderDetailsData") or {}).get("orderState") == "CLOSED":
            _finish(bridge, row, details)
            return
        raise
    _finish(bridge, row, client.call(SERVICE, "getOrderDetails", order))


def _finish(bridge, row: dict, details: dict) -> None:
    d = details.get("orderDetailsData") or {}
    result = _json(store.row(bridge.engine, row["id"])["result"]) or {}
    state = {"release": "released"}.get(row["action"], "closed")
    made = tickets.tickets(details, _options(bridge.institution(row["institution"])).get(
        "ticket_fields"))
    store.save(bridge.engine, row["id"], state="done", http_status=201, error=None, result={
        **result, "state": state, "order_id": d.get("orderId"), "order_type": d.get("orderType"),
        "order_state": d.get("orderState"),
        "amounts": {k: d.get(k) for k in ("saleAmount", "reservationAmount", "optionAmount")},
        "currency": (d.get("catalogCurrency") or {}).get("currencyCode"),
        "barcodes": [t["barcode"] for t in made if t["barcode"]], "tickets": made,
        "movements": [t["movement_id"] for t in made],
        "type": result.get("plan", {}).get("type") or result.get("type")})


def _share(bridge, inst, caller: str):
    """A reseller's calls count against its share of the institution's budget, if capped."""
    calls = resellers.options_of(inst, caller).get("calls_per_minute")
    return bridge.s360(inst).share(caller, calls) if calls else nullcontext()  # any operator


def lease_of(inst) -> float:
    """How long a process may work on an offer before another may take it over."""
    return _options(inst).get("lease_seconds", 60.0)


def run(bridge, inst, offer_id: int, lease_seconds: float | None = None) -> dict:
    """Take the offer and carry it as far as it goes now; answer its row."""
    lease_seconds = lease_of(inst) if lease_seconds is None else lease_seconds
    caller = store.row(bridge.engine, offer_id)["caller"]
    with leases.holding(bridge.engine, store.OFFERS, offer_id, lease_seconds) as held, \
            _share(bridge, inst, caller):
        while held:
            row = store.row(bridge.engine, offer_id)
            if row["state"] in store.FINAL:
                return row
            try:
                step(bridge, inst, row)
            except Failed as exc:
                resolve.failed(bridge, inst, offer_id, exc.status, exc.body)
            except S360BusinessError as exc:  # S-360 refused: this attempt ends here
                resolve.failed(bridge, inst, offer_id, 422, {"error": str(exc)})
            except S360QuotaSpent as exc:  # nothing sent, and nothing will be this month
                resolve.failed(bridge, inst, offer_id, 429, {"error": str(exc)})
            except S360AuthError as exc:  # S-360 did nothing; the venue must fix its set-up
                log.error("%s: offer %s: %s", inst.code, offer_id, exc)
                if store.row(bridge.engine, offer_id)["state"] != "new":
                    break  # an order exists: carried on once the credentials are right
                resolve.failed(bridge, inst, offer_id, 503, {"error": CREDENTIALS_REFUSED})
            except S360Uncertain:  # the offer is uncertain now: the next round reads
                continue
            except (S360ApiError, resolve.NotYet) as exc:  # the next round goes on
                log.warning("%s: offer %s waits at %s: %s", inst.code, offer_id,
                            store.row(bridge.engine, offer_id)["state"], exc)
                break
    return store.row(bridge.engine, offer_id)
