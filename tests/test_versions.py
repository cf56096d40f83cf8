"""Version order beyond arrival: an order S-360 closed (or abandoned) never goes back to a
non-final version in any target, whatever the arrival order; the late version is kept as
superseded, also once the final one is purged. Counted push by push in the journal target."""

from __future__ import annotations

import time

from sqlalchemy import select

from s360bridge.core.operations.retention import purge
from s360bridge.core.pipeline.claims import claim
from s360bridge.core.pipeline.worker import Worker
from s360bridge.core.storage.tables import STATES

from .conftest import drain, post
from .helpers.records import sale_version

KEY = "10000815533"


def version(amount: int, state: str = "CLOSED") -> dict:
    order = sale_version(amount)
    order["orderDetailsData"]["orderState"] = state
    return order


def states(bridge) -> list[tuple[int, str]]:
    """(sale amount, state) of each version of the order, in arrival order."""
    with bridge.engine.connect() as conn:
        return [(_amount(payload), state) for payload, state in conn.execute(
            select(STATES.c.payload, STATES.c.state).where(STATES.c.record_key == KEY)
            .order_by(STATES.c.id))]


def _amount(payload: str) -> int:
    return int(payload.split('"saleAmount":')[1].split(",")[0])


def amounts(journal) -> list[int]:
    return [line["record"]["orderDetailsData"]["saleAmount"] for line in journal.lines()
            if line["key"] == KEY]


def warehouse_amount(bridge) -> int:
    target = bridge.target(bridge.institution("testvenue"), "datx")
    with target.engine.connect() as conn:
        return conn.exec_driver_sql(
            f"SELECT sale_amount FROM orders WHERE order_id = {KEY}").scalar_one()


def test_a_late_non_final_version_never_replaces_the_closed_one(bridge, client, journal):
    post(client, "orders", version(1000))
    drain(bridge)
    post(client, "orders", version(500, "IN_PROGRESS"))  # older in S-360, later here
    drain(bridge)
    assert amounts(journal) == [1000]
    assert warehouse_amount(bridge) == 1000
    assert states(bridge) == [(1000, "done"), (500, "superseded")]


def test_in_one_batch_the_final_version_wins_whatever_the_order(bridge, client, journal):
    post(client, "orders", [version(1000), version(500, "IN_PROGRESS")])
    drain(bridge)
    assert amounts(journal) == [1000]
    assert states(bridge) == [(1000, "done"), (500, "superseded")]


def test_of_two_final_versions_the_later_one_wins(bridge, client, journal):
    post(client, "orders", [version(500, "IN_PROGRESS"), version(1000), version(2000)])
    drain(bridge)
    assert amounts(journal) == [2000]


def test_the_final_mark_survives_the_retention_purge(bridge, client, journal):
    post(client, "orders", version(1000))
    drain(bridge)
    later = time.time() + bridge.settings.engine.retention_hours * 3600 + 60
    assert purge(bridge, now=later) == 1
    assert states(bridge) == []
    post(client, "orders", version(500, "ABANDONED_BEFORE"))  # not a final state
    drain(bridge)
    assert amounts(journal) == [1000]
    assert states(bridge) == [(500, "superseded")]


def test_a_version_after_a_purge_that_emptied_the_inbox_is_newer_everywhere(bridge, client,
                                                                          journal):
    """The purge deletes every version, the newest too; the next one gets a number never given
    (the warehouse would refuse a smaller one as older, and a reused one would repeat an
    idempotency key)."""
    post(client, "orders", version(1000))
    drain(bridge)
    later = time.time() + bridge.settings.engine.retention_hours * 3600 + 60
    assert purge(bridge, now=later) == 1
    post(client, "orders", version(2000))
    drain(bridge)
    assert amounts(journal) == [1000, 2000]
    first, second = (line["idempotency_key"] for line in journal.lines())
    assert first != second
    assert warehouse_amount(bridge) == 2000


def test_a_final_version_waiting_for_its_retry_outranks_a_later_one(bridge, client, journal):
    """The closed version is claimed and fails; the later, non-final one is superseded when
    claimed, and the closed one is what the retry delivers."""
    post(client, "orders", version(1000))
    first = claim(bridge.engine, ["testvenue"], 10, 60)  # in hand elsewhere, then its lease ends
    assert first.seqs
    post(client, "orders", version(500, "IN_PROGRESS"))
    drain(bridge)
    assert amounts(journal) == []  # the closed one is leased; the later one lost to it
    assert states(bridge) == [(1000, "pending"), (500, "superseded")]
    with bridge.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE queue SET lease_owner = NULL, lease_until = NULL")
    Worker(bridge).run_once()
    assert amounts(journal) == [1000]
