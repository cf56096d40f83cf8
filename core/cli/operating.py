"""``s360bridge search``, ``pause``, ``resume`` and ``audit``: the operator's look at one record,
the pause of a target, and the trail of what operators did (core/operations/)."""

from __future__ import annotations

import datetime as dt
import json
import re
import time

import click

from s360bridge.core.cli.common import config_option, open_bridge
from s360bridge.core.operations import audit
from s360bridge.core.operations import pause as pausing
from s360bridge.core.operations.audit import Actor
from s360bridge.core.operations.search import search as search_key

_AGO = re.compile(r"(\d+)\s*([mhd])")
_SECONDS = {"m": 60, "h": 3600, "d": 86400}


class Since(click.ParamType):
    """A point in time: ``30m``, ``12h`` or ``7d`` ago, or an ISO 8601 date or date-time (UTC
    unless it says its offset); converted to epoch seconds."""

    name = "WHEN"

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            return value
        ago = _AGO.fullmatch(value.strip())
        if ago:
            return time.time() - int(ago[1]) * _SECONDS[ago[2]]
        try:
            when = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            self.fail(f"{value!r} is neither a duration ago (30m, 12h, 7d) nor an ISO 8601 "
                      "date or date-time (2026-12-01, 2026-12-01T08:00+01:00)", param, ctx)
        return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


SINCE_HELP = "Only since then: 30m, 12h, 7d ago, or an ISO 8601 date or date-time (UTC)."


def utc(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@click.command()
@config_option
@click.option("--institution", required=True)
@click.option("--stream", help="Only this stream.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.argument("key")
def search(configs, institution, stream, as_json, key):
    """One record by its key (contact number, order id, ticket check key or barcode): its
    versions and, per target, its delivery with every attempt; and its quarantined copies."""
    found = search_key(open_bridge(configs, lazy=True), institution, key, stream)
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    if not found["versions"] and not found["quarantined"]:
        click.echo(f"nothing of {institution} has the key {key}")
        return
    for v in found["versions"]:
        click.echo(f"{institution}/{v['stream']} {v['key']}  version {v['id']}, received "
                   f"{utc(v['received_at'])}: {v['state']}")
        if v["state"] == "pending" and v["next_attempt_at"]:
            click.echo(f"  next attempt {utc(v['next_attempt_at'])}")
        for name, t in v["targets"].items():
            tries = len(t["attempts"])
            note = "  (target paused)" if name in found["paused"] else ""
            click.echo(f"  {name:<12} {t['state']:<10} {tries} attempt(s){note}")
            for a in t["attempts"]:
                answer = f": {a['answer']}" if a["answer"] else ""
                click.echo(f"    {utc(a['at'])}  {a['outcome']}{answer}")
    for q in found["quarantined"]:
        click.echo(f"quarantined {q['id']} ({institution}/{q['stream']}, {q['state']}, "
                   f"x{q['count']}, last {utc(q['last_seen_at'])}): {q['reason']}")


def _target_options(func):
    func = click.option("--target", required=True, help="A target of the institution.")(func)
    return click.option("--institution", required=True)(config_option(func))


@click.command()
@_target_options
def pause(configs, institution, target):
    """Stop delivering to a target: its records wait, held, until `s360bridge resume`."""
    bridge = open_bridge(configs, lazy=True)
    if pausing.pause(bridge, institution, target, actor=Actor.of_this_process()):
        click.echo(f"paused {institution}/{target}: its records wait for the resume")
    else:
        click.echo(f"{institution}/{target} was paused already")


@click.command()
@_target_options
def resume(configs, institution, target):
    """Deliver to a paused target again, starting with the records held for it."""
    n = pausing.resume(open_bridge(configs, lazy=True), institution, target,
                       actor=Actor.of_this_process())
    if n is None:
        click.echo(f"{institution}/{target} was not paused")
    else:
        click.echo(f"resumed {institution}/{target}: {n} held record(s) queued")


@click.command("audit")
@config_option
@click.option("--institution")
@click.option("--action", type=click.Choice(audit.ACTIONS))
@click.option("--since", type=Since(), help=SINCE_HELP)
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def audit_trail(configs, institution, action, since, limit, as_json):
    """What operators did (replay, reprocess, pause, resume, forget), who and when, the
    latest first."""
    found = audit.entries(open_bridge(configs, lazy=True), institution, action, since, limit)
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    for e in found:
        detail = ", ".join(f"{k} {utc(v) if k == 'since' else v}" for k, v in e["detail"].items())
        click.echo(f"{utc(e['at'])}  {e['actor']} ({e['via']})  {e['action']}  "
                   f"{e['institution'] or '-'}  {detail}")
