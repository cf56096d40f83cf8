"""The ``s360bridge`` command line."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys

import click

from s360bridge.core import __version__, instruments, logs
from s360bridge.core.cli.common import CLIGroup, config_option, open_bridge
from s360bridge.core.cli.db import db
from s360bridge.core.cli.history import import_records, reconcile
from s360bridge.core.cli.operating import SINCE_HELP, Since, audit_trail, pause, resume, search
from s360bridge.core.errors import S360BridgeError
from s360bridge.core.operations import admin
from s360bridge.core.operations.audit import Actor
from s360bridge.core.operations.erasure import forget_contact
from s360bridge.core.pipeline import election
from s360bridge.core.pipeline.processes import Process
from s360bridge.core.pipeline.server import Limits, listen
from s360bridge.core.pipeline.supervisor import Role, Supervisor
from s360bridge.core.plugin.manager import Hooks


@click.group(cls=CLIGroup)
@click.version_option(__version__, prog_name="s360bridge")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.option("--log-format", default="text", show_default=True, type=click.Choice(logs.FORMATS),
              help="json: one JSON object per line.")
@click.option("--debug", is_flag=True, help="Print the traceback of an error, too.")
def cli(log_level, log_format, debug):
    """Connect S-360 (SecuTix 360) to CRM, analytics and reseller systems."""
    logs.configure(log_level, log_format)


def _serve_options(func):
    defaults = Limits()
    for name, default, help_ in (
            ("--read-timeout", defaults.read_timeout,
             "Seconds a request may take to arrive in full; a slower one is dropped."),
            ("--idle-timeout", defaults.idle_timeout,
             "Seconds an idle connection stays open."),
            ("--connection-limit", defaults.connection_limit,
             "Open connections the receiver holds; beyond, new ones wait in the backlog."),
            ("--threads", 8, "Receiver threads."), ("--port", 8360, None)):
        func = click.option(name, default=default, show_default=True, type=int, help=help_)(func)
    return click.option("--host", default="127.0.0.1", show_default=True)(func)


@cli.command()
@config_option
@_serve_options
def run(configs, host, port, threads, connection_limit, idle_timeout, read_timeout):
    """Receiver, workers and scheduler: the receiver in one process and the workers with the
    scheduler in another, under this one (the embedded default), and the operator listener in
    a third when engine.operator enables it; upgrades the engine database's schema first."""
    bridge = open_bridge(configs, receiving=True, schema="upgrade")
    workers, operator = bridge.settings.engine.workers, bridge.settings.engine.operator
    bridge.close()
    sock = listen(host, port)
    limits = Limits(connection_limit, idle_timeout, read_timeout)
    roles = {
        "receiver": Role(lambda: Process(open_bridge(configs, receiving=True), receiver=True,
                                         workers=0, scheduler=False, threads=threads,
                                         limits=limits, sock=sock)),
        # acknowledgements first: the worker catches up after a burst, S-360 cannot wait
        "worker": Role(lambda: Process(open_bridge(configs), receiver=False, workers=workers,
                                       scheduler=True), niceness=5)}
    if operator.enabled:
        operator.check_secret()
        operator_sock = listen(operator.host, operator.port)
        # the console and /metrics need no stream's or target's secret (lazy)
        roles["operator"] = Role(lambda: Process(open_bridge(configs, lazy=True), receiver=False,
                                                 workers=0, scheduler=False,
                                                 operator=operator_sock), niceness=5)
    with instruments.multiprocess_dir():  # every child counts there, the operator adds up
        status = Supervisor(roles).serve_forever()
    sys.exit(status)


@cli.command()
@config_option
@_serve_options
def serve(configs, host, port, threads, connection_limit, idle_timeout, read_timeout):
    """The receiver only (run workers elsewhere, with `s360bridge worker`)."""
    instruments.check_dir()
    Process(open_bridge(configs, receiving=True), receiver=True, workers=0, scheduler=False,
            host=host, port=port, threads=threads,
            limits=Limits(connection_limit, idle_timeout, read_timeout)).serve_forever()


@cli.command()
@config_option
@click.option("--workers", type=int, help="Worker threads (default: engine.workers).")
@click.option("--no-scheduler", is_flag=True,
              help="Never run the periodic jobs (else the process elected among all runs them).")
def worker(configs, workers, no_scheduler):
    """Workers and the scheduler, without the receiver."""
    instruments.check_dir()
    bridge = open_bridge(configs)
    Process(bridge, receiver=False, workers=workers or bridge.settings.engine.workers,
            scheduler=not no_scheduler).serve_forever()


