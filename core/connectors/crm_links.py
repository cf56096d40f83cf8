"""What the bridge knows the CRM holds for each contact: the loop breaker between both sides.

One row per (institution, contact number): the CRM's id for the contact and the contact's fields
as the CRM holds them, to the bridge's knowledge (its "view"). A push to the CRM that would write
what the CRM already holds is an echo and is skipped; a CRM change that only repeats what the
view holds is an echo of the bridge's own write and is not sent to S-360.
"""

from __future__ import annotations

import time

import orjson
from sqlalchemy import (
    Column,
    Float,
    Index,
    MetaData,
    String,
    Table,
    Text,
    delete,
    func,
    select,
)

from s360bridge.core.storage.db import write
from s360bridge.core.storage.tables import dialect_insert

METADATA = MetaData()  # the table is made by core/storage/migrations (branch ``crm``): change both
LINKS = Table(
    "crm_link", METADATA,
    Column("institution", String(40), primary_key=True),
    Column("contact_number", String(20), primary_key=True),
    Column("crm_id", String(100)),
    Column("view", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_crm_link_crm_id", "institution", "crm_id"),
)


def holds(view: dict | None, fields: dict) -> bool:
    """True when the view already has every one of ``fields`` with the same value."""
    return view is not None and all(k in view and view[k] == v for k, v in fields.items())


def views(engine, institution: str, numbers: list[str]) -> dict[str, dict]:
    with engine.connect() as conn:
        rows = conn.execute(select(LINKS.c.contact_number, LINKS.c.view).where(
            LINKS.c.institution == institution, LINKS.c.contact_number.in_(numbers)))
        return {n: orjson.loads(v) for n, v in rows}


def find(engine, institution: str, crm_id: str | None, number: str | None):
    """(contact number, view) of a contact, by CRM id first, then by contact number."""
    c = LINKS.c
    with engine.connect() as conn:
        for cond in ([c.crm_id == crm_id] if crm_id else []) + \
                    ([c.contact_number == number] if number else []):
            row = conn.execute(select(c.contact_number, c.view)
                               .where(c.institution == institution, cond)).first()
            if row:
                return row.contact_number, orjson.loads(row.view)
    return None


def remember(engine, institution: str, rows: list[tuple[str, str | None, dict]],
             merge: bool = False) -> None:
    """Store (contact number, crm id or None, fields) as what the CRM now holds; with
    ``merge`` the fields are laid over the view already known."""
    if not rows:
        return
    now = time.time()
    with write(engine) as conn:
        known = {}
        if merge:
            known = {n: orjson.loads(v) for n, v in conn.execute(
                select(LINKS.c.contact_number, LINKS.c.view).where(
                    LINKS.c.institution == institution,
                    LINKS.c.contact_number.in_([r[0] for r in rows])))}
        values = [{"institution": institution, "contact_number": number, "crm_id": crm_id,
                   "view": orjson.dumps({**known.get(number, {}), **fields}).decode(),
                   "updated_at": now} for number, crm_id, fields in rows]
        ins = dialect_insert(conn, LINKS)
        conn.execute(ins.on_conflict_do_update(
            index_elements=[LINKS.c.institution, LINKS.c.contact_number],
            set_={"view": ins.excluded.view, "updated_at": ins.excluded.updated_at,
                  "crm_id": func.coalesce(ins.excluded.crm_id, LINKS.c.crm_id)}), values)


def crm_id(engine, institution: str, number: str) -> str | None:
    """The CRM's id of a contact, if one is known."""
    with engine.connect() as conn:
        return conn.execute(select(LINKS.c.crm_id).where(
            LINKS.c.institution == institution, LINKS.c.contact_number == number)).scalar()


def forget(engine, institution: str, number: str) -> str | None:
    """Remove a contact's link; answer its CRM id, if one was known."""
    where = (LINKS.c.institution == institution, LINKS.c.contact_number == number)
    with write(engine) as conn:
        known = conn.execute(select(LINKS.c.crm_id).where(*where)).scalar()
        conn.execute(delete(LINKS).where(*where))
    return known
