"""The catalog and availability cache: refreshed by scheduled jobs inside S-360's advice.

The catalog is read once a day, or sooner when ``getLastSetupUpdate`` reports a change
(REFERENCE §g.2); availabilities every ``availability_every_seconds`` (an hour by default), and
never twice within a minute, whoever asks (§g.3, §e.4). Prices stay S-360's integers.
"""

from __future__ import annotations

import time

from . import store

MIN_INTERVAL = 60.0  # seconds: no refresh of either, ever, more often than this
CATALOG_MAX_AGE = 24 * 3600.0


def refresh_catalog(bridge, inst, force: bool = False) -> bool:
    """Read the catalog again if it changed or is a day old; answer whether it did."""
    engine, client = bridge.engine, bridge.s360(inst)
    known = store.cached(engine, inst.code, "catalog")
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
    store.cache(engine, inst.code, "pos", {
        "pos": pos.get("posConfigData") or {},
        "audiences": {a["code"]: a["id"] for a in audiences.get("audienceSubCategories", [])}})
    store.cache(engine, inst.code, "catalog", data.get("catalogData") or {}, marker)
    return True


def refresh_availability(bridge, inst, every: float, force: bool = False) -> bool:
    """Read the availabilities of every cached product; answer whether it did."""
    engine = bridge.engine
    known = store.cached(engine, inst.code, "availability")
    now = time.time()
    if known and now - known["fetched_at"] < (MIN_INTERVAL if force else max(every,
                                                                           MIN_INTERVAL)):
        return False
    catalog, pos = catalog_of(bridge, inst)
    products = [p for s in catalog.get("seasons", []) for p in s.get("products", [])]
    perfs = [perf["id"] for p in products
             for perf in (p.get("event") or {}).get("performances", [])]
    others = [p["id"] for p in products if not p.get("event")]
    client, pos_id = bridge.s360(inst), pos["pos"].get("posId")
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
    store.cache(engine, inst.code, "availability", left)
    return True


def catalog_of(bridge, inst) -> tuple[dict, dict]:
    """The cached catalog and point-of-sales data, read from S-360 on first use."""
    catalog = store.cached(bridge.engine, inst.code, "catalog")
    if catalog is None:
        refresh_catalog(bridge, inst, force=True)
        catalog = store.cached(bridge.engine, inst.code, "catalog")
    return catalog["data"], store.cached(bridge.engine, inst.code, "pos")["data"]


def left_for(bridge, inst, quota: tuple) -> int | None:
    """What the cache says is left of one quota (after a refresh if a minute has passed)."""
    data = store.cached(bridge.engine, inst.code, "availability")
    return (data or {}).get("data", {}).get(":".join(map(str, quota)))
