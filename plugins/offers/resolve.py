"""Offers whose last sales call got no clear answer, and offers that fail.

An uncertain offer is resolved by reading what S-360 holds, never by sending the call again
blindly, and only once the call cannot still be running in S-360 (``uncertain_read_after_
seconds`` after it became uncertain):

* a follow-up (confirm, release, cancel) reads its file (``getFileDetails``, FOUND-CODE h.4): an
  order of the kind the call makes, created since it was sent, is the call's; it is taken up
  where it is (open: closed as usual; closed: read back). No such order: S-360 did nothing,
  and the step is made again.
* a new order cannot be read: S-360 documents no look-up of an order by our reference (NOT
  FOUND). An order it may have opened holds places until it expires, is then abandoned, and
  sold nothing; so the offer stays uncertain until that expiry (and a margin) has passed, then
  fails with that certainty.

A failing offer gives back what its open order held (``abandonMovements``); a failing follow-up
leaves the offer as it was before it (a reservation stays releasable), with the failure kept.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

import orjson

from s360bridge.core.api import S360ApiError, S360BusinessError

from . import resellers, store

log = logging.getLogger("s360bridge.offers")
SERVICE = "externalOrderService"
MADE_BY = {"confirm": ("SALE",), "release": ("RESERVATION_FREEING", "OPTION_FREEING"),
           "cancel": ("REFUND_CLIENT",)}
CLOCK_SKEW_SECONDS = 5.0  # S-360's clock against ours, when matching an order to a call


class NotYet(Exception):
    """The offer stays uncertain for now; the recovery job looks again later."""


def _json(text):
    return orjson.loads(text) if text else {}


def _options(inst) -> dict:
    return inst.services["offers"].options


def became_uncertain(bridge, row: dict, why: str) -> None:
    result = _json(store.row(bridge.engine, row["id"])["result"])  # the step's, as saved
    store.save(bridge.engine, row["id"], state="uncertain", http_status=202, error=why,
               result={**result, "uncertain_since": time.time()})


def settling(inst, result: dict, key: str = "uncertain_since") -> None:
    """Raise NotYet while S-360 may still be working on the call that got no clear answer."""
    wait = _options(inst).get("uncertain_read_after_seconds", 60.0)
    if time.time() < (result.get(key) or 0.0) + wait:
        raise NotYet(f"S-360 may still be working on it: read after {wait:g} s")


def uncertain(bridge, inst, row: dict) -> None:
    """Resolve an uncertain offer (or one found in ``ordering`` after a crash) by reading."""
    if row["state"] == "ordering":
        became_uncertain(bridge, row, "the bridge stopped after sending a sales call and "
                                      "before storing its answer")
        row = store.row(bridge.engine, row["id"])
    result = _json(row["result"])
    if row["action"] == "create":
        _new_order(bridge, inst, row)
    else:
        settling(inst, result)
        _on_file(bridge, inst, row, result)


def _new_order(bridge, inst, row: dict) -> None:
    expires = dt.datetime.fromisoformat(row["expires_at"])
    margin = max(1.0, 0.05 * _options(inst).get("open_order_seconds", 1200))
    if dt.datetime.now(dt.UTC) < expires + dt.timedelta(seconds=margin):
        store.save(bridge.engine, row["id"], error=(
            "S-360 may have created an order for this offer (no clear answer to "
            "createOrUpdateOrder); it offers no way to find it: if it was created it holds "
            f"places until it expires at {row['expires_at']}, and sells nothing"))
        raise NotYet(f"uncertain until {row['expires_at']}")
    failed(bridge, inst, row["id"], 410, {"error": (
        "S-360 may have opened an order for this offer and gave no clear answer; it expired "
        f"at {row['expires_at']}: nothing was sold and nothing is held. Send the offer again "
        "with a new idempotency key")})


def _on_file(bridge, inst, row: dict, result: dict) -> None:
    from .sequence import _finish, cancelled, opened

    since = result["asked_at"] - CLOCK_SKEW_SECONDS  # when this step's call was sent
    try:
        file = resellers.offer_client(bridge, inst, row).call(
            SERVICE, "getFileDetails", {"fileId": row["file_id"]})
    except S360BusinessError as exc:
        raise NotYet(f"file {row['file_id']} could not be read: {exc}") from None
    known = set(result.get("orders_seen") or ())  # made by this offer's earlier steps
    made = [o for o in file.get("orderDetailsDatas") or []
            if o.get("orderType") in MADE_BY[row["action"]] and o.get("orderId") not in known
            and o.get("orderState") != "ABANDONED" and _epoch(o) >= since]
    if not made:  # S-360 did nothing: the step is made again
        log.info("%s: offer %s: S-360 shows no order of the uncertain call: sent again",
                 inst.code, row["id"])
        store.save(bridge.engine, row["id"], state="new", error=None, http_status=None)
        return
    order = made[-1]
    if row["action"] == "cancel":
        cancelled(bridge, row, order["orderId"])
    elif order.get("orderState") == "CLOSED":
        store.save(bridge.engine, row["id"], order_id=order["orderId"])
        _finish(bridge, store.row(bridge.engine, row["id"]), {"orderDetailsData": order})
    else:
        opened(bridge, inst, row, result["plan"], {
            "orderId": order["orderId"], "expirationDate": order.get("expirationDate"),
            "totalAmount": order.get("saleAmount"),
            "operationDataUpdates": [{"fileId": row["file_id"]}],
            "movementDataUpdates": [{"movementId": m["movementId"]}
                                    for m in order.get("movementDatas") or []]})


def _epoch(order: dict) -> float:
    created = order.get("creationDateTime")
    return dt.datetime.fromisoformat(created).timestamp() if created else 0.0


def failed(bridge, inst, offer_id: int, status: int, body: dict) -> None:
    """The offer's attempt ends with ``status`` and ``body``, its open order given back."""
    row = store.row(bridge.engine, offer_id)
    result = _json(row["result"])
    if row["state"] in ("open", "closing") and row["order_id"]:
        _give_back(bridge, inst, row, result)
    before = result.get("before")
    if before is None:
        store.save(bridge.engine, offer_id, state="failed", http_status=status,
                   error=body.get("error"), result={**result, "failure": body})
        return
    store.save(bridge.engine, offer_id, state="done", action=before["action"],
               order_id=before["order_id"], file_id=before["file_id"],
               http_status=before["http_status"], error=None,
               result={**before["result"], "last_follow_up": {
                   "action": row["action"], "status": status, **body}})


def _give_back(bridge, inst, row: dict, result: dict) -> None:
    """Abandon the movements of the offer's open order now, rather than at its expiry."""
    moves = result.get("movements") or []
    try:
        resellers.offer_client(bridge, inst, row).call(SERVICE, "abandonMovements", {
            "orderId": row["order_id"], "movementIds": moves})
    except S360ApiError as exc:
        log.warning("%s: offer %s: its open order %s could not be abandoned, S-360 frees its "
                    "places when it expires: %s", inst.code, row["id"], row["order_id"], exc)
