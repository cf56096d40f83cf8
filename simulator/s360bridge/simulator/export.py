"""S-360's flat-file exports, as a data-export query writes them: CSV, one row per record.

The columns are the ones each stream's reconciliation reads by default; amounts are printed in
currency units (``45.00``) and date-times as local times without a zone, as data exports print
them (REFERENCE §d, §i.2). Ticket checks are the data-export rows themselves.
"""

from __future__ import annotations

import csv
import datetime as dt
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson

from s360bridge.core.connectors.mapping import lookup
from s360bridge.core.operations.reconcile import compare, configured
from s360bridge.plugins import contacts, orders


def _cell(kind: str, value, zone: ZoneInfo) -> str:
    if value is None:
        return ""
    if kind == "amount":
        return str((Decimal(value) / 1000).quantize(Decimal("0.01")))
    if kind == "datetime":
        t = dt.datetime.fromisoformat(value).astimezone(zone)
        return t.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def write_csv(stream: str, records: list[dict], path: Path, zone: ZoneInfo) -> None:
    """The S-360 export of ``records`` (webhook-shaped) for ``stream``."""
    with path.open("w", newline="", encoding="utf-8") as f:
        if stream == "ticketchecks":
            out = csv.DictWriter(f, fieldnames=list(records[0]) if records else [])
            out.writeheader()
            out.writerows({k: "" if v is None else v for k, v in r.items()} for r in records)
            return
        module = {"contacts": contacts, "orders": orders}[stream]
        fields = [module.KEY, *module.COMPARED]
        out = csv.writer(f)
        out.writerow([x.s360_column for x in fields])
        for r in records:
            out.writerow([_cell(x.kind, lookup(r, x.path), zone) for x in fields])


def write_jsonl(records: list[dict], path: Path) -> None:
    """The records in the webhook's shape, one per line: what ``s360bridge import`` reads."""
    with path.open("wb") as f:
        for r in records:
            f.write(orjson.dumps(r) + b"\n")


def reconcile_all(bridge, inst, made: dict, folder: Path) -> list[str]:
    """Write S-360's export of what the simulator made, and reconcile every stream with its
    first database target: what ``s360bridge reconcile`` does, for the demo."""
    lines = []
    folder.mkdir(parents=True, exist_ok=True)
    for (code, stream_name), records in made.items():
        cfg = inst.streams.get(stream_name)
        targets = [bridge.target(inst, n) for n in cfg.targets] if code == inst.code else []
        target = next((t for t in targets if t.kind == "sql"), None)
        if target is None:
            continue
        export = folder / f"{code}-{stream_name}-s360-export.csv"
        write_csv(stream_name, records, export, inst.timezone)
        spec, side = configured(bridge.hooks.reconcile(inst, bridge.stream(stream_name),
                                                       target), inst, stream_name)
        report = folder / f"{code}-{stream_name}-reconcile.csv"
        s = compare(spec, side, export, None, report)
        state = "in sync" if s.in_sync else f"{sum(s.counts.values())} differences ({report})"
        lines.append(f"reconcile {code}/{stream_name} with {target.name}: {s.s360_records} "
                     f"records in S-360's export, {s.target_records} in the target: {state}")
    return lines