@cli.command()
@config_option
def operator(configs):
    """The operator listener alone (`engine.operator`: GET /metrics and the console), for
    processes started apart (gunicorn, `s360bridge worker`) that share its
    PROMETHEUS_MULTIPROC_DIR; it needs no stream's or target's secret."""
    instruments.check_dir()
    bridge = open_bridge(configs, lazy=True)
    settings = bridge.settings.engine.operator
    if not settings.enabled:
        raise S360BridgeError("the operator listener is off: set engine.operator.enabled: true "
                              "and its auth")
    if not os.environ.get(instruments.MULTIPROC_ENV):
        logging.getLogger("s360bridge.operator").warning(
            "%s is not set: /metrics shows the database's gauges, not what other processes "
            "counted", instruments.MULTIPROC_ENV)
    Process(bridge, receiver=False, workers=0, scheduler=False,
            operator=listen(settings.host, settings.port)).serve_forever()


@cli.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(configs, as_json):
    """Record counts per institution, stream and state."""
    bridge = open_bridge(configs, lazy=True)
    report = admin.status(bridge)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for code, inst in report.items():
        click.echo(f"{code}  ({inst['config']})")
        if "s360_calls_left_this_month" in inst:
            click.echo(f"  S-360 calls left this month: {inst['s360_calls_left_this_month']}")
        for name, s in inst["streams"].items():
            states = ", ".join(f"{k} {v}" for k, v in sorted(s["states"].items())) or "no records"
            extra = f", oldest pending {s['oldest_pending_seconds']}s" \
                if "oldest_pending_seconds" in s else ""
            if s.get("before_cutoff"):
                extra += f"; {s['before_cutoff']} older than the history cut-off, left out"
            click.echo(f"  {name:<13} {states}; quarantined {s['quarantined']}{extra}")
            if "last_error" in s:
                click.echo(f"    failing, will retry: {s['last_error']}")
            if "last_dead_letter_error" in s:
                click.echo(f"    last dead letter: {s['last_dead_letter_error']} "
                           "(s360bridge replay re-queues them)")
        for name, desc in inst["targets"].items():
            p = inst.get("paused", {}).get(name)
            click.echo(f"  target {name}: {desc}" + (
                f"  PAUSED since {_when(p['since'])} by {p['by']}, {p['held']} record(s) held"
                if p else ""))
    try:
        leader = election.holder(bridge) or "none: no process runs the periodic jobs (every " \
            "one started with --no-scheduler, or none running)"
    except election.Unknown as exc:
        leader = str(exc)
    click.echo(f"scheduler: {leader}")


@cli.command()
@config_option
@click.option("--institution")
@click.option("--stream")
@click.option("--key", help="Natural key of one record (contact number, order id, …).")
@click.option("--target", help="Only those this target failed for good.")
@click.option("--since", type=Since(), help=SINCE_HELP)
@click.option("--dry-run", is_flag=True, help="Only say how many it would re-queue.")
def replay(configs, institution, stream, key, target, since, dry_run):
    """Re-queue dead letters for delivery."""
    n = admin.replay(open_bridge(configs, lazy=True), institution, stream, key, target=target,
                     since=since, dry_run=dry_run, actor=Actor.of_this_process())
    click.echo(f"would re-queue {n} dead letter(s)" if dry_run else
               f"re-queued {n} dead letter(s)")


@cli.group()
def quarantine():
    """List, show and re-process records that failed validation."""


@quarantine.command("list")
@config_option
@click.option("--institution")
@click.option("--stream")
@click.option("--limit", default=100, show_default=True)
def quarantine_list(configs, institution, stream, limit):
    """The held records, one line each: id, where, how many times it came, the reason."""
    for e in admin.quarantined(open_bridge(configs, lazy=True), institution, stream, limit):
        click.echo(f"{e['id']:>6}  {e['institution']}/{e['stream']}  x{e['count']}  "
                   f"{e['reason']}")


@quarantine.command("show")
@config_option
@click.argument("entry_id", type=int)
def quarantine_show(configs, entry_id):
    e = admin.quarantine_entry(open_bridge(configs, lazy=True), entry_id)
    if e is None:
        raise click.ClickException(f"no quarantined record with id {entry_id}")
    """One quarantined record: its reason, how often it came, and its text as received."""
    click.echo(f"{e['institution']}/{e['stream']} ({e['state']}): {e['reason']}")
    click.echo(f"received {e['count']} time(s), first {_when(e['received_at'])}, last "
               f"{_when(e['last_seen_at'])}")
    click.echo(e["payload"])


