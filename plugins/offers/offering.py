"""What the offers' APIs share: the request, how an offer is shown and answered, creating one
and following it up, for one caller (the CRM operator, ``""``, or a reseller).

A request answers 201 with the result when the sequence completes within ``wait_seconds``,
else 202 with the offer's URL to poll (state ``uncertain`` included: S-360 gave no clear
answer, and the bridge reads what it holds before sending anything again). The idempotency key
(``idempotency_key`` in the body, or an ``Idempotency-Key`` header) makes a repeated request of
the same caller answer the same offer, never a new order.
"""

from __future__ import annotations

import threading

import orjson
from flask import request
from jsonschema import Draft202012Validator

from s360bridge.core.api import RequestRefused, json_response, schema_error

from . import sequence, store

LINE = {"type": "object", "required": ["product"], "properties": {
    "product": {"type": ["string", "integer"]}, "performance": {"type": "integer"},
    "timeslot": {"type": "integer"}, "seat_category": {"type": ["string", "integer"]},
    "tariff": {"type": ["string", "integer"]},
    "quantity": {"type": "integer", "minimum": 1, "maximum": 100}}}
PURCHASER = {"type": "object", "properties": {
    "contact_number": {"type": "string"}, "email": {"type": "string"},
    "first_name": {"type": "string"}, "last_name": {"type": "string"}}}
OFFER = {"type": "object", "required": ["lines"], "properties": {
    "idempotency_key": {"type": "string", "minLength": 1, "maxLength": 200},
    "type": {"enum": ["sale", "reservation", "option"]}, "purchaser": PURCHASER,
    "lines": {"type": "array", "minItems": 1, "items": LINE},
    "holders": {"type": "array", "items": {"type": "string"}}, "pay": {"type": "boolean"}}}
REQUEST = Draft202012Validator(OFFER)
# a cancel may name some of the order's tickets (their movement ids): a partial cancel
CANCEL = {"type": "object", "additionalProperties": False, "properties": {
    "tickets": {"type": "array", "minItems": 1, "uniqueItems": True,
                "items": {"type": "integer"}}}}
CANCEL_REQUEST = Draft202012Validator(CANCEL)
FOLLOW_UPS = {"confirm": ("reservation", "option"), "release": ("reservation", "option"),
              "cancel": ("sale",)}
DONE = {"confirm": "confirmed", "release": "released", "cancel": "cancelled"}
HIDDEN = ("plan", "movements", "before", "uncertain_since", "state", "cancel_tickets",
          "channel")


def view(row: dict, base: str) -> dict:
    """An offer as the API under ``base`` (the URL of its offers) shows it."""
    result = orjson.loads(row["result"]) if row["result"] else {}
    shown = {k: v for k, v in result.items() if k not in HIDDEN}
    # a finished offer says what it is (closed, released, cancelled); the others where it is
    state = result.get("state", "closed") if row["state"] == "done" else row["state"]
    return {"id": row["id"], "institution": row["institution"],
            "idempotency_key": row["idempotency_key"], "action": row["action"],
            "state": state, "order_id": row["order_id"], "file_id": row["file_id"],
            "expires_at": row["expires_at"], "error": row["error"], **shown,
            "url": f"{base}/{row['id']}"}


def answer(row: dict, base: str):
    body = view(row, base)
    if row["state"] == "done":
        return json_response(body, row["http_status"] or 200)
    if row["state"] == "failed":
        return json_response({**body, **(body.get("failure") or {})}, row["http_status"])
    return json_response(body, 202, {"Location": body["url"]})


def run_and_answer(bridge, inst, cfg, offer_id: int, base: str):
    worker = threading.Thread(target=sequence.run, args=(bridge, inst, offer_id),
                              daemon=True)
    worker.start()
    worker.join(cfg.options.get("wait_seconds", 5.0))
    return answer(store.row(bridge.engine, offer_id), base)


def _body(default=None):
    try:
        return orjson.loads(request.get_data() or default or b"null")
    except orjson.JSONDecodeError as exc:
        raise RequestRefused(400, f"body is not valid JSON: {exc}") from None


