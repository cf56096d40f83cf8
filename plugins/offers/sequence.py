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

import logging
import time
from contextlib import nullcontext

from s360bridge.core.api import (
    S360ApiError,
    S360AuthError,
    S360BusinessError,
    S360QuotaSpent,
    S360Uncertain,
    leases,
)

from . import families, resellers, resolve, store, tickets
from .plan import Failed, client_of, expiry, left_of, loaded, order_plan, settings

log = logging.getLogger("s360bridge.offers")
FACADE, SERVICE = "externalOrderFacade", "externalOrderService"
CREDENTIALS_REFUSED = ("S-360 refused the bridge's credentials for this sales channel: nothing "
                       "was ordered; the venue must correct its S-360 set-up (the bridge's log "
                       "says what was refused)")


def step(bridge, inst, row: dict) -> None:
    """Do the next step of the offer; raises Failed when it cannot go on."""
    engine, oid, state = bridge.engine, row["id"], row["state"]
    if state == "new" and row["action"] == "cancel":  # a closed sale: nothing to plan
        store.save(engine, oid, state="ordering", result={
            **(loaded(row["result"]) or {}), "asked_at": time.time()})
        answer = _sent(bridge, row, lambda: client_of(bridge, inst, row).call(
            SERVICE, "cancelOperations", {"orderId": row["order_id"], **_movements(row)}))
        cancelled(bridge, row, (answer.get("orderUpdateData") or {}).get("orderId"))
    elif state == "new":
        plan = order_plan(bridge, inst, row)
        store.save(engine, oid, state="ordering", expires_at=expiry(inst),
                   result={**(loaded(row["result"]) or {}), "plan": plan,
                           "asked_at": plan["asked_at"], "channel": plan["channel"]})
        try:
            answer = _sent(bridge, row, lambda: client_of(bridge, inst, row).call(
                FACADE, "createOrUpdateOrder", plan["body"]))
        except S360BusinessError as exc:
            if "availability" in f"{exc.detail} {exc.expected_exception}":
                raise Failed(409, {"error": "not enough places left",
                                   "asked": left_of(bridge, inst, row, plan)}) from None
            raise
        opened(bridge, inst, row, plan, answer.get("orderUpdateData") or {})
    elif state == "open":
        result = loaded(row["result"])
        holders = (loaded(row["request"]) or {}).get("holders") or []
        if holders and row["action"] in ("create", "confirm"):
            client_of(bridge, inst, row).call(SERVICE, "setMovementContactData",
                                            families.holders_body(row["order_id"],
                                                                  result["movements"], holders))
        store.save(engine, oid, state="closing")
        _close(bridge, inst, row, result)
    elif state == "closing":  # a close may have been sent: read the order first
        resolve.settling(inst, loaded(row["result"]) or {}, "close_uncertain_since")
        details = client_of(bridge, inst, row).call(SERVICE, "getOrderDetails",
                                                  {"orderId": row["order_id"]})
        order_state = (details.get("orderDetailsData") or {}).get("orderState")
        if order_state == "CLOSED":
            _finish(bridge, row, details)
        elif order_state == "ABANDONED":
            raise Failed(410, {"error": "S-360 abandoned the open order (it expired)"})
        else:
            _close(bridge, inst, row, loaded(row["result"]))
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
               expires_at=data.get("expirationDate") or expiry(inst),
               result={**(loaded(row["result"]) or {}), "plan": plan,
                       "purchaser": plan["purchaser"], "type": plan["type"],
                       "movements": [m["movementId"] for m in
                                     data.get("movementDataUpdates") or []],
                       "total": data.get("totalAmount")})


def _movements(row: dict) -> dict:
    """The movements a cancel names: the tickets asked, else those not cancelled yet."""
    result = loaded(row["result"]) or {}
    moves = result.get("cancel_tickets") or [
        m for m in result.get("movements") or [] if m not in result.get("cancelled", [])]
    return {"movementIds": moves} if moves else {}


def cancelled(bridge, row: dict, refund: int | None) -> None:
    """A cancel done (``refund``: the order S-360 made for it): its tickets are cancelled; the
    offer too once none is left."""
    result = loaded(store.row(bridge.engine, row["id"])["result"]) or {}
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
    client, plan = client_of(bridge, inst, row), result["plan"]
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
        now = loaded(store.row(bridge.engine, row["id"])["result"]) or {}
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
    result = loaded(store.row(bridge.engine, row["id"])["result"]) or {}
    state = {"release": "released"}.get(row["action"], "closed")
    made = tickets.tickets(details, settings(bridge.institution(row["institution"])).get(
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
    return settings(inst).get("lease_seconds", 60.0)


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
