"""Built-in plugin for the engine's own stores: retention purge and erasure of a contact."""

from __future__ import annotations

import logging
import time

from sqlalchemy import delete, select

from .db import DELIVERY, INBOX, QUARANTINE, write
from .hookspecs import hookimpl

log = logging.getLogger("s360bridge.maintenance")
PURGE_EVERY_SECONDS = 3600
PURGE_CHUNK = 5000  # rows per transaction: the receiver never waits long for the write lock


def purge(bridge, now: float | None = None) -> int:
    """Delete delivered and superseded versions older than the retention period, and the
    quarantine rows already re-processed. Dead letters stay until replayed or forgotten."""
    now = time.time() if now is None else now
    horizon = now - bridge.settings.engine.retention_hours * 3600
    n = 0
    while True:
        with write(bridge.engine) as conn:
            ids = [r[0] for r in conn.execute(
                select(INBOX.c.id).where(INBOX.c.state.in_(("done", "superseded")),
                                         INBOX.c.received_at < horizon)
                .order_by(INBOX.c.id).limit(PURGE_CHUNK))]  # oldest first: arrival order
            if not ids:
                break
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


def erase_versions(bridge, institution, streams: list[str], key: str) -> int:
    """Delete every inbox version of ``key`` in ``streams``, with its delivery rows."""
    with write(bridge.engine) as conn:
        ids = select(INBOX.c.id).where(INBOX.c.institution == institution.code,
                                       INBOX.c.stream.in_(streams), INBOX.c.record_key == key)
        conn.execute(delete(DELIVERY).where(DELIVERY.c.inbox_id.in_(ids)))
        return conn.execute(delete(INBOX).where(INBOX.c.id.in_(ids))).rowcount


@hookimpl
def forget(bridge, institution, contact_number):
    """Inbox versions keyed by the contact in streams holding personal data, and quarantined
    records of those streams that name the contact."""
    personal = [name for name, s in bridge.hooks.streams.items() if s.personal_data]
    needle = f'"contactNumber":"{contact_number}"'
    n_inbox = erase_versions(bridge, institution, personal, contact_number)
    with write(bridge.engine) as conn:
        n_quar = conn.execute(delete(QUARANTINE).where(
            QUARANTINE.c.institution == institution.code, QUARANTINE.c.stream.in_(personal),
            QUARANTINE.c.payload.contains(needle, autoescape=True))).rowcount
    return [f"engine inbox: {n_inbox} version(s)", f"engine quarantine: {n_quar} record(s)"]
