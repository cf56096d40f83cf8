"""Resellers: callers of the offers service with credentials of their own (``callers:`` under
``services.offers``), each selling on its own S-360 point of sales, only its product families,
within its limits.

    services:
      offers:
        auth: {type: api_key, header: x-api-key, key: {$env: MYVENUE_CRM_PUSH_KEY}}  # the CRM
        callers:
          ticketshop:
            auth: {type: api_key, header: x-api-key, key: {$env: MYVENUE_TICKETSHOP_KEY}}
            options:
              operator: MYVENUE_TICKETSHOP       # JWT aud: the S-360 operator of its channel
              families: [SINGLE_ENTRY, PASS]     # S-360 productFamilyType values (§g.1)
              contacts: attach                   # none | attach | create
              max_tickets_per_order: 10
              orders_per_minute: 30
              calls_per_minute: 20               # its share of S-360's budget, per method
"""

from __future__ import annotations

import time

import orjson
from jsonschema import Draft202012Validator
from sqlalchemy import func, select

from s360bridge.core.api import ConfigError, RequestRefused, schema_error

from . import families, store

FAMILIES = ("SINGLE_ENTRY", "SEASONTICKET", "PASS", "PACKAGE", "MEMBERSHIP", "SERVICE", "GOODS",
            "TRANSPORT", "HOSPITALITY")  # productFamilyType, FOUND-CODE K4 (REFERENCE §g.1)
# what a caller may do: a reseller's options, and the CRM operator's beside the service's
SETTINGS = {
    "operator": {"type": "string", "minLength": 1, "maxLength": 60},
    "point_of_sales_id": {"type": "integer"},
    "payment_method_id": {"type": "integer"},
    "families": {"type": "array", "minItems": 1, "uniqueItems": True,
                 "items": {"enum": list(FAMILIES)}},
    "contacts": {"enum": ["none", "attach", "create"]},
    "max_tickets_per_order": {"type": "integer", "minimum": 1, "maximum": 1000},
    "orders_per_minute": {"type": "integer", "minimum": 1},
    "calls_per_minute": {"type": "integer", "minimum": 1}}
OPTIONS = Draft202012Validator({"type": "object", "additionalProperties": False,
                                "required": ["families"], "properties": SETTINGS})


def check_options(options: dict) -> None:
    error = schema_error(OPTIONS, options)
    if error:
        raise ConfigError(error)


def options_of(inst, caller: str) -> dict:
    """A caller's settings: a reseller's options, or the service's for the CRM operator
    (``''``)."""
    service = inst.services["offers"]
    if not caller:
        return service.options
    return service.callers[caller].options if caller in service.callers else {}


def channel_of(inst, caller: str) -> str | None:
    """The S-360 operator whose sales channel the caller sells on (None: the institution's
    own operator's channel)."""
    operator = options_of(inst, caller).get("operator")
    api = inst.s360_api
    return None if api is not None and operator == api.operator else operator


def channels(inst) -> list[str | None]:
    """The sales channels the institution's callers (the CRM operator among them) sell on."""
    service = inst.services["offers"]
    used = {channel_of(inst, name) for name in ("", *service.callers)}
    return sorted(used, key=lambda channel: channel or "")


def client_of(bridge, inst, caller: str):
    """The S-360 client that calls for this caller: as its channel's operator."""
    return bridge.s360(inst, channel_of(inst, caller))


def offer_channel(inst, row: dict) -> str | None:
    """The channel an offer was made on (kept in its result when it was planned: a venue that
    changes a caller's ``operator`` later does not move the offers made before), else the
    caller's."""
    result = orjson.loads(row["result"]) if row.get("result") else {}
    for kept in (result, result.get("plan") or {}):
        if "channel" in kept:
            return kept["channel"]
    return channel_of(inst, row["caller"])


def offer_client(bridge, inst, row: dict):
    """The S-360 client for an offer's calls: as the operator of the channel it was made on."""
    return bridge.s360(inst, offer_channel(inst, row))


def check_offer(bridge, inst, caller: str, body: dict) -> None:
    """Refuse what the caller may not ask: a reseller's sale it would not pay (403), a family
    it does not sell (403, naming it), contacts beyond what it may do (403), more tickets than
    an order may hold (422), more orders than its rate (429; a request repeated with its
    idempotency key is answered as before, whatever the rate). The CRM operator (caller
    ``''``) has the same settings, under ``services.offers.options``, and by default sells
    every family, finds or creates contacts, with no cap."""
    from .catalog import catalog_of

    if store.by_key(bridge.engine, inst.code, body["idempotency_key"], caller) is not None:
        return  # a repeat: the offer it made answers it
    who = f"reseller {caller!r}" if caller else "the CRM operator"
    if caller and body.get("pay") is False:
        raise RequestRefused(403, f"{who} pays its sales (on pending account): "
                                  "pay cannot be false")
    options = options_of(inst, caller)
    if options.get("families"):
        catalog, _ = catalog_of(bridge, inst, channel_of(inst, caller))
        allowed = set(options["families"])
        for i, line in enumerate(body["lines"]):
            try:
                family = families.family_of(catalog, line["product"])
            except families.UnknownInCatalog as exc:
                raise RequestRefused(422, f"(offer)/lines/{i}: {exc}") from None
            if family not in allowed:
                raise RequestRefused(403, f"(offer)/lines/{i}: {who} may not sell product "
                                          f"family {family} ({line['product']}); it sells "
                                          f"{', '.join(sorted(allowed))}")
    _check_contacts(who, options.get("contacts", "none" if caller else "create"), body)
    tickets = sum(line.get("quantity", 1) for line in body["lines"])
    most = options.get("max_tickets_per_order", 10 if caller else None)
    if most is not None and tickets > most:
        raise RequestRefused(422, f"(offer): {tickets} tickets, more than the {most} an order "
                                  f"of {who} may hold")
    rate = options.get("orders_per_minute")
    if rate is not None and _made_since(bridge, inst.code, caller, time.time() - 60) >= rate:
        raise RequestRefused(429, f"{who} may create {rate} offers a minute",
                             headers={"Retry-After": "60"})


def _check_contacts(who: str, may: str, body: dict) -> None:
    person = body.get("purchaser") or {}
    if may == "none" and (person or body.get("holders")):
        raise RequestRefused(403, f"{who} may not attach contacts to its orders")
    if may == "attach" and set(person) - {"contact_number"}:
        raise RequestRefused(403, f"{who} may attach existing contacts (by contact_number) "
                                  "but not find or create them")


def _made_since(bridge, institution: str, caller: str, since: float) -> int:
    offers = store.OFFERS
    with bridge.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(offers).where(
            offers.c.institution == institution, offers.c.caller == caller,
            offers.c.created_at >= since)).scalar_one()


def catalog_for(catalog: dict, allowed: set[str]) -> dict:
    """The catalog with the products of the families a reseller sells only."""
    return {**catalog, "seasons": [
        {**s, "products": [p for p in s.get("products", [])
                           if p.get("productFamilyType") in allowed]}
        for s in catalog.get("seasons", [])]}


def quotas_of(catalog: dict) -> set[str]:
    """The availability keys of a catalog's products (seats, time slots, items)."""
    keys = set()
    for s in catalog.get("seasons", []):
        for p in s.get("products", []):
            for perf in (p.get("event") or {}).get("performances", []):
                keys.update(f"seats:{perf['id']}:{c['id']}" for c in perf["seatCategories"])
            keys.update(f"timeslot:{t['id']}" for t in p.get("timeslots") or [])
            keys.update(f"item:{i['id']}" for i in p.get("items") or [])
    return keys
