"""Adds ``s360bridge simulate`` and ``s360bridge demo`` to the command line."""

from __future__ import annotations

import os
import secrets
import threading
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import click
import yaml
from sqlalchemy import func, select

from s360bridge.core.bridge import Bridge
from s360bridge.core.config import Institution, load_settings
from s360bridge.core.pipeline.processes import Process
from s360bridge.core.plugin.hookspecs import hookimpl
from s360bridge.core.storage.tables import QUEUE

from .data import Generator
from .export import reconcile_all, write_csv, write_jsonl
from .systems import SideSystems
from .webhooks import RunReport, WebhookQueue, WebhookSettings

# Per stream: S-360's S and bs, scaled up for a demo (defaults are 100/1 and 500/10).
SHAPES = {"contacts": (100, 20), "orders": (100, 20), "ticketchecks": (500, 50)}


def auth_of(inst: Institution, stream: str) -> tuple[str, ...]:
    a = inst.streams[stream].auth
    if a.type == "basic":
        return ("basic", a.username, a.password.value)
    if a.type == "api_key":
        return ("api_key", a.header, a.key.value)
    return ("none",)


def queue_for(base_url: str, inst: Institution, stream: str, every: float) -> WebhookQueue:
    size, bucket = SHAPES[stream]
    return WebhookQueue(WebhookSettings(f"{base_url}/s360/{stream}/{inst.code}", every, size,
                                        bucket, auth_of(inst, stream)))


def _env_refs(node) -> set[str]:
    if isinstance(node, dict):
        if set(node) == {"$env"}:
            return {node["$env"]}
        return set().union(*map(_env_refs, node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*map(_env_refs, node)) if node else set()
    return set()


def fill_demo_secrets(config: Path) -> list[str]:
    """Demo only: give every unset secret of the file a random value for this process."""
    filled = []
    for name in sorted(_env_refs(yaml.safe_load(config.read_text("utf-8")))):
        if not os.environ.get(name):
            os.environ[name] = secrets.token_urlsafe(24)
            filled.append(name)
    return filled


def summary(code: str, stream: str, total: RunReport) -> str:
    a = total.answers
    return (f"{code}/{stream}: {total.delivered} sent in {total.posts} POSTs "
            f"({total.failed_posts} refused, {total.abandoned} abandoned): "
            f"{a['accepted']} accepted, {a['duplicates']} duplicates, "
            f"{a['quarantined']} quarantined")


def _pending(bridge: Bridge) -> int:
    with bridge.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(QUEUE)).scalar_one()


def _follow(label: str, total: int, deadline: float, progress) -> None:
    """A progress bar fed by ``progress()`` until it reaches ``total``, or the deadline."""
    with click.progressbar(length=total, label=label) as bar:
        shown = 0
        while shown < total:
            if time.monotonic() > deadline:
                raise click.ClickException(f"{label}: {shown} of {total} after the timeout; "
                                           "see `s360bridge status`")
            now = progress()
            bar.update(now - shown)
            shown = now
            time.sleep(0.1)


