"""What each ``s360bridge reconcile`` found, kept for the operator console: the counts, where
its report was written, and its first ``KEPT`` differences (the report holds them all). A
difference is kept as its key, status and field, never the values (a contact's name or
e-mail): they stay in the report file, and ``forget`` removes a contact's key (erasure.py)."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import orjson
from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)

from s360bridge.core.operations.reconcile import Summary, differences
from s360bridge.core.storage.db import write

METADATA = MetaData()  # made by core/storage/migrations (engine_0012): change both
RUNS = Table(
    "reconcile_run", METADATA,
    Column("id", Integer, primary_key=True),
    Column("at", Float, nullable=False),
    Column("institution", String, nullable=False),
    Column("stream", String, nullable=False),
    Column("target", String, nullable=False),
    Column("summary", Text, nullable=False),  # JSON: records each side, counts per status
    Column("report", Text, nullable=False),  # the report file, where it was written
    Column("differences", Text, nullable=False),  # JSON: the first KEPT, without values
)
KEPT = 1000


def kept(bridge, institution: str, stream: str, target: str, summary: Summary,
         report: Path, fmt: str) -> int:
    """Keep one run; answer its id."""
    first = [{k: d.get(k) or None for k in ("key", "status", "field")}
             for d in itertools.islice(differences(report, fmt), KEPT)] \
        if not summary.in_sync else []
    with write(bridge.engine) as conn:
        return conn.execute(insert(RUNS).values(
            at=time.time(), institution=institution, stream=stream, target=target,
            summary=orjson.dumps({
                "s360_records": summary.s360_records,
                "target_records": summary.target_records, "counts": summary.counts,
                "field_counts": summary.field_counts, "in_sync": summary.in_sync}).decode(),
            report=str(report.resolve()), differences=orjson.dumps(first).decode())
            .returning(RUNS.c.id)).scalar_one()


def forget(conn, institution: str, streams: list[str], key: str) -> int:
    """Remove ``key``'s differences from the runs of ``streams``; answer how many went."""
    gone = 0
    for run_id, text in conn.execute(select(RUNS.c.id, RUNS.c.differences).where(
            RUNS.c.institution == institution, RUNS.c.stream.in_(streams),
            RUNS.c.differences.contains(f'"{key}"', autoescape=True))).all():
        kept_ = [d for d in orjson.loads(text) if d.get("key") != key]
        gone += len(orjson.loads(text)) - len(kept_)
        conn.execute(update(RUNS).where(RUNS.c.id == run_id).values(
            differences=orjson.dumps(kept_).decode()))
    return gone


def runs(bridge, limit: int = 100) -> list[dict]:
    """The latest runs first, without their differences."""
    query = select(*(c for c in RUNS.c if c.name != "differences")) \
        .order_by(RUNS.c.id.desc()).limit(limit)
    with bridge.engine.connect() as conn:
        return [dict(r._mapping, summary=orjson.loads(r.summary)) for r in conn.execute(query)]


def run(bridge, run_id: int) -> dict | None:
    with bridge.engine.connect() as conn:
        r = conn.execute(select(RUNS).where(RUNS.c.id == run_id)).first()
    if r is None:
        return None
    return dict(r._mapping, summary=orjson.loads(r.summary),
                differences=orjson.loads(r.differences))
