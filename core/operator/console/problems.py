"""What the console lists of the dead letters (their replay is core/operations/admin.py's, the
same as the CLI's): newest first, from the partial index of dead versions (engine_0008)."""

from __future__ import annotations

from sqlalchemy import select, text

from s360bridge.core.redact import redact
from s360bridge.core.storage.tables import DELIVERY, INBOX

LIMIT = 200


def dead_letters_query(codes: list[str]):
    return select(INBOX.c.id, INBOX.c.institution, INBOX.c.stream, INBOX.c.record_key,
                  INBOX.c.received_at, INBOX.c.attempts, INBOX.c.last_error) \
        .where(text("inbox.state = 'dead'"), INBOX.c.institution.in_(codes))


def dead_letters(bridge, institution: str | None = None, stream: str | None = None,
                 target: str | None = None, key: str | None = None,
                 limit: int = LIMIT) -> list[dict]:
    """The dead letters matching the filters: id, institution, stream, key, arrival, attempts,
    the last error (redacted)."""
    codes = [institution] if institution else sorted(bridge.settings.institutions)
    # the institutions named: the partial index of dead versions leads by them (without, a
    # planner walks the inbox's primary key backwards, looking for dead ones)
    query = dead_letters_query(codes).order_by(INBOX.c.id.desc()).limit(limit)
    if stream:
        query = query.where(INBOX.c.stream == stream)
    if key:
        query = query.where(INBOX.c.record_key == key)
    if target:
        query = query.where(select(DELIVERY.c.inbox_id).where(
            DELIVERY.c.inbox_id == INBOX.c.id, DELIVERY.c.target == target,
            DELIVERY.c.state == "dead").exists())
    with bridge.engine.connect() as conn:
        return [dict(r._mapping, last_error=r.last_error and redact(r.last_error))
                for r in conn.execute(query)]
