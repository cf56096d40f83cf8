"""Built-in plugin: erasure of one contact's personal data from the engine's own stores."""

from __future__ import annotations

import orjson
from sqlalchemy import delete, select

from s360bridge.core.plugin.hookspecs import hookimpl
from s360bridge.core.storage.db import write
from s360bridge.core.storage.tables import DELIVERY, INBOX, QUARANTINE, QUEUE


def erase_versions(bridge, institution, streams: list[str], key: str) -> int:
    """Delete every inbox version of ``key`` in ``streams``, with its delivery rows."""
    with write(bridge.engine) as conn:
        ids = select(INBOX.c.id).where(INBOX.c.institution == institution.code,
                                       INBOX.c.stream.in_(streams), INBOX.c.record_key == key)
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
    return [f"engine inbox: {n_inbox} version(s)", f"engine quarantine: {n_quar} record(s)"]


def _names(text: str, contact_number: str) -> bool:
    """Whether a quarantined record (its text as received, spaced as it came) is the
    contact's; one that does not parse is taken to be, since it holds the number."""
    try:
        record = orjson.loads(text)
    except orjson.JSONDecodeError:
        return True
    return not isinstance(record, dict) or record.get("contactNumber") == contact_number
