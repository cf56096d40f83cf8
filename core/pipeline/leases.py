"""Leases on the rows of a plugin's table: one process works on a row at a time.

The table has a one-column primary key and the columns ``lease_owner`` (String) and
``lease_until`` (Float, a Unix time). A lease is taken for some seconds, renewed by its owner
while it works, and released when it is done; a process that dies leaves a lease that ends by
itself, after which another process may take the row (``unheld`` finds such rows).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Table, or_, update

from s360bridge.core.storage.db import write


def _id(table: Table):
    (column,) = table.primary_key.columns
    return column


def take(engine, table: Table, row_id, owner: str, seconds: float) -> bool:
    """Take (or renew) the lease of one row for ``seconds``, unless another owner holds it."""
    now = time.time()
    with write(engine) as conn:
        return conn.execute(update(table).where(
            _id(table) == row_id,
            or_(unheld(table, now), table.c.lease_owner == owner))
            .values(lease_owner=owner, lease_until=now + seconds)).rowcount == 1


def release(engine, table: Table, row_id, owner: str) -> None:
    """End ``owner``'s lease of the row at once (nothing happens if another owner holds it)."""
    with write(engine) as conn:
        conn.execute(update(table).where(_id(table) == row_id, table.c.lease_owner == owner)
                     .values(lease_owner=None, lease_until=time.time()))


def unheld(table: Table, now: float | None = None):
    """The condition of rows nobody holds: never leased, released, or whose lease ended."""
    now = time.time() if now is None else now
    return or_(table.c.lease_until.is_(None), table.c.lease_until < now)


@contextmanager
def holding(engine, table: Table, row_id, seconds: float) -> Iterator[bool]:
    """Hold the row's lease for the block, renewed in the background (a call may outlast
    ``seconds``), released at its end. Yields False, holding nothing, when another process
    holds the row."""
    owner = uuid.uuid4().hex
    if not take(engine, table, row_id, owner, seconds):
        yield False
        return
    done = threading.Event()

    def keep() -> None:
        while not done.wait(seconds / 3):
            take(engine, table, row_id, owner, seconds)

    keeper = threading.Thread(target=keep, daemon=True, name=f"{table.name}-{row_id}-lease")
    keeper.start()
    try:
        yield True
    finally:
        done.set()
        keeper.join()
        release(engine, table, row_id, owner)
