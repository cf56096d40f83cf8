"""The audit trail: who did what to the records, and when. The shared operations (replay,
quarantine reprocessing, pause, resume, forget) record themselves here, in the transaction of
what they change where they have one; the CLI acts as the user it runs as, the operator console
as its operator. It is kept until someone deletes it: retention does not purge it."""

from __future__ import annotations

import getpass
import os
import time
from dataclasses import dataclass

import orjson
from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, insert, select

METADATA = MetaData()  # made by core/storage/migrations (engine_0011): change both
AUDIT = Table(
    "audit", METADATA,
    Column("id", Integer, primary_key=True),
    Column("at", Float, nullable=False),
    Column("actor", String, nullable=False),
    Column("via", String, nullable=False),  # cli | console
    Column("action", String, nullable=False),
    Column("institution", String),
    Column("detail", Text, nullable=False),  # JSON: the filters, what was done
)
ACTIONS = ("replay", "reprocess", "pause", "resume", "forget")


@dataclass(frozen=True)
class Actor:
    """Who acts: a name, and through what (``cli``, ``console``)."""

    name: str
    via: str = "cli"

    @classmethod
    def of_this_process(cls) -> Actor:
        """The CLI's: the operating system's user it runs as."""
        try:
            return cls(getpass.getuser())
        except (KeyError, OSError):  # a uid without a name (a container's)
            return cls(f"uid {os.getuid()}")


def record(conn, actor: Actor, action: str, institution: str | None, detail: dict,
           now: float | None = None) -> None:
    """Add one action to the trail, in the connection's transaction."""
    conn.execute(insert(AUDIT).values(
        at=time.time() if now is None else now, actor=actor.name, via=actor.via, action=action,
        institution=institution, detail=orjson.dumps(detail, option=orjson.OPT_SORT_KEYS)
        .decode()))


def entries(bridge, institution: str | None = None, action: str | None = None,
            since: float | None = None, limit: int = 100) -> list[dict]:
    """The latest actions first, those matching the filters."""
    query = select(AUDIT).order_by(AUDIT.c.id.desc()).limit(limit)
    if institution:
        query = query.where(AUDIT.c.institution == institution)
    if action:
        query = query.where(AUDIT.c.action == action)
    if since is not None:
        query = query.where(AUDIT.c.at >= since)
    with bridge.engine.connect() as conn:
        return [dict(r._mapping, detail=orjson.loads(r.detail)) for r in conn.execute(query)]
