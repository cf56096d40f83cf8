"""``s360bridge offers`` (create, list, show, confirm, release, cancel) and ``s360bridge
catalog`` (list and search the cached catalog)."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path

import click
import orjson

from s360bridge.core.api import (
    RequestRefused,
    S360BridgeError,
    config_option,
    institution_of,
    open_bridge,
    schema_error,
)

from . import catalog as cache
from . import resellers, sequence, settlement, store
from .offering import FOLLOW_UPS, REQUEST, start_follow_up, view

STEPS = ("new", "ordering", "open", "closing", "done")


def _offers_inst(bridge, code: str):
    inst = institution_of(bridge, code)
    if "offers" not in inst.services:
        raise S360BridgeError(f"offers are not enabled for {code} (services.offers)")
    return inst


def _follow(bridge, inst, offer_id: int) -> dict:
    """Run the offer here with a progress bar over its steps; answer its final row."""
    with click.progressbar(length=len(STEPS) - 1, label="offer") as bar:
        shown = 0
        while True:
            row = sequence.run(bridge, inst, offer_id)
            at = STEPS.index(row["state"]) if row["state"] in STEPS else len(STEPS) - 1
            bar.label = f"offer {offer_id}: {row['state']}"
            bar.update(at - shown)
            shown = at
            if row["state"] in (*store.FINAL, "uncertain"):  # the recovery job resolves it
                return row
            time.sleep(1)  # S-360 unavailable: the next round tries again


def _show(row: dict, code: str) -> None:
    click.echo(json.dumps(view(row, f"/crm/offers/{code}"), indent=2, default=str))


@click.group("offers")
def offers_command():
    """Sales, reservations and options created in S-360."""


@offers_command.command("create")
@config_option
@click.option("--institution", required=True)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def create(configs, institution, file):
    """Create the offer described by FILE (JSON, as POST /crm/offers takes) and wait."""
    bridge = open_bridge(configs)
    inst = _offers_inst(bridge, institution)
    request = orjson.loads(file.read_bytes())
    error = schema_error(REQUEST, request, sep="/", root="(offer)")
    if error or not request.get("idempotency_key"):
        raise S360BridgeError(f"{file}: {error or 'idempotency_key: required'}")
    try:  # the CRM operator's own settings (services.offers.options)
        resellers.check_offer(bridge, inst, "", request)
    except RequestRefused as exc:
        raise S360BridgeError(f"{file}: {exc}") from None
    row, made = store.create(bridge.engine, inst.code, request["idempotency_key"], request)
    if not made:
        click.echo(f"offer {row['id']} already has this idempotency key")
    row = _follow(bridge, inst, row["id"])
    _show(row, inst.code)
    if row["state"] != "done":
        raise SystemExit(1)


@offers_command.command("list")
@config_option
@click.option("--institution")
def listing(configs, institution):
    """The latest offers, newest first; uncertain ones say until when they may hold places."""
    bridge = open_bridge(configs)
    for row in store.listing(bridge.engine, institution):
        note = f"  (may hold places until {row['expires_at']})" \
            if row["state"] == "uncertain" else ""
        click.echo(f"{row['id']:>6} {row['institution']:<12} {row['action']:<8} "
                   f"{row['state']:<10} order {row['order_id'] or '-'}  "
                   f"{row['idempotency_key']}{note}")


@offers_command.command("show")
@config_option
@click.argument("offer_id", type=int)
def show(configs, offer_id):
    """One offer, as the API shows it."""
    bridge = open_bridge(configs)
    row = _offer(bridge, offer_id)
    _show(row, row["institution"])


def _offer(bridge, offer_id: int) -> dict:
    row = store.row(bridge.engine, offer_id)
    if row is None:
        raise S360BridgeError(f"no offer {offer_id}")
    return row


def _follow_up_command(action: str):
    @offers_command.command(action, help=f"{action.capitalize()} a finished offer "
                                         f"({' or '.join(FOLLOW_UPS[action])}).")
    @config_option
    @click.argument("offer_id", type=int)
    def command(configs, offer_id):
        bridge = open_bridge(configs)
        row = _offer(bridge, offer_id)
        inst = _offers_inst(bridge, row["institution"])
        try:
            start_follow_up(bridge, row, action)
        except Exception as exc:  # RequestRefused: the same words as the API
            raise S360BridgeError(str(exc)) from None
        _show(_follow(bridge, inst, offer_id), inst.code)
    return command


for _action in FOLLOW_UPS:
    _follow_up_command(_action)


def _money(amount, currency: str) -> str:
    return f"{Decimal(amount) / 1000:.2f} {currency}" if amount is not None else "-"


@click.command("catalog")
@config_option
@click.option("--institution", required=True)
@click.option("--search", help="Only products whose code or name contains this.")
@click.option("--refresh", is_flag=True, help="Read S-360 again (at most once a minute).")
@click.option("--reseller", help="As this reseller sees it: its channel, its families.")
@click.option("--json", "as_json", is_flag=True)
def catalog_command(configs, institution, search, refresh, reseller, as_json):
    """The cached S-360 catalog: products, performances or time slots, tariffs, availability."""
    bridge = open_bridge(configs)
    inst = _offers_inst(bridge, institution)
    if reseller is not None and reseller not in inst.services["offers"].callers:
        raise S360BridgeError(f"{inst.code}: no reseller {reseller!r} (services.offers.callers: "
                              f"{', '.join(inst.services['offers'].callers) or 'none'})")
    channel = resellers.channel_of(inst, reseller or "")
    if refresh:
        cache.refresh_catalog(bridge, inst, channel, force=True)
        cache.refresh_availability(bridge, inst, 3600, channel, force=True)
    data, pos = cache.catalog_of(bridge, inst, channel)
    sells = resellers.options_of(inst, reseller or "").get("families")
    if sells:  # the reseller's families, or the CRM operator's if it has some
        data = resellers.catalog_for(data, set(sells))
    left = (cache.availability_of(bridge, inst, channel) or {}).get("data", {})
    products = [p for s in data.get("seasons", []) for p in s.get("products", [])]
    if search:
        needle = search.lower()
        products = [p for p in products if needle in p["code"].lower() or needle in json.dumps(
            p.get("externalName", {})).lower()]
    if as_json:
        click.echo(json.dumps({"products": products, "availability": left}, indent=2))
        return
    currency = pos["pos"].get("currencyCode", "")
    names = {v: k for k, v in pos["audiences"].items()}
    for p in products:
        title = ((p.get("externalName") or {}).get("translations") or [{}])[0].get("value", "")
        click.echo(f"{p['code']:<10} {p['productFamilyType']:<13} {title}")
        for perf in (p.get("event") or {}).get("performances", []):
            click.echo(f"  performance {perf['id']} {perf['start']}")
            for cat in perf["seatCategories"]:
                prices = ", ".join(f"{names.get(x['audSubCatId'], x['audSubCatId'])} "
                                   f"{_money(x['amount'], currency)}"
                                   for x in perf["prices"] if x["seatCatId"] == cat["id"])
                key = f"seats:{perf['id']}:{cat['id']}"
                click.echo(f"    {cat['code']:<6} left {left.get(key, '?')}  {prices}")
        for slot in p.get("timeslots") or []:
            key = f"timeslot:{slot['id']}"
            click.echo(f"  time slot {slot['id']} {slot['start']} left {left.get(key, '?')}")
        for item in p.get("items") or []:  # passes and season tickets: a quota per item
            key = f"item:{item['id']}"
            if key in left:
                click.echo(f"  item {item['id']} left {left[key]}")
        if p.get("prices"):
            click.echo("  " + ", ".join(f"{names.get(x['audSubCatId'], x['audSubCatId'])} "
                                        f"{_money(x['amount'], currency)}" for x in p["prices"]))


@click.group("resellers")
def resellers_command():
    """The offers service's resellers (docs/resellers.md)."""


