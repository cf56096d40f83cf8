"""Leases on the rows of a plugin's table: one process works on a row at a time.

The table has a one-column primary key and the columns ``lease_owner`` (String) and
``lease_until`` (Float, a Unix time). A lease is taken for some seconds, renewed by its owner
while it works, and released when it is done; a process that dies leaves a lease that ends by
itself, after which another process may take the row (``unheld`` finds such rows).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Table, or_, update

from s360bridge.core.storage.db import write

log = logging.getLogger("s360bridge.leases")


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


class Held:
    """A lease held for a block: true while this process may go on working on the row; false
    once a renewal found it taken over, or once it ended without a renewal (the database
    unreachable meanwhile): another process may be working on the row by then."""

    def __init__(self, until: float):
        self.until = until
        self.lost = False

    def __bool__(self) -> bool:
        return not self.lost and time.time() < self.until


@contextmanager
def holding(engine, table: Table, row_id, seconds: float) -> Iterator[Held | bool]:
    """Hold the row's lease for the block, renewed in the background (a call may outlast
    ``seconds``), released at its end. Yields a ``Held`` that turns false when the lease is
    lost; yields False, holding nothing, when another process holds the row."""
    owner = uuid.uuid4().hex
    start = time.time()
    if not take(engine, table, row_id, owner, seconds):
        yield False
        return
    held, done = Held(start + seconds), threading.Event()

    def keep() -> None:
        while not done.wait(seconds / 3):
            now = time.time()
            try:
                if not take(engine, table, row_id, owner, seconds):
                    held.lost = True
                    log.error("%s %s: the lease was taken over by another process: this one "
                              "stops working on it", table.name, row_id)
                    return
                held.until = now + seconds
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                log.warning("%s %s: the lease could not be renewed (it ends in %.1f s): %s",
                            table.name, row_id, held.until - time.time(), exc)

    keeper = threading.Thread(target=keep, daemon=True, name=f"{table.name}-{row_id}-lease")
    keeper.start()
    try:
        yield held
    finally:
        done.set()
        keeper.join()
        release(engine, table, row_id, owner)
