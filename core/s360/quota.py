"""The monthly call quota of a venue's S-360 plan (the OPEN API pack: 10,000 calls a month,
REFERENCE §e.4), counted by the bridge in the engine database across its processes.

Each call is counted before it is sent, in the same transaction as the check. The last
``monthly_reserve_for_sales`` calls of a month are kept for sales: the reads of the catalog and
the availabilities stop there, and with the quota spent, every call stops (S360QuotaSpent:
nothing was sent). A call whose connection could not be made is given back. Months are
counted in UTC (when S-360's month turns is NOT FOUND).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Column, Integer, MetaData, String, Table, select, update

from s360bridge.core.storage.db import write
from s360bridge.core.storage.tables import dialect_insert

METADATA = MetaData()  # made by core/storage/migrations (engine_0007): change both
MONTH_CALLS = Table(
    "s360_month_calls", METADATA,
    Column("institution", String(40), primary_key=True),
    Column("month", String(7), primary_key=True),  # YYYY-MM, UTC
    Column("calls", Integer, nullable=False),
)
REFRESHES = frozenset({"catalogService", "availabilityService"})  # what the reserve stops


class QuotaSpent(Exception):
    """The month's quota (or what is left of it beside the sales' reserve) is spent."""


def month_of(now: float) -> str:
    return dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m")


def spend(engine, institution: str, now: float, limit: int, reserve: int,
          refresh: bool) -> int:
    """Count one call; answer the calls left this month, or raise QuotaSpent (not counted)."""
    month = month_of(now)
    with write(engine) as conn:
        ins = dialect_insert(conn, MONTH_CALLS).values(institution=institution, month=month,
                                                      calls=1)
        used = conn.execute(ins.on_conflict_do_update(
            index_elements=["institution", "month"],
            set_={"calls": MONTH_CALLS.c.calls + 1}).returning(MONTH_CALLS.c.calls)).scalar_one()
        if used > limit:
            raise QuotaSpent(f"the {limit} calls of {month} are spent")
        if refresh and used > limit - reserve:
            raise QuotaSpent(f"the last {reserve} calls of {month} are kept for sales")
    return limit - used


def give_back(engine, institution: str, now: float) -> None:
    with write(engine) as conn:
        conn.execute(update(MONTH_CALLS).where(
            MONTH_CALLS.c.institution == institution, MONTH_CALLS.c.month == month_of(now),
            MONTH_CALLS.c.calls > 0).values(calls=MONTH_CALLS.c.calls - 1))


def left(engine, institution: str, now: float, limit: int) -> int:
    with engine.connect() as conn:
        used = conn.execute(select(MONTH_CALLS.c.calls).where(
            MONTH_CALLS.c.institution == institution,
            MONTH_CALLS.c.month == month_of(now))).scalar()
    return max(0, limit - (used or 0))