def _when(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@quarantine.command("reprocess")
@config_option
@click.option("--institution")
@click.option("--stream")
@click.option("--id", "ids", multiple=True, type=int, help="Only these entries.")
@click.option("--since", type=Since(), help=SINCE_HELP)
@click.option("--dry-run", is_flag=True, help="Only say what it would do.")
def quarantine_reprocess(configs, institution, stream, ids, since, dry_run):
    """Validate held records again, e.g. after a schema or config fix."""
    bridge = open_bridge(configs, lazy=True)
    entries = [e for e in admin.quarantined(bridge, institution, stream, 10**9, since)
               if not ids or e["id"] in ids]
    totals = admin.reprocess(bridge, entries, actor=Actor.of_this_process(), dry_run=dry_run)
    said = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in totals.items())
    click.echo(f"{len(entries)} held record(s) would be: {said}" if dry_run else said)


@cli.command()
@config_option
@click.option("--institution", required=True)
@click.option("--contact", "contact_number", required=True, help="S-360 contact number.")
def forget(configs, institution, contact_number):
    """Erase one contact's personal data from every local store (a GDPR request)."""
    for line in forget_contact(open_bridge(configs), institution, contact_number,
                               actor=Actor.of_this_process()):
        click.echo(f"removed: {line}")


@cli.command("check-config")
@config_option
def check_config(configs):
    """Load and validate the configuration, then say what it sets up (writes nothing)."""
    bridge = open_bridge(configs, receiving=True, schema="ignore")
    for inst in bridge.settings.institutions.values():
        click.echo(f"{inst.code}: {inst.source} (time zone {inst.timezone.key})")
        for name, s in inst.streams.items():
            state = "enabled" if s.enabled else "disabled"
            path = bridge.stream(name).url_path
            click.echo(f"  POST /{path}/{inst.code}  {state}, auth {s.auth.type}, "
                       f"targets {', '.join(s.targets) or 'none'}  ({bridge.stream(name).title})")
        for name, v in inst.services.items():
            state = "enabled" if v.enabled else "disabled"
            click.echo(f"  service {name}  {state}, auth {v.auth.type}  "
                       f"({bridge.hooks.services[name].title})")
    click.echo("configuration OK")


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--config", "-c", "configs", multiple=True, type=click.Path(exists=True),
              help="Also show the routes and jobs this configuration sets up.")
def plugins(as_json, configs):
    """The loaded plugins: where they come from, their hooks and what they declare."""
    hooks = Hooks()
    rows = hooks.describe()
    setup = _set_up(configs, hooks) if configs else None
    if as_json:
        click.echo(json.dumps({"plugins": rows, **(setup or {})} if setup else rows, indent=2))
        return
    for r in rows:
        click.echo(f"{r['name']:<14} {r['source']}")
        click.echo(f"  hooks: {', '.join(r['hooks'])}")
        for field in ("streams", "services", "target_types", "transforms", "commands",
                      "routes"):
            if r[field]:
                click.echo(f"  {field.replace('_', ' ')}: {', '.join(r[field])}")
    if setup:
        click.echo("configured routes:")
        for line in setup["routes"]:
            click.echo(f"  {line}")
        click.echo(f"jobs: {', '.join(setup['jobs']) or 'none'}")


def _set_up(configs, hooks: Hooks) -> dict:
    """The routes (institution, stream, target, plugin) and jobs a configuration sets up."""
    bridge = open_bridge(configs)
    try:
        routes = []
        for inst in bridge.settings.institutions.values():
            for name, cfg in inst.streams.items():
                for tname in cfg.targets:
                    kind = inst.targets[tname].type
                    pair = hooks.pair_for(name, kind)
                    routes.append(f"{inst.code}/{name} -> {tname} ({kind}, mapped by "
                                  f"{pair.plugin if pair else 'nothing'})")
        jobs = [f"{name} every {every:g} s" for name, every, _ in hooks.jobs(bridge)]
        return {"routes": routes, "jobs": jobs}
    finally:
        bridge.close()


cli.add_command(import_records)
cli.add_command(reconcile)
cli.add_command(db)
for command in (search, pause, resume, audit_trail):
    cli.add_command(command)


def main() -> None:
    try:
        Hooks().add_commands(cli)
    except S360BridgeError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    cli()
