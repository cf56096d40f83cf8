"""Offers: a CRM operator or a reseller creates sales, reservations and options in S-360.

``POST /crm/offers/{institution}`` (and ``s360bridge offers create``), or a reseller's ``POST
/resellers/v1/{institution}/orders`` (resellers.py, reseller_api.py), runs the S-360 sales
sequence of each product family, durably and idempotently (sequence.py, from the order that
plan.py makes of the offer); the catalog and
availabilities are cached by scheduled jobs within S-360's advice (catalog.py). Orders S-360
closes come back through its order webhook, to the CRM like any order. A service, not a stream:
an institution enables it under ``services: offers:``.
"""

from __future__ import annotations

import logging
import time

from jsonschema import Draft202012Validator

from s360bridge.core.api import ConfigError, Service, hookimpl, schema_error

from . import catalog, console, migrations, pdf, reseller_api, resellers, sequence, store
from .cli import catalog_command, offers_command, resellers_command
from .web import bp

log = logging.getLogger("s360bridge.offers")
bp.register_blueprint(reseller_api.bp)  # /resellers/v1: the same service, its callers

OPTIONS = Draft202012Validator({
    "type": "object", "additionalProperties": False, "properties": {
        "wait_seconds": {"type": "number", "minimum": 0, "maximum": 60},
        "open_order_seconds": {"type": "number", "exclusiveMinimum": 0},
        **resellers.SETTINGS,  # the CRM operator's own, as a reseller's (resellers.py)
        "availability_every_seconds": {"type": "number", "minimum": 60},
        "recovery_every_seconds": {"type": "number", "minimum": 1},
        "lease_seconds": {"type": "number", "minimum": 1},
        "uncertain_read_after_seconds": {"type": "number", "minimum": 0},
        "pdf": {"type": "object", "additionalProperties": False, "properties": {
            "title": {"type": "string"}, "logo": {"type": "string"},
            "footer": {"type": "string"}, "symbology": {"enum": ["qr", "code128"]},
            "fields": {"type": "array", "items": {"enum": [
                "product", "performance_id", "seat_category_id", "seat", "tariff_id", "price",
                "holder", "movement_id"]}},
            "url": {"type": "string", "pattern": "^https?://"}}},
        "ticket_fields": {"type": "object", "additionalProperties": False, "properties": {
            name: {"type": "string", "minLength": 1} for name in ("barcode", "holder",
                                                                   "seat")}}}})


def check_options(options: dict) -> None:
    error = schema_error(OPTIONS, options) or pdf.check(options.get("pdf") or {})
    if error:
        raise ConfigError(error)


def recover(bridge, inst) -> int:
    """Carry on the offers nobody works on: after a crash, or S-360 being unavailable."""
    ids = store.unfinished(bridge.engine, [inst.code])
    for offer_id in ids:
        sequence.run(bridge, inst, offer_id, sequence.lease_of(inst))
    return len(ids)


def jobs(bridge, inst, cfg):
    """Per institution: refresh the catalog and the availabilities of every sales channel its
    callers sell on, carry on the offers."""
    every = cfg.options.get("availability_every_seconds", 3600)
    return [
        ("catalog", 3600, lambda: _each_channel(
            inst, lambda channel: catalog.refresh_catalog(bridge, inst, channel))),
        ("availabilities", every, lambda: _each_channel(
            inst, lambda channel: catalog.refresh_availability(bridge, inst, every, channel))),
        ("offers", cfg.options.get("recovery_every_seconds", 10),
         lambda: recover(bridge, inst)),
    ]


def _each_channel(inst, refresh) -> None:
    """Refresh every channel, each whatever the others do (an operator S-360 refuses must not
    leave the other channels cold); raise the first failure at the end, for the job's log."""
    failed = None
    for channel in resellers.channels(inst):
        try:
            refresh(channel)
        except Exception as exc:  # noqa: BLE001 - the next channel is another operator
            log.warning("%s: the cache of sales channel %s could not be refreshed: %s",
                        inst.code, channel or inst.s360_api.operator, exc)
            failed = failed or exc
    if failed is not None:
        raise failed


SERVICE = Service("offers", "Offers created in S-360 (sales, reservations, options)", bp,
                  jobs=jobs, check_options=check_options,
                  check_caller_options=resellers.check_options)


@hookimpl
def register_services(register):
    register(SERVICE)


@hookimpl
def register_operator_pages(register, bridge):
    """The offers of the CRM operator and of the resellers, in the operator's console."""
    register(console.offers_page(bridge), "Offers", "offers")


@hookimpl
def register_gauges(register, bridge):
    """Offers not finished yet, per institution, caller (``crm`` or the reseller) and state,
    and how old the oldest is: an offer ``uncertain`` or ``ordering`` for long needs a look."""
    def rows():
        return [(inst, caller or "crm", state, n, oldest)
                for inst, caller, state, n, oldest in store.unfinished_by_state(bridge.engine)]

    labels = ("institution", "caller", "state")
    register("s360bridge_offers_unfinished", "Offers not finished yet, by state", labels,
             lambda: [(r[:3], r[3]) for r in rows()])
    register("s360bridge_offers_oldest_unfinished_age_seconds",
             "Age of the oldest offer not finished yet, by state", labels,
             lambda: [(r[:3], max(0.0, time.time() - r[4])) for r in rows()])


@hookimpl
def register_migrations(register):
    register(migrations)


@hookimpl
def register_commands(cli):
    cli.add_command(offers_command)
    cli.add_command(catalog_command)
    cli.add_command(resellers_command)
