"""Operator actions behind the CLI and the console: status, replay of dead letters, quarantine
handling (each replay with a dry run that counts, and in the audit trail when it acts); and what
the bridge holds of records (``received``), for reports that check against it."""

from __future__ import annotations

import time

import orjson
from sqlalchemy import func, select, update

from s360bridge.core.operations import audit, pause
from s360bridge.core.operations.audit import Actor
from s360bridge.core.pipeline.ingest import prepare, store
from s360bridge.core.redact import redact
from s360bridge.core.s360 import quota
from s360bridge.core.storage.db import write
from s360bridge.core.storage.tables import DELIVERY, INBOX, QUARANTINE, SKIPPED, STATES, enqueue


def received(bridge, institution: str, stream: str, keys: list[str]) -> dict[str, dict]:
    """The newest version the bridge received of each key (its record), by key; a key never
    received, or purged by retention, is missing."""
    newest = select(func.max(INBOX.c.id)).where(
        INBOX.c.institution == institution, INBOX.c.stream == stream,
        INBOX.c.record_key.in_(keys)).group_by(INBOX.c.record_key)
    with bridge.engine.connect() as conn:
        rows = conn.execute(select(INBOX.c.record_key, INBOX.c.payload).where(
            INBOX.c.id.in_(newest))).all()
    return {key: orjson.loads(payload) for key, payload in rows}


def status(bridge) -> dict:
    """Counts per institution, stream and state; targets described without secrets."""
    with bridge.engine.connect() as conn:
        inbox = conn.execute(
            select(STATES.c.institution, STATES.c.stream, STATES.c.state, func.count(),
                   func.min(STATES.c.received_at))
            .group_by(STATES.c.institution, STATES.c.stream, STATES.c.state)).all()
        quarantine = conn.execute(
            select(QUARANTINE.c.institution, QUARANTINE.c.stream, func.count())
            .where(QUARANTINE.c.state == "held")
            .group_by(QUARANTINE.c.institution, QUARANTINE.c.stream)).all()
        newest_dead = select(func.max(INBOX.c.id)).where(INBOX.c.state == "dead") \
            .group_by(INBOX.c.institution, INBOX.c.stream)
        dead = conn.execute(select(INBOX.c.institution, INBOX.c.stream, INBOX.c.last_error)
                            .where(INBOX.c.id.in_(newest_dead))).all()
        newest_failing = select(func.max(STATES.c.id)).where(
            STATES.c.state == "pending", STATES.c.last_error.is_not(None)) \
            .group_by(STATES.c.institution, STATES.c.stream)
        failing = conn.execute(select(INBOX.c.institution, INBOX.c.stream, INBOX.c.last_error)
                               .where(INBOX.c.id.in_(newest_failing))).all()
        skipped = conn.execute(select(SKIPPED.c.institution, SKIPPED.c.stream, SKIPPED.c.reason,
                                      SKIPPED.c.count)).all()
    now = time.time()
    report: dict = {}
    for inst in bridge.settings.institutions.values():
        report[inst.code] = {
            "config": str(inst.source),
            "streams": {name: {"enabled": cfg.enabled, "auth": cfg.auth.type,
                               "targets": list(cfg.targets), "states": {}, "quarantined": 0}
                        for name, cfg in inst.streams.items()},
            "targets": {name: bridge.describe(inst, name) for name in inst.targets},
        }
        if inst.s360_api is not None and inst.s360_api.monthly_calls:
            report[inst.code]["s360_calls_left_this_month"] = quota.left(
                bridge.engine, inst.code, now, inst.s360_api.monthly_calls)
    for code, stream, state, count, oldest in inbox:
        entry = _stream_entry(report, code, stream)
        entry["states"][state] = count
        if state == "pending":
            entry["oldest_pending_seconds"] = round(now - oldest, 1)
    for code, stream, count in quarantine:
        _stream_entry(report, code, stream)["quarantined"] = count
    for code, stream, error in dead:  # redacted again: stored by an older version, maybe
        _stream_entry(report, code, stream)["last_dead_letter_error"] = error and redact(error)
    for code, stream, error in failing:  # waiting for a retry: what went wrong last
        _stream_entry(report, code, stream)["last_error"] = redact(error)
    for code, stream, reason, count in skipped:
        _stream_entry(report, code, stream)[reason] = count
    for p in pause.paused(bridge):
        report.setdefault(p["institution"], {"config": None, "streams": {}, "targets": {}}) \
            .setdefault("paused", {})[p["target"]] = {
                "since": p["paused_at"], "by": p["paused_by"], "held": p["held"]}
    return report


def _stream_entry(report: dict, code: str, stream: str) -> dict:
    inst = report.setdefault(code, {"config": None, "streams": {}, "targets": {}})
    return inst["streams"].setdefault(stream, {"states": {}, "quarantined": 0})


