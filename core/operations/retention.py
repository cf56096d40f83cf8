"""Built-in plugin: the retention purge of the engine's stores (inbox, deliveries and their
attempts, quarantine)."""

from __future__ import annotations

import logging
import time

from sqlalchemy import delete, select, text

from s360bridge.core.plugin.hookspecs import hookimpl
from s360bridge.core.storage.db import write
from s360bridge.core.storage.tables import ATTEMPT, DELIVERY, INBOX, QUARANTINE, QUEUE

log = logging.getLogger("s360bridge.retention")
PURGE_EVERY_SECONDS = 3600
PURGE_CHUNK = 5000  # rows per transaction: the receiver never waits long for the write lock


def purge(bridge, now: float | None = None) -> int:
    """Delete delivered and superseded versions older than the retention period, with their
    deliveries and attempts, and the quarantine rows already re-processed. Dead letters stay
    until replayed or forgotten, and so do the records held for a paused target."""
    now = time.time() if now is None else now
    horizon = now - bridge.settings.engine.retention_hours * 3600
    n = 0
    while True:
        with write(bridge.engine) as conn:
            queued = select(QUEUE.c.id).where(QUEUE.c.id == INBOX.c.id).exists()
            held = select(DELIVERY.c.inbox_id).where(  # as written: the partial index's
                DELIVERY.c.inbox_id == INBOX.c.id, text("delivery.state = 'held'")).exists()
            ids = [r[0] for r in conn.execute(
                select(INBOX.c.id).where(INBOX.c.state.in_(("accepted", "superseded")),
                                         INBOX.c.received_at < horizon, ~queued, ~held)
                .order_by(INBOX.c.id).limit(PURGE_CHUNK))]  # oldest first: arrival order
            if not ids:
                break
            conn.execute(delete(ATTEMPT).where(ATTEMPT.c.inbox_id.in_(ids)))
            conn.execute(delete(DELIVERY).where(DELIVERY.c.inbox_id.in_(ids)))
            n += conn.execute(delete(INBOX).where(INBOX.c.id.in_(ids))).rowcount
    with write(bridge.engine) as conn:
        n += conn.execute(delete(QUARANTINE).where(QUARANTINE.c.state == "reprocessed",
                                                   QUARANTINE.c.received_at < horizon)).rowcount
    if n:
        log.info("retention: purged %d row(s) older than %g h", n,
                 bridge.settings.engine.retention_hours)
    return n


@hookimpl
def register_jobs(register, bridge):
    register("purge", PURGE_EVERY_SECONDS, lambda: purge(bridge))
