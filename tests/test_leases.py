"""The core's leases on the rows of a plugin's table, on SQLite and PostgreSQL."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    select,
    update,
)

from s360bridge.core.pipeline import leases
from s360bridge.core.storage.db import make_engine, write

from .helpers.postgres import schemas
from .helpers.processes import wait_until

LEASED = Table("leased", MetaData(), Column("id", Integer, primary_key=True),
               Column("lease_owner", String(40)), Column("lease_until", Float))


@pytest.fixture(params=["sqlite", "postgresql"])
def rows(request, tmp_path):
    with (nullcontext(None) if request.param == "sqlite" else schemas()) as made:
        engine = make_engine(made.new("leases") if made else f"sqlite:///{tmp_path}/leases.db")
        LEASED.metadata.create_all(engine)
        with write(engine) as conn:
            conn.execute(LEASED.insert(), [{"id": 1}, {"id": 2}])
        yield engine
        engine.dispose()


def unheld(engine) -> list[int]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(select(LEASED.c.id).where(leases.unheld(LEASED))
                                           .order_by(LEASED.c.id))]


def test_a_lease_has_one_owner_until_released_or_ended(rows):
    assert leases.take(rows, LEASED, 1, "a", 60)
    assert not leases.take(rows, LEASED, 1, "b", 60)  # held by another owner
    assert leases.take(rows, LEASED, 1, "a", 60)  # its owner renews it
    assert unheld(rows) == [2]
    leases.release(rows, LEASED, 1, "b")  # not b's to release
    assert not leases.take(rows, LEASED, 1, "b", 60)
    leases.release(rows, LEASED, 1, "a")
    assert unheld(rows) == [1, 2]
    assert leases.take(rows, LEASED, 1, "b", 60)
    with write(rows) as conn:  # b dies: its lease ends by itself
        conn.execute(update(LEASED).values(lease_until=0.0))
    assert unheld(rows) == [1, 2]
    assert leases.take(rows, LEASED, 1, "a", 60)


def test_holding_a_lease_for_a_block(rows):
    with leases.holding(rows, LEASED, 1, 60) as held:
        assert held and unheld(rows) == [2]
        with leases.holding(rows, LEASED, 1, 60) as again:
            assert not again  # another holder
        assert unheld(rows) == [2]  # the refused one released nothing
    assert unheld(rows) == [1, 2]


def test_a_lease_taken_over_or_not_renewed_turns_false(rows, monkeypatch):
    """A holder whose lease another process took over (after it ended unrenewed: the
    database was unreachable, the process stalled) stops: ``held`` turns false."""
    with leases.holding(rows, LEASED, 1, 0.3) as held:
        assert held
        with write(rows) as conn:  # the lease ended, and another process took the row
            conn.execute(update(LEASED).where(LEASED.c.id == 1).values(
                lease_owner="other", lease_until=1e12))
        wait_until(lambda: not held, 5, "the keeper to find the lease taken over")
        assert held.lost
    assert unheld(rows) == [2]  # the other's lease is left alone
    failing = [0]

    def unreachable(*args):
        failing[0] += 1
        raise OSError("the database is unreachable")
    with leases.holding(rows, LEASED, 2, 0.3) as held:
        monkeypatch.setattr(leases, "take", unreachable)
        wait_until(lambda: failing[0] >= 1, 5, "a renewal to fail")
        assert not held.lost  # still held until its time is up ...
        wait_until(lambda: not held, 5, "the unrenewed lease to end")  # ... then not
        assert failing[0] >= 2  # the keeper kept trying
