"""Erasure of one contact's personal data (a GDPR request): ``forget_contact``, which the CLI
and the operator console share, runs every plugin's ``forget`` hook and records it in the audit
trail; and the built-in plugin that erases it from the engine's own stores."""

from __future__ import annotations

import orjson
from sqlalchemy import delete, select

from s360bridge.core.errors import S360BridgeError
from s360bridge.core.operations import audit, reconcile_runs
from s360bridge.core.operations.audit import Actor
from s360bridge.core.plugin.hookspecs import hookimpl
from s360bridge.core.storage.db import write
from s360bridge.core.storage.tables import ATTEMPT, DELIVERY, INBOX, QUARANTINE, QUEUE


def forget_contact(bridge, institution: str, contact_number: str, *,
                   actor: Actor) -> list[str]:
    """Erase the contact from every local store, through each plugin's ``forget`` hook; answer
    what went, as the hooks said it. The audit trail keeps the request: who, when, which
    contact number and what went (no personal data beyond the number)."""
    inst = bridge.institution(institution)
    if inst is None:
        raise S360BridgeError(f"unknown institution {institution!r} (configured: "
                              f"{', '.join(sorted(bridge.settings.institutions))})")
    removed = bridge.hooks.forget(bridge, inst, contact_number)
    with write(bridge.engine) as conn:
        audit.record(conn, actor, "forget", inst.code,
                     {"contact": contact_number, "removed": removed})
    return removed


def erase_versions(bridge, institution, streams: list[str], key: str) -> int:
    """Delete every inbox version of ``key`` in ``streams``, with its deliveries and their
    attempts (a target's answer may quote the record)."""
    with write(bridge.engine) as conn:
        ids = select(INBOX.c.id).where(INBOX.c.institution == institution.code,
                                       INBOX.c.stream.in_(streams), INBOX.c.record_key == key)
        conn.execute(delete(ATTEMPT).where(ATTEMPT.c.inbox_id.in_(ids)))
        conn.execute(delete(DELIVERY).where(DELIVERY.c.inbox_id.in_(ids)))
        conn.execute(delete(QUEUE).where(QUEUE.c.id.in_(ids)))
        return conn.execute(delete(INBOX).where(INBOX.c.id.in_(ids))).rowcount


@hookimpl
def forget(bridge, institution, contact_number):
    """Inbox versions keyed by the contact in streams holding personal data, and quarantined
    records of those streams that name the contact."""
    personal = [name for name, s in bridge.hooks.streams.items() if s.personal_data]
    n_inbox = erase_versions(bridge, institution, personal, contact_number)
    with write(bridge.engine) as conn:
        found = conn.execute(select(QUARANTINE.c.id, QUARANTINE.c.payload).where(
            QUARANTINE.c.institution == institution.code, QUARANTINE.c.stream.in_(personal),
            QUARANTINE.c.payload.contains(f'"{contact_number}"', autoescape=True))).all()
        ids = [i for i, text in found if _names(text, contact_number)]
        n_quar = conn.execute(delete(QUARANTINE).where(QUARANTINE.c.id.in_(ids))).rowcount
        n_runs = reconcile_runs.forget(conn, institution.code, personal, contact_number)
    return [f"engine inbox: {n_inbox} version(s)", f"engine quarantine: {n_quar} record(s)",
            f"reconcile runs: {n_runs} difference(s)"]


def _names(text: str, contact_number: str) -> bool:
    """Whether a quarantined record (its text as received, spaced as it came) is the
    contact's; one that does not parse is taken to be, since it holds the number."""
    try:
        record = orjson.loads(text)
    except orjson.JSONDecodeError:
        return True
    return not isinstance(record, dict) or record.get("contactNumber") == contact_number