def replay(bridge, institution: str | None = None, stream: str | None = None,
           key: str | None = None, *, actor: Actor, target: str | None = None,
           since: float | None = None, through: int | None = None,
           dry_run: bool = False) -> int:
    """Re-queue dead letters (all, or those matching the filters) for immediate delivery, and
    answer how many; with ``dry_run``, only count them. ``target``: those that target failed
    for good (the record goes again to every target that lacks it); ``since``: received at or
    after that time (epoch seconds); ``through``: records up to that id only (what a dry run
    counted, not what died since)."""
    cond = [INBOX.c.state == "dead"]
    if institution:
        cond.append(INBOX.c.institution == institution)
    if stream:
        cond.append(INBOX.c.stream == stream)
    if key:
        cond.append(INBOX.c.record_key == key)
    if target:
        cond.append(select(DELIVERY.c.inbox_id).where(
            DELIVERY.c.inbox_id == INBOX.c.id, DELIVERY.c.target == target,
            DELIVERY.c.state == "dead").exists())
    if since is not None:
        cond.append(INBOX.c.received_at >= since)
    if through is not None:
        cond.append(INBOX.c.id <= through)
    if dry_run:
        with bridge.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(INBOX).where(*cond)).scalar()
    with write(bridge.engine) as conn:
        ids = [r[0] for r in conn.execute(select(INBOX.c.id).where(*cond))]
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            conn.execute(update(DELIVERY).where(DELIVERY.c.inbox_id.in_(chunk),
                                                DELIVERY.c.state == "dead")
                         .values(state="failed", attempts=0))
            enqueue(conn, chunk)
        if ids:
            filters = {"stream": stream, "key": key, "target": target, "since": since}
            audit.record(conn, actor, "replay", institution,
                         {k: v for k, v in filters.items() if v is not None}
                         | {"replayed": len(ids)})
    return len(ids)


def quarantined(bridge, institution: str | None = None, stream: str | None = None,
                limit: int = 100, since: float | None = None) -> list[dict]:
    """The held records, oldest first; ``since``: those that came (again) at or after it."""
    query = select(QUARANTINE).where(QUARANTINE.c.state == "held").order_by(QUARANTINE.c.id)
    if institution:
        query = query.where(QUARANTINE.c.institution == institution)
    if stream:
        query = query.where(QUARANTINE.c.stream == stream)
    if since is not None:
        query = query.where(QUARANTINE.c.last_seen_at >= since)
    with bridge.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query.limit(limit))]


def quarantine_entry(bridge, entry_id: int) -> dict | None:
    with bridge.engine.connect() as conn:
        row = conn.execute(select(QUARANTINE).where(QUARANTINE.c.id == entry_id)).first()
    return dict(row._mapping) if row else None


def reprocess(bridge, entries: list[dict], *, actor: Actor, dry_run: bool = False) -> dict:
    """Run held records through validation again (after a schema or config fix): the valid ones
    enter the inbox, the others stay held with the new reason (their count unchanged). With
    ``dry_run`` nothing changes: the totals say what would happen now."""
    totals = {"accepted": 0, "duplicates": 0, "still_invalid": 0}
    for e in entries:
        inst, stream = bridge.institution(e["institution"]), bridge.stream(e["stream"])
        if inst is None or stream is None:
            totals["still_invalid"] += 1
            continue
        try:
            record = orjson.loads(e["payload"])
        except orjson.JSONDecodeError as exc:
            if not dry_run:
                _still_held(bridge, e["id"], f"not parsed: {exc}")
            totals["still_invalid"] += 1
            continue
        prepared = prepare(bridge, inst, stream, [record], lambda text=e["payload"]: [text])
        if prepared.held:
            if not dry_run:
                _still_held(bridge, e["id"], prepared.held[0][1])
            totals["still_invalid"] += 1
            continue
        if dry_run:
            stored = _stored(bridge, prepared.rows)
            totals["duplicates"] += stored
            totals["accepted"] += len(prepared.rows) - stored
            continue

        def done(conn, entry_id=e["id"]):
            conn.execute(update(QUARANTINE).where(QUARANTINE.c.id == entry_id)
                         .values(state="reprocessed"))
        result = store(bridge, inst, stream, prepared, also=done)
        totals["accepted"] += result.accepted
        totals["duplicates"] += result.duplicates
    if entries and not dry_run:
        with write(bridge.engine) as conn:
            institutions = {e["institution"] for e in entries}
            audit.record(conn, actor, "reprocess",
                         next(iter(institutions)) if len(institutions) == 1 else None,
                         {"entries": len(entries)} | totals)
    return totals


def _stored(bridge, rows: list[tuple]) -> int:
    """How many of these prepared inbox rows the inbox holds already (their version)."""
    with bridge.engine.connect() as conn:
        return sum(conn.execute(select(INBOX.c.id).where(
            INBOX.c.institution == inst, INBOX.c.stream == stream, INBOX.c.record_key == key,
            INBOX.c.content_hash == digest)).first() is not None
            for inst, stream, key, digest, *_ in rows)


def _still_held(bridge, entry_id: int, reason: str) -> None:
    with write(bridge.engine) as conn:
        conn.execute(update(QUARANTINE).where(QUARANTINE.c.id == entry_id).values(reason=reason))