@click.command()
@click.option("--config", "-c", "config", default="config/myvenue.yaml", show_default=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--records", default=500, show_default=True, help="Records per stream.")
@click.option("--seed", default=1, show_default=True)
@click.option("--every", default=0.5, show_default=True, help="Webhook period M, in seconds.")
@click.option("--timeout", default=300.0, show_default=True)
def demo(config, records, seed, every, timeout):
    """Run the bridge and feed it from the simulator until every record is delivered; where
    the configuration has a CRM and the S-360 API, edit contacts in the reference CRM and
    follow them to S-360 and back."""
    side = SideSystems()
    code = (yaml.safe_load(config.read_text("utf-8")) or {}).get("institution", "")
    os.environ.update(side.urls([code]))
    filled = fill_demo_secrets(config)
    if filled:
        click.echo(f"demo: generated secrets for {', '.join(filled)} (this process only)")
    settings = load_settings([config])
    bridge = Bridge(settings, schema="upgrade")
    for inst in settings.institutions.values():
        side.open_api(inst)  # the scheduler reads the catalog at once
    proc = Process(bridge, receiver=True, workers=settings.engine.workers, scheduler=True, port=0)
    proc.start()
    made: dict[tuple[str, str], list[dict]] = {}
    try:
        gen = Generator(seed)
        queues, threads = [], []
        for inst in settings.institutions.values():
            for stream, cfg in inst.streams.items():
                if not cfg.enabled or stream not in SHAPES:
                    continue
                q = queue_for(proc.url, inst, stream, every)
                made[inst.code, stream] = gen.records(stream, records)
                q.enqueue(made[inst.code, stream])
                queues.append((inst.code, stream, q))
                threads.append(threading.Thread(target=q.run, args=(proc.stop,)))
        total = sum(q.pending for *_, q in queues)
        for t in threads:
            t.start()
        deadline = time.monotonic() + timeout
        _follow("S-360 webhooks sending", total, deadline,
                lambda: sum(q.total.delivered + q.total.abandoned for *_, q in queues))
        for t in threads:
            t.join()
        backlog = _pending(bridge)
        _follow("worker delivering", backlog, deadline, lambda: backlog - _pending(bridge))
        for code, stream, q in queues:
            click.echo(summary(code, stream, q.total))
        for inst in settings.institutions.values():
            if _crm_round_trip(side, bridge, proc, inst, made, every, deadline):
                # S-360's contacts and orders as they are now: what its export would list
                made[inst.code, "contacts"] = list(side.api.stores[inst.code].contacts.values())
                made[inst.code, "orders"] = list(
                    side.api.order_stores[inst.code].orders.values())
            for line in reconcile_all(bridge, inst, made, Path("var")):
                click.echo(line)
        click.echo(f"see `s360bridge status -c {config}` and the warehouse tables")
    finally:
        proc.shutdown()
        side.close()


def _crm_round_trip(side: SideSystems, bridge, proc, inst, made, every, deadline) -> bool:
    """CRM edits -> bridge -> S-360 API -> contact webhook -> bridge, which stops the echo;
    then an offer, whose order comes back through the order webhook."""
    webhook = queue_for(proc.url, inst, "contacts", every)
    if not side.connect(bridge, inst, made.get((inst.code, "contacts"), []),
                        made.get((inst.code, "orders"), []), webhook):
        return False
    sent = side.crm_edits(proc.url, inst, changed=10, new=5)
    _follow(f"{sent} CRM changes to S-360 (at most "
            f"{inst.s360_api.calls_per_minute} calls/min/method)", sent, deadline,
            lambda: sent - min(sent, _pending(bridge)))
    webhook.run(proc.stop)  # S-360 reports the contacts that changed
    backlog = _pending(bridge)
    _follow("S-360 contact webhook back to the bridge", backlog, deadline,
            lambda: backlog - _pending(bridge))
    click.echo(side.report(inst.code))
    if "offers" in inst.services:
        orders_webhook = queue_for(proc.url, inst, "orders", every)
        click.echo(side.offer(proc.url, inst, orders_webhook))
        orders_webhook.run(proc.stop)
        backlog = _pending(bridge)
        _follow("S-360 order webhook back to the bridge", backlog, deadline,
                lambda: backlog - _pending(bridge))
    return True


@click.command()
@click.option("--config", "-c", "config", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--url", required=True, help="Base URL of a running receiver.")
@click.option("--stream", required=True, type=click.Choice(sorted(SHAPES)))
@click.option("--records", default=100, show_default=True)
@click.option("--seed", default=1, show_default=True)
@click.option("--every", default=1.0, show_default=True, help="Webhook period M, in seconds.")
def simulate(config, url, stream, records, seed, every):
    """Push generated records to a running receiver the way S-360 does."""
    settings = load_settings([config])
    for inst in settings.institutions.values():
        q = queue_for(url.rstrip("/"), inst, stream, every)
        q.enqueue(Generator(seed).records(stream, records))
        click.echo(summary(inst.code, stream, q.run(threading.Event())))


@click.command("simulate-export")
@click.option("--stream", required=True, type=click.Choice(sorted(SHAPES)))
@click.option("--records", default=1000, show_default=True)
@click.option("--seed", default=1, show_default=True)
@click.option("--timezone", default="Europe/Zurich", show_default=True,
              help="The venue's zone: export times are local, without a zone.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write S-360's flat-file export here (what reconcile reads).")
@click.option("--jsonl", "jsonl_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the same records in the webhook's shape (what import reads).")
def simulate_export(stream, records, seed, timezone, csv_path, jsonl_path):
    """Write generated records as S-360 exports them, for import and reconcile."""
    if not (csv_path or jsonl_path):
        raise click.UsageError("give --csv, --jsonl or both")
    gen = Generator(seed)
    if stream != "contacts":
        gen.records("contacts", 100)  # orders refer to existing contacts
    made = gen.records(stream, records)
    if csv_path:
        write_csv(stream, made, csv_path, ZoneInfo(timezone))
    if jsonl_path:
        write_jsonl(made, jsonl_path)
    click.echo(f"{records} {stream} written to " + " and ".join(
        str(p) for p in (csv_path, jsonl_path) if p))


@hookimpl
def register_commands(cli):
    cli.add_command(demo)
    cli.add_command(simulate)
    cli.add_command(simulate_export)
