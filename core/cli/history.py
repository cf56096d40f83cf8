"""``s360bridge import`` (history from a cut-off date) and ``s360bridge reconcile``."""

from __future__ import annotations

import csv
from pathlib import Path

import click

from s360bridge.core.cli.common import config_option, institution_of, open_bridge
from s360bridge.core.errors import S360BridgeError
from s360bridge.core.garbage import fewer_collections
from s360bridge.core.operations import reconcile_runs
from s360bridge.core.operations.history_import import run_import
from s360bridge.core.operations.import_delivery import BESIDE_BYTES, Beside
from s360bridge.core.operations.reconcile import (
    DIFFERENT,
    MISSING_IN_S360,
    MISSING_IN_TARGET,
    compare,
    configured,
    differences,
)
from s360bridge.core.operations.repair import deliver, repair

IN_SYNC, DIFFERENCES, COULD_NOT_RUN = 0, 1, 2


def _stream(bridge, inst, name: str):
    stream = bridge.stream(name)
    cfg = inst.streams.get(name)
    if stream is None or cfg is None or not cfg.enabled:
        raise S360BridgeError(f"stream {name!r} is not enabled for {inst.code} (enabled: "
                              f"{', '.join(n for n, c in inst.streams.items() if c.enabled)})")
    return stream


def _deliver_with_progress(bridge, label: str) -> int:
    with click.progressbar(length=1, label=label, show_percent=False) as bar, \
            fewer_collections():
        n = deliver(bridge)
        bar.update(1)
    return n


@click.command("import")
@config_option
@click.option("--institution", required=True)
@click.option("--stream", "stream_name", required=True)
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]),
              help="Default: csv for a .csv file, else JSON lines.")
@click.option("--batch", default=500, show_default=True, help="Records per transaction.")
@click.option("--again", is_flag=True, help="Import a file that was imported completely.")
@click.option("--no-deliver", is_flag=True, help="Only store; a running worker delivers.")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def import_records(configs, institution, stream_name, fmt, batch, again, no_deliver, file):
    """Load history from an S-360 export FILE through the webhooks' path; resumable."""
    bridge = open_bridge(configs)
    inst = institution_of(bridge, institution)
    stream = _stream(bridge, inst, stream_name)
    fmt = fmt or ("csv" if file.suffix.lower() == ".csv" else "jsonl")
    # a large file is delivered while it is stored, by a process of its own
    beside = Beside(configs).start() if not no_deliver and \
        file.stat().st_size >= BESIDE_BYTES else None
    try:
        with click.progressbar(length=file.stat().st_size, label=f"importing {file.name}") \
                as bar, fewer_collections():
            report = run_import(bridge, inst, stream, file, fmt, batch, again, bar.update)
    except BaseException:
        if beside is not None:
            beside.stop()
        raise
    t = report.totals
    if report.resumed_at and report.resumed_at == report.lines and not t.accepted:
        click.echo(f"{file}: already imported ({report.lines} lines); --again imports it anew")
    else:
        if report.resumed_at:
            click.echo(f"resumed after line {report.resumed_at}")
        click.echo(f"{report.lines} lines: {t.accepted} stored, {t.duplicates} already there, "
                   f"{t.before_cutoff} older than the history cut-off {inst.history_cutoff} "
                   f"(left out), {t.quarantined} quarantined")
    if not no_deliver:  # what is still queued too: an import stopped while it delivered
        n = beside.finish() if beside is not None else 0
        # its claims flush what the store left unflushed
        n += _deliver_with_progress(bridge, "delivering to the targets")
        click.echo(f"delivered {n} record(s); see `s360bridge status`")


def _export_rows(path: Path, key_column: str):
    def rows(keys: list[str]) -> dict[str, dict | None]:
        wanted, found = set(keys), dict.fromkeys(keys)
        with path.open(newline="", encoding="utf-8-sig") as f:
            for row in csv.DictReader(f):
                k = (row.get(key_column) or "").strip()
                if k in wanted:
                    found[k] = row
        return found
    return rows


