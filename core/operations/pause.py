"""Pause and resume a target of an institution, for the CLI and the operator console.

While a target is paused the worker pushes nothing to it: each record routed to it is delivered
to the stream's other targets and held for it (a delivery row ``held``, out of the queue),
neither an attempt nor a failure, and stays pending. The resume queues the held records again,
and they go to that target alone (the others have them). A batch claimed before the pause may
still reach the target; every record received after ``pause`` returned waits for the resume.
"""

from __future__ import annotations

import time

from sqlalchemy import delete, select, text

from s360bridge.core.errors import S360BridgeError
from s360bridge.core.operations import audit
from s360bridge.core.operations.audit import Actor
from s360bridge.core.storage.db import write
from s360bridge.core.storage.rawsql import index_plans_only, run
from s360bridge.core.storage.tables import DELIVERY, INBOX, PAUSED, dialect_insert, requeue

_HELD = text("delivery.state = 'held'")  # as written, so the partial index ix_delivery_held is used
_CHUNK = 500
# The records waiting for paused targets, per institution and target: how many, and the oldest
# one's arrival. It walks the partial index of held deliveries (they alone are in it) and probes
# the inbox by its primary key, so it costs nothing while no target is paused: for /metrics, a
# paused target's backlog beside the queue's (core/operator/gauges.py reads the queue only).
HELD = {
    "sqlite": """SELECT i.institution, d.target, count(*), min(i.received_at)
        FROM delivery d CROSS JOIN inbox i
        WHERE d.state = 'held' AND i.id = d.inbox_id AND i.state = 'accepted'
        GROUP BY i.institution, d.target""",
    "postgresql": """SELECT i.institution, d.target, count(*), min(i.received_at)
        FROM delivery d, LATERAL (SELECT institution, received_at FROM inbox
            WHERE id = d.inbox_id AND state = 'accepted' OFFSET 0) AS i
        WHERE d.state = 'held' GROUP BY i.institution, d.target""",
}


def pause(bridge, institution: str, target: str, *, actor: Actor,
          now: float | None = None) -> bool:
    """Pause ``target`` of ``institution``; False when it was paused already (nothing done)."""
    inst = bridge.institution(institution)
    if inst is None:
        raise S360BridgeError(f"unknown institution {institution!r} (configured: "
                              f"{', '.join(sorted(bridge.settings.institutions))})")
    if target not in inst.targets:
        raise S360BridgeError(f"institution {institution} has no target {target!r} (its "
                              f"targets: {', '.join(sorted(inst.targets)) or 'none'})")
    now = time.time() if now is None else now
    with write(bridge.engine) as conn:
        ins = dialect_insert(conn, PAUSED).values(
            institution=institution, target=target, paused_at=now, paused_by=actor.name)
        if not conn.execute(ins.on_conflict_do_nothing()).rowcount:
            return False
        audit.record(conn, actor, "pause", institution, {"target": target}, now)
    return True


def resume(bridge, institution: str, target: str, *, actor: Actor,
           now: float | None = None) -> int | None:
    """Resume ``target`` of ``institution`` and queue the records held for it, for delivery
    now; answers how many, or None when it was not paused (nothing done). A held record that
    became a dead letter meanwhile (another target refused it) waits for its replay."""
    with write(bridge.engine) as conn:
        if not conn.execute(delete(PAUSED).where(PAUSED.c.institution == institution,
                                                 PAUSED.c.target == target)).rowcount:
            return None
        held = conn.execute(
            select(INBOX.c.id, INBOX.c.state).join(DELIVERY, DELIVERY.c.inbox_id == INBOX.c.id)
            .where(DELIVERY.c.target == target, _HELD, INBOX.c.institution == institution)
            .order_by(INBOX.c.id)).all()
        waiting = [seq for seq, state in held if state == "accepted"]
        for i in range(0, len(held), _CHUNK):
            conn.execute(delete(DELIVERY).where(
                DELIVERY.c.inbox_id.in_([seq for seq, _ in held[i:i + _CHUNK]]),
                DELIVERY.c.target == target, _HELD))
        for i in range(0, len(waiting), _CHUNK):
            # one queued already waits its retry
            conn.execute(requeue(conn, waiting[i:i + _CHUNK]).on_conflict_do_nothing())
        audit.record(conn, actor, "resume", institution,
                     {"target": target, "requeued": len(waiting)}, now)
    return len(waiting)


def held(conn) -> dict[tuple[str, str], tuple[int, float]]:
    """(institution, target) -> how many records wait for that paused target (held, and
    neither superseded nor dead since) and the oldest one's arrival (epoch seconds)."""
    return {(inst, target): (n, oldest)
            for inst, target, n, oldest in run(conn, HELD[conn.dialect.name])}


def paused(bridge, institution: str | None = None) -> list[dict]:
    """The paused targets: institution, target, since when, by whom, and how many records
    wait for them (``held``)."""
    query = select(PAUSED).order_by(PAUSED.c.institution, PAUSED.c.target)
    if institution:
        query = query.where(PAUSED.c.institution == institution)
    with bridge.engine.connect() as conn:
        found = [dict(r._mapping) for r in conn.execute(query)]
        index_plans_only(conn)
        waiting = held(conn) if found else {}
    return [p | {"held": waiting.get((p["institution"], p["target"]), (0, None))[0]}
            for p in found]
