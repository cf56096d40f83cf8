"""Offers and the catalog cache, kept in the engine database.

An offer's row is its durable progress: each step is written *before* the S-360 call it leads
to, so that after a crash the bridge knows what may have happened. A row is worked on by one
process at a time (the core's leases, on its ``lease_owner`` and ``lease_until`` columns).
"""

from __future__ import annotations

import time

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    select,
    text,
    update,
)

from s360bridge.core.api import dialect_insert, leases, write

# the offers not final, written out as the partial index's condition is (migrations/
# offers_0004): a planner uses that index only for a query whose condition implies its own
UNFINISHED = text("state NOT IN ('done', 'failed')")
METADATA = MetaData()  # the tables are made by migrations/ (branch ``offers``): change both
OFFERS = Table(
    "offer", METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("institution", String(40), nullable=False),
    Column("idempotency_key", String(200), nullable=False),
    # '' for the service's own credentials (the CRM operator), else the caller's name
    Column("caller", String(40), nullable=False, server_default=""),
    Column("request", Text, nullable=False),
    Column("action", String(20), nullable=False),  # create | confirm | release | cancel
    # new | ordering | open | closing | done | failed | uncertain
    Column("state", String(20), nullable=False),
    Column("order_id", BigInteger), Column("file_id", BigInteger),
    Column("expires_at", String(40)),
    Column("result", Text), Column("error", Text), Column("http_status", Integer),
    Column("lease_owner", String(40)), Column("lease_until", Float),
    Column("created_at", Float, nullable=False), Column("updated_at", Float, nullable=False),
    UniqueConstraint("institution", "caller", "idempotency_key", name="uq_offer_key"),
    Index("ix_offer_unfinished", "institution", "state", sqlite_where=UNFINISHED,
          postgresql_where=UNFINISHED),
)
CACHE = Table(
    "offer_cache", METADATA,
    Column("institution", String(40), primary_key=True),
    # catalog | availability | pos, with "@operator" for a channel of its own (catalog.py)
    Column("what", String(100), primary_key=True),
    Column("fetched_at", Float, nullable=False),
    Column("marker", Text),  # e.g. the lastSetupUpdate the catalog was read at
    Column("data", Text, nullable=False),
)
FINAL = ("done", "failed")  # an uncertain offer is resolved by the recovery job


def row(engine, offer_id: int) -> dict | None:
    with engine.connect() as conn:
        r = conn.execute(select(OFFERS).where(OFFERS.c.id == offer_id)).first()
    return dict(r._mapping) if r else None


def by_key(engine, institution: str, key: str, caller: str = "") -> dict | None:
    with engine.connect() as conn:
        r = conn.execute(select(OFFERS).where(OFFERS.c.institution == institution,
                                              OFFERS.c.caller == caller,
                                              OFFERS.c.idempotency_key == key)).first()
    return dict(r._mapping) if r else None


def create(engine, institution: str, key: str, request: dict,
           caller: str = "") -> tuple[dict, bool]:
    """The caller's offer of this idempotency key: a new one, or the one already there
    (False)."""
    now = time.time()
    with write(engine) as conn:
        ins = dialect_insert(conn, OFFERS).values(
            institution=institution, caller=caller, idempotency_key=key,
            request=orjson.dumps(request).decode(), action="create", state="new",
            created_at=now, updated_at=now)
        # RETURNING answers a row only when the offer was inserted (a row count would not do:
        # PostgreSQL reports -1 for an INSERT … RETURNING)
        made = conn.execute(ins.on_conflict_do_nothing().returning(OFFERS.c.id)).first() \
            is not None
    return by_key(engine, institution, key, caller), made


def save(engine, offer_id: int, **values) -> None:
    for k in ("result",):
        if k in values and not isinstance(values[k], str | None):
            values[k] = orjson.dumps(values[k]).decode()
    with write(engine) as conn:
        conn.execute(update(OFFERS).where(OFFERS.c.id == offer_id)
                     .values(updated_at=time.time(), **values))


def save_if_unchanged(engine, row: dict, **values) -> bool:
    """Save only if the offer is still as ``row`` read it (two follow-ups at once: one wins);
    answers whether it was saved."""
    if "result" in values and not isinstance(values["result"], str | None):
        values["result"] = orjson.dumps(values["result"]).decode()
    with write(engine) as conn:
        return conn.execute(update(OFFERS).where(
            OFFERS.c.id == row["id"], OFFERS.c.updated_at == row["updated_at"]).values(
            updated_at=max(time.time(), row["updated_at"] + 1e-6), **values)).rowcount == 1


def unfinished(engine, institutions: list[str]) -> list[int]:
    """The offers of ``institutions`` not final that no process works on."""
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(select(OFFERS.c.id).where(
            OFFERS.c.institution.in_(institutions), UNFINISHED, leases.unheld(OFFERS)))]


def unfinished_by_state(engine) -> list[tuple]:
    """(institution, caller, state, how many, oldest created_at) of the offers not finished
    (the partial index of unfinished offers: never a read of every offer)."""
    with engine.connect() as conn:
        return list(conn.execute(
            select(OFFERS.c.institution, OFFERS.c.caller, OFFERS.c.state, func.count(),
                   func.min(OFFERS.c.created_at))
            .where(UNFINISHED)
            .group_by(OFFERS.c.institution, OFFERS.c.caller, OFFERS.c.state)))


def listing(engine, institution: str | None = None, limit: int = 100,
            caller: str | None = None, state: str | None = None) -> list[dict]:
    """The latest offers, newest first; ``caller``: ``''`` for the CRM operator's."""
    query = select(OFFERS).order_by(OFFERS.c.id.desc()).limit(limit)
    if institution:
        query = query.where(OFFERS.c.institution == institution)
    if caller is not None:
        query = query.where(OFFERS.c.caller == caller)
    if state is not None:
        query = query.where(OFFERS.c.state == state)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def cached(engine, institution: str, what: str) -> dict | None:
    with engine.connect() as conn:
        r = conn.execute(select(CACHE).where(CACHE.c.institution == institution,
                                             CACHE.c.what == what)).first()
    return None if r is None else {"fetched_at": r.fetched_at, "marker": r.marker,
                                   "data": orjson.loads(r.data)}


def cache(engine, institution: str, what: str, data, marker: str | None = None) -> None:
    with write(engine) as conn:
        ins = dialect_insert(conn, CACHE).values(
            institution=institution, what=what, fetched_at=time.time(), marker=marker,
            data=orjson.dumps(data).decode())
        conn.execute(ins.on_conflict_do_update(
            index_elements=["institution", "what"],
            set_={"fetched_at": ins.excluded.fetched_at, "marker": ins.excluded.marker,
                  "data": ins.excluded.data}))
