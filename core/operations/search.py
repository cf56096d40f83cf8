"""Search by key, for the CLI and the operator console: what the bridge holds of one record of
an institution (a contact number, an order id, a ticket check's key or barcode).

Its versions from the inbox, each with its state and, per target, its delivery (done, failed,
dead, held for a paused target, pending) with every attempt, its time, outcome and the target's
answer; and the quarantined records that hold the key. Keys are found through the inbox's
index; a stream's ``search_fields`` (a barcode), only when no record has the key, and the
quarantine by their stored text.
Answers and errors are redacted again as they are read (stored by an older version, maybe).
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import or_, select

from s360bridge.core.errors import S360BridgeError
from s360bridge.core.operations.pause import paused
from s360bridge.core.redact import redact
from s360bridge.core.storage.tables import ATTEMPT, DELIVERY, QUARANTINE, STATES

LIMIT = 100  # versions, newest first; and as many quarantined records


def search(bridge, institution: str, key: str, stream: str | None = None) -> dict:
    """The record(s) of ``institution`` whose key (or search field) is ``key``: ``versions``,
    oldest first, each with its ``targets``; ``quarantined``; ``paused`` targets."""
    inst = bridge.institution(institution)
    if inst is None:
        raise S360BridgeError(f"unknown institution {institution!r} (configured: "
                              f"{', '.join(sorted(bridge.settings.institutions))})")
    streams = [stream] if stream else sorted(set(inst.streams) | set(bridge.hooks.streams))
    with bridge.engine.connect() as conn:
        found = {r.id: r for r in conn.execute(
            select(STATES).where(STATES.c.institution == inst.code,
                                 STATES.c.stream.in_(streams), STATES.c.record_key == key)
            .order_by(STATES.c.id.desc()).limit(LIMIT))}
        for name in streams if not found else ():  # a key found needs no scan
            fields = _search_fields(bridge, inst, name)
            if fields:
                found |= {r.id: r for r in conn.execute(
                    select(STATES).where(STATES.c.institution == inst.code,
                                         STATES.c.stream == name,
                                         or_(*(_holds(STATES.c.payload, f, key) for f in fields)))
                    .order_by(STATES.c.id.desc()).limit(LIMIT))}
        ids = sorted(found)[-LIMIT:]
        deliveries = conn.execute(select(DELIVERY).where(DELIVERY.c.inbox_id.in_(ids))).all()
        attempts = conn.execute(select(ATTEMPT).where(ATTEMPT.c.inbox_id.in_(ids))
                                .order_by(ATTEMPT.c.at)).all()
        held = conn.execute(
            select(QUARANTINE).where(QUARANTINE.c.institution == inst.code,
                                     QUARANTINE.c.stream.in_(streams),
                                     QUARANTINE.c.payload.contains(key, autoescape=True))
            .order_by(QUARANTINE.c.id.desc()).limit(LIMIT)).all()
    stopped = {p["target"] for p in paused(bridge, inst.code)}
    versions = [_version(found[i], inst, deliveries, attempts, stopped) for i in ids]
    return {"institution": inst.code, "key": key, "paused": sorted(stopped),
            "versions": versions,
            "quarantined": [_quarantined(q) for q in reversed(held) if _names(q.payload, key)]}


def _search_fields(bridge, inst, name: str) -> tuple[str, ...]:
    stream = bridge.stream(name)
    if stream is None or stream.search_fields is None or name not in inst.streams:
        return ()
    return stream.search_fields(inst)


def _holds(column, field: str, value: str):
    """The stored text (canonical JSON: sorted, no spaces) has ``"field":"value"``, or the
    value as a number."""
    name = orjson.dumps(field).decode()
    text = column.contains(f"{name}:{orjson.dumps(value).decode()}", autoescape=True)
    if not value.isdigit():
        return text
    return or_(text, column.contains(f"{name}:{value},", autoescape=True),
               column.contains(f"{name}:{value}}}", autoescape=True))


def _version(row, inst, deliveries, attempts, stopped: set[str]) -> dict:
    routed = inst.streams[row.stream].targets if row.stream in inst.streams else []
    rows = {d.target: d for d in deliveries if d.inbox_id == row.id}
    tries: dict[str, list[dict]] = {}
    for a in attempts:
        if a.inbox_id == row.id:
            tries.setdefault(a.target, []).append(
                {"at": a.at, "outcome": a.outcome, "answer": a.answer and redact(a.answer)})
    targets = {}
    for name in [*routed, *sorted((set(rows) | set(tries)) - set(routed))]:
        d = rows.get(name)
        state = d.state if d is not None else _state_without_row(row.state, name in stopped)
        targets[name] = {"state": state, "attempts": tries.get(name, []),
                         "last_error": d.last_error and redact(d.last_error) if d else None}
    return {"id": row.id, "stream": row.stream, "key": row.record_key,
            "received_at": row.received_at, "state": row.state, "attempts": row.attempts,
            "last_error": row.last_error and redact(row.last_error),
            "next_attempt_at": row.next_attempt_at, "record": orjson.loads(row.payload),
            "targets": targets}


def _state_without_row(version_state: str, target_paused: bool) -> str:
    """A target's delivery of a version that has no delivery row: delivered with all the
    others at the first attempt (done), not tried yet (pending, or held once claimed while
    its target is paused), or never (superseded; a target added after it died)."""
    if version_state == "pending":
        return "held" if target_paused else "pending"
    return {"dead": "not tried"}.get(version_state, version_state)


def _quarantined(q) -> dict:
    return {"id": q.id, "stream": q.stream, "state": q.state, "reason": redact(q.reason),
            "count": q.count, "received_at": q.received_at, "last_seen_at": q.last_seen_at}


def _names(text: str, key: str) -> bool:
    """Whether a quarantined record's text has ``key`` as a value; one that does not parse is
    taken to, since it holds it."""
    try:
        return _has_value(orjson.loads(text), key)
    except orjson.JSONDecodeError:
        return True


def _has_value(value: Any, key: str) -> bool:
    """Walked without recursion: a quarantined record may be nested a thousand levels."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif not isinstance(v, bool) and v is not None and str(v) == key:
            return True
    return False