def requested_offer() -> dict:
    """The request's offer, checked against OFFER, with its idempotency key."""
    body = _body()
    error = schema_error(REQUEST, body, sep="/", root="(offer)")
    if error:
        raise RequestRefused(400, error)
    key = body.get("idempotency_key") or request.headers.get("Idempotency-Key")
    if not key or len(key) > 200:
        raise RequestRefused(400, "an idempotency key of 1 to 200 characters is required "
                                  "(idempotency_key, or the Idempotency-Key header)")
    return {**body, "idempotency_key": key}


def create(req, body: dict, caller: str, base: str):
    bridge, inst, cfg = req.bridge, req.institution, req.config
    key = body["idempotency_key"]
    row, made = store.create(bridge.engine, inst.code, key, body, caller)
    if not made and orjson.loads(row["request"]) != body:
        raise RequestRefused(422, f"idempotency key {key!r} was used for another offer "
                                  f"({row['id']})")
    return run_and_answer(bridge, inst, cfg, row["id"], base)


def owned(req, caller: str, offer_id: int) -> dict:
    """The caller's offer ``offer_id``; another's, like one that does not exist, is a 404."""
    row = store.row(req.bridge.engine, offer_id) if 0 < offer_id < 2**63 else None
    if row is None or row["institution"] != req.institution.code or row["caller"] != caller:
        raise RequestRefused(404, f"no offer {offer_id} for {req.institution.code!r}")
    return row


def follow_up(req, row: dict, action: str, base: str):
    """Start ``action`` on the offer and answer it; a follow-up that failed is answered with
    its failure, the offer staying what it was."""
    bridge, inst, cfg = req.bridge, req.institution, req.config
    some = None
    if action == "cancel":
        body = _body(b"{}")
        error = schema_error(CANCEL_REQUEST, body, sep="/", root="(cancel)")
        if error:
            raise RequestRefused(400, error)
        some = body.get("tickets")
    start_follow_up(bridge, row, action, some)
    answered = run_and_answer(bridge, inst, cfg, row["id"], base)
    row = store.row(bridge.engine, row["id"])
    failure = (orjson.loads(row["result"] or "{}")).get("last_follow_up") or {}
    if row["action"] != action and failure.get("action") == action:
        said = {k: v for k, v in failure.items() if k not in ("action", "status")}
        return json_response({**view(row, base), **said}, failure["status"])
    return answered


def start_follow_up(bridge, row: dict, action: str, some: list[int] | None = None) -> None:
    """Turn a finished offer to ``action`` (a cancel of ``some`` of its tickets only, when
    given); repeating a follow-up already done changes nothing (it answers the same result)."""
    if action not in FOLLOW_UPS:
        raise RequestRefused(404, f"unknown follow-up {action!r} (known: "
                                  f"{', '.join(FOLLOW_UPS)})")
    result = orjson.loads(row["result"] or "{}")
    if action == "cancel" and row["state"] == "done" and result.get("tickets"):
        held = {t["movement_id"] for t in result["tickets"]}
        if set(some or ()) - held:
            raise RequestRefused(422, f"(cancel)/tickets: not tickets of offer {row['id']}: "
                                      f"{sorted(set(some) - held)}")
        if set(held if some is None else some) <= set(result.get("cancelled", [])):
            return  # cancelled already: the same answer
    elif row["action"] == action:
        return
    kind = result.get("type")
    if row["state"] != "done" or kind not in FOLLOW_UPS[action] \
            or result.get("state") not in (None, "closed"):
        shown = view(row, "")["state"]
        raise RequestRefused(409, f"offer {row['id']} is a {kind or 'unfinished'} offer, "
                                  f"{shown}: it cannot be {DONE[action]}")
    before = {"action": row["action"], "order_id": row["order_id"], "file_id": row["file_id"],
              "http_status": row["http_status"],
              "result": {k: v for k, v in result.items() if k != "last_follow_up"}}
    if not store.save_if_unchanged(bridge.engine, row, action=action, state="new",
                                   http_status=None, error=None,
                                   result={**before["result"], "before": before,
                                           "cancel_tickets": some}):
        raise RequestRefused(409, f"offer {row['id']} changed meanwhile (another follow-up "
                                  "at the same time): read it again")