@resellers_command.command("report")
@config_option
@click.option("--institution", required=True)
@click.option("--reseller", required=True, help="The caller's name under services.offers.callers.")
@click.option("--from", "first", required=True, help="First day, YYYY-MM-DD (venue's time zone).")
@click.option("--to", "last", required=True, help="Last day, YYYY-MM-DD, included.")
@click.option("--csv", "as_csv", is_flag=True, help="The days as CSV (differences on stderr).")
def report_command(configs, institution, reseller, first, last, as_csv):
    """What a reseller sold and was refunded on pending account, per day, checked against
    the orders S-360's webhook brought; every difference is listed."""
    bridge = open_bridge(configs)
    inst = _offers_inst(bridge, institution)
    if reseller not in inst.services["offers"].callers:
        known = ", ".join(sorted(inst.services["offers"].callers)) or "none"
        raise S360BridgeError(f"unknown reseller {reseller!r} of {institution} (configured: "
                              f"{known})")
    try:
        start, end = settlement.period(first, last)
    except Exception as exc:  # RequestRefused: the same words as the API
        raise S360BridgeError(str(exc)) from None
    found = settlement.report(bridge, inst, reseller, start, end)
    if as_csv:
        click.echo(settlement.as_csv(found["days"]), nl=False)
        for d in found["differences"]:
            click.echo(f"difference: {json.dumps(d)}", err=True)
        return
    click.echo(json.dumps(found, indent=2))
