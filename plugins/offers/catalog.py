"""The catalog and availability cache: refreshed by scheduled jobs inside S-360's advice.

The catalog is read once a day, or sooner when ``getLastSetupUpdate`` reports a change
(REFERENCE §g.2); availabilities every ``availability_every_seconds`` (an hour by default), and
never twice within a minute, whoever asks (§g.3, §e.4). Prices stay S-360's integers.

Each sales channel has its own: the institution's operator sees the products of its channel,
and a reseller with an ``operator`` of its own sees its channel's (``getCatalogDetailed`` and
``getPOSConfig`` answer for the calling operator, §g.2). ``channel`` is that operator, None for
the institution's. Season tickets' availability is asked per season ticket with
``getEventAvailability{performanceIds, composedProductId}`` (§g.3); the performances come from
the catalog's ``items[].lines[].performanceIds`` (INFERRED), and a season ticket that shows none
has no known availability.
"""

from __future__ import annotations

import logging
import time

from s360bridge.core.api import S360BusinessError

from . import store
from .families import COMPOSED

log = logging.getLogger("s360bridge.offers")
MIN_INTERVAL = 60.0  # seconds: no refresh of either, ever, more often than this
CATALOG_MAX_AGE = 24 * 3600.0


def _what(kind: str, channel: str | None) -> str:
    return kind if channel is None else f"{kind}@{channel}"


def refresh_catalog(bridge, inst, channel: str | None = None, force: bool = False) -> bool:
    """Read the catalog again if it changed or is a day old; answer whether it did."""
    engine, client = bridge.engine, bridge.s360(inst, channel)
    known = store.cached(engine, inst.code, _what("catalog", channel))
    now = time.time()
    if known and now - known["fetched_at"] < MIN_INTERVAL:
        return False
    marker = client.call("catalogService", "getLastSetupUpdate", {}).get("lastSetupUpdate")
    if known and not force and known["marker"] == marker \
            and now - known["fetched_at"] < CATALOG_MAX_AGE:
        return False
    data = client.call("catalogService", "getCatalogDetailed", {"scope": "EXTENDED"})
    pos = client.call("catalogService", "getPOSConfig", {})
    audiences = client.call("catalogService", "listAudienceSubcategories", {})
    store.cache(engine, inst.code, _what("pos", channel), {
        "pos": pos.get("posConfigData") or {},
        "audiences": {a["code"]: a["id"] for a in audiences.get("audienceSubCategories", [])}})
    store.cache(engine, inst.code, _what("catalog", channel), data.get("catalogData") or {},
                marker)
    return True


def refresh_availability(bridge, inst, every: float, channel: str | None = None,
                         force: bool = False) -> bool:
    """Read the availabilities of every cached product; answer whether it did."""
    engine = bridge.engine
    known = store.cached(engine, inst.code, _what("availability", channel))
    now = time.time()
    if known and now - known["fetched_at"] < (MIN_INTERVAL if force else max(every,
                                                                           MIN_INTERVAL)):
        return False
    catalog, pos = catalog_of(bridge, inst, channel)
    products = [p for s in catalog.get("seasons", []) for p in s.get("products", [])]
    perfs = [perf["id"] for p in products
             for perf in (p.get("event") or {}).get("performances", [])]
    composed = [p for p in products if p.get("productFamilyType") in COMPOSED]
    others = [p["id"] for p in products if not p.get("event") and p not in composed]
    client, pos_id = bridge.s360(inst, channel), pos["pos"].get("posId")
    left: dict[str, int | None] = {}
    if perfs:
        for a in client.call("availabilityService", "getEventAvailability", {
                "pointOfSalesId": pos_id, "performanceIds": perfs, "seatCategoryIds": [-1]}
                ).get("eventAvailabilityData", []):
            left[f"seats:{a['performanceId']}:{a['seatCategoryId']}"] = a.get("available")
    if others:
        for a in client.call("availabilityService", "getProductAvailability", {
                "pointOfSalesId": pos_id, "productIds": others}
                ).get("productAvailabilityData", []):
            key = f"timeslot:{a['timeslotId']}" if a.get("timeslotId") else f"item:{a['itemId']}"
            left[key] = a.get("available")
    for p in composed:
        left.update(_season_ticket_left(client, pos_id, p))
    store.cache(engine, inst.code, _what("availability", channel), left)
    return True


def _season_ticket_left(client, pos_id, product: dict) -> dict[str, int | None]:
    """What is left of each item of a season ticket: the least its contingent has for any of
    its performances (§g.3; the answer's fields are INFERRED); None where it is not known."""
    items = product.get("items") or []
    unknown = {f"item:{item['id']}": None for item in items}
    perfs = sorted({perf for item in items for line in item.get("lines") or []
                    for perf in line.get("performanceIds") or []})
    if not perfs:  # performanceIds are mandatory: without them, S-360 cannot be asked
        return unknown
    try:
        answer = client.call("availabilityService", "getEventAvailability", {
            "pointOfSalesId": pos_id, "performanceIds": perfs,
            "composedProductId": product["id"]})
    except S360BusinessError as exc:  # this product's shape is INFERRED: the others stand
        log.warning("the availability of %s could not be read: %s", product.get("code"), exc)
        return unknown
    seen: dict[str, list[int]] = {}
    for a in answer.get("eventAvailabilityData", []):
        if a.get("available") is not None:
            seen.setdefault(f"item:{a.get('itemId')}", []).append(a["available"])
    return {**unknown, **{key: min(counts) for key, counts in seen.items()}}


def catalog_of(bridge, inst, channel: str | None = None) -> tuple[dict, dict]:
    """The cached catalog and point-of-sales data of a channel, read from S-360 on first
    use."""
    catalog = store.cached(bridge.engine, inst.code, _what("catalog", channel))
    if catalog is None:
        refresh_catalog(bridge, inst, channel, force=True)
        catalog = store.cached(bridge.engine, inst.code, _what("catalog", channel))
    return catalog["data"], store.cached(bridge.engine, inst.code, _what("pos", channel))["data"]


def availability_of(bridge, inst, channel: str | None = None) -> dict | None:
    """The cached availabilities of a channel, with ``fetched_at`` (None before the first)."""
    return store.cached(bridge.engine, inst.code, _what("availability", channel))


def left_for(bridge, inst, quota: tuple, channel: str | None = None) -> int | None:
    """What the cache says is left of one quota."""
    data = availability_of(bridge, inst, channel)
    return (data or {}).get("data", {}).get(":".join(map(str, quota)))
