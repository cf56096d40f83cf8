"""What the engine database holds, as the answers of the receiver count it."""

from __future__ import annotations

from sqlalchemy import func, select

from s360bridge.core.storage.tables import INBOX, QUARANTINE


def totals(bridge) -> tuple[int, int]:
    """(inbox versions, quarantined records: the sum of the counts of the quarantine rows)."""
    with bridge.engine.connect() as conn:
        inbox = conn.execute(select(func.count()).select_from(INBOX)).scalar_one()
        held = conn.execute(select(func.coalesce(func.sum(QUARANTINE.c.count), 0))).scalar_one()
    return inbox, held


def quarantine_rows(bridge) -> list[dict]:
    with bridge.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(QUARANTINE).order_by(
            QUARANTINE.c.id))]
