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
              point_of_sales_id: 101053522399   # its sales channel's point of sales
              families: [SINGLE_ENTRY, PASS]     # S-360 productFamilyType values (§g.1)
              contacts: attach                   # none | attach | create
              max_tickets_per_order: 10
              orders_per_minute: 30
              calls_per_minute: 20               # its share of S-360's budget, per method
"""

from __future__ import annotations

import time

from jsonschema import Draft202012Validator
from sqlalchemy import func, select

from s360bridge.core.api import ConfigError, RequestRefused, schema_error

from . import families, store

FAMILIES = ("SINGLE_ENTRY", "SEASONTICKET", "PASS", "PACKAGE", "MEMBERSHIP", "SERVICE", "GOODS",
            "TRANSPORT", "HOSPITALITY")  # productFamilyType, FOUND-CODE K4 (REFERENCE §g.1)
OPTIONS = Draft202012Validator({
    "type": "object", "additionalProperties": False, "required": ["families"], "properties": {
        "point_of_sales_id": {"type": "integer"},
        "payment_method_id": {"type": "integer"},
        "families": {"type": "array", "minItems": 1, "uniqueItems": True,
                     "items": {"enum": list(FAMILIES)}},
        "contacts": {"enum": ["none", "attach", "create"]},
        "max_tickets_per_order": {"type": "integer", "minimum": 1, "maximum": 1000},
        "orders_per_minute": {"type": "integer", "minimum": 1},
        "calls_per_minute": {"type": "integer", "minimum": 1}}})


def check_options(options: dict) -> None:
    error = schema_error(OPTIONS, options)
    if error:
        raise ConfigError(error)


def options_of(inst, caller: str) -> dict:
    """A reseller's options ({} for the CRM operator, who sells everything)."""
    return inst.services["offers"].callers[caller].options if caller else {}


def check_offer(bridge, inst, caller: str, body: dict) -> None:
    """Refuse what the reseller may not ask: a sale it would not pay (403), a family it does
    not sell (403, naming it), contacts beyond what it may do (403), more tickets than an
    order may hold (422), more orders than its rate (429; a request repeated with its
    idempotency key is answered as before, whatever the rate)."""
    from .catalog import catalog_of

    if store.by_key(bridge.engine, inst.code, body["idempotency_key"], caller) is not None:
        return  # a repeat: the offer it made answers it
    if body.get("pay") is False:
        raise RequestRefused(403, f"reseller {caller!r} pays its sales (on pending account): "
                                  "pay cannot be false")
    options = options_of(inst, caller)
    catalog, _ = catalog_of(bridge, inst)
    allowed = set(options["families"])
    for i, line in enumerate(body["lines"]):
        try:
            family = families.family_of(catalog, line["product"])
        except families.UnknownInCatalog as exc:
            raise RequestRefused(422, f"(offer)/lines/{i}: {exc}") from None
        if family not in allowed:
            raise RequestRefused(403, f"(offer)/lines/{i}: reseller {caller!r} may not sell "
                                      f"product family {family} ({line['product']}); it sells "
                                      f"{', '.join(sorted(allowed))}")
    _check_contacts(caller, options.get("contacts", "none"), body)
    tickets = sum(line.get("quantity", 1) for line in body["lines"])
    most = options.get("max_tickets_per_order", 10)
    if tickets > most:
        raise RequestRefused(422, f"(offer): {tickets} tickets, more than the {most} an order "
                                  f"of reseller {caller!r} may hold")
    rate = options.get("orders_per_minute")
    if rate is not None and _made_since(bridge, inst.code, caller, time.time() - 60) >= rate:
        raise RequestRefused(429, f"reseller {caller!r} may create {rate} offers a minute",
                             headers={"Retry-After": "60"})


def _check_contacts(caller: str, may: str, body: dict) -> None:
    who = body.get("purchaser") or {}
    if may == "none" and (who or body.get("holders")):
        raise RequestRefused(403, f"reseller {caller!r} may not attach contacts to its orders")
    if may == "attach" and set(who) - {"contact_number"}:
        raise RequestRefused(403, f"reseller {caller!r} may attach existing contacts (by "
                                  "contact_number) but not find or create them")


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