@click.command()
@config_option
@click.option("--institution", required=True)
@click.option("--stream", "stream_name", required=True)
@click.option("--s360-export", "s360_file", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The S-360 flat-file export (CSV, as a data-export query writes it).")
@click.option("--target", "target_name", help="Default: the stream's first target.")
@click.option("--target-export", "target_file",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The target's export (CSV), for a target with no database (a CRM).")
@click.option("--report", "report", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write each difference [reconcile-INSTITUTION-STREAM.csv].")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]),
              help="Report format; default from the report's suffix, else csv.")
@click.option("--repair", "do_repair", is_flag=True,
              help="Re-deliver, re-fetch from S-360, and list what needs a human.")
@click.pass_context
def reconcile(ctx, configs, institution, stream_name, s360_file, target_name, target_file,
              report, fmt, do_repair):
    """Compare an S-360 export with a target by unique key; exit 0 in sync, 1 differences,
    2 could not run."""
    bridge = open_bridge(configs)
    inst = institution_of(bridge, institution)
    stream = _stream(bridge, inst, stream_name)
    targets = inst.streams[stream_name].targets
    target_name = target_name or (targets[0] if targets else None)
    if target_name not in targets:
        raise S360BridgeError(f"target {target_name!r} is not a target of {stream_name} "
                              f"(targets: {', '.join(targets) or 'none'})")
    target = bridge.target(inst, target_name)
    spec, s360_side = configured(bridge.hooks.reconcile(inst, stream, target), inst,
                                  stream_name)
    report = report or Path(f"reconcile-{inst.code}-{stream_name}.csv")
    fmt = fmt or ("jsonl" if report.suffix in (".jsonl", ".json") else "csv")
    with click.progressbar(length=4, label="reconcile") as bar:
        def step(label: str) -> None:
            bar.label = label
            bar.update(1)
        summary = compare(spec, s360_side, s360_file, target_file, report, fmt, step)
    reconcile_runs.kept(bridge, inst.code, stream_name, target_name, summary, report, fmt)
    c = summary.counts
    fields = ", ".join(f"{k} {v}" for k, v in summary.field_counts.items())
    click.echo(f"S-360 export: {summary.s360_records} records; target {target_name}: "
               f"{summary.target_records} records")
    click.echo(f"missing in the target: {c[MISSING_IN_TARGET]}; missing in S-360: "
               f"{c[MISSING_IN_S360]}; different: {c[DIFFERENT]}" +
               (f" ({fields})" if fields else ""))
    if summary.in_sync:
        click.echo("in sync")
        ctx.exit(IN_SYNC)
    click.echo(f"differences written to {report}")
    if do_repair:
        _repair(bridge, inst, stream, target_name, spec, s360_side, s360_file, report, fmt)
    ctx.exit(DIFFERENCES)


def _repair(bridge, inst, stream, target_name, spec, s360_side, s360_file, report, fmt):
    statuses = {d["key"]: d["status"] for d in differences(report, fmt)}
    rows = _export_rows(s360_file, s360_side.columns[spec.key.name])
    with click.progressbar(length=len(statuses), label="repairing") as bar:
        done = repair(bridge, inst, stream, target_name, spec, statuses, rows, bar.update)
    delivered = _deliver_with_progress(bridge, "delivering")
    click.echo(f"repair: {done.redelivered} re-delivered from the inbox, {done.refetched} read "
               f"again from S-360, {delivered} delivered; {len(done.for_a_human)} need a "
               "human" + (":" if done.for_a_human else ""))
    for key, why in done.for_a_human[:20]:
        click.echo(f"  {key}: {why}")
    if len(done.for_a_human) > 20:
        click.echo(f"  … and {len(done.for_a_human) - 20} more (see the report)")
    click.echo("run reconcile again to verify")
