"""A worker whose push outlasted its lease completes after the worker that took its batch over:
its outcome is not recorded over the other's (the delivery rows, the record's attempts and its
place in the queue stay the other's); its attempt is kept in the history."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

from s360bridge.core.pipeline import attempts as history
from s360bridge.core.pipeline.claims import claim
from s360bridge.core.pipeline.ingest import ingest
from s360bridge.core.pipeline.pushes import Failure
from s360bridge.core.pipeline.queue import Outcome, complete
from s360bridge.core.storage.tables import ATTEMPT

from .helpers.processes import checks

FAILED = {"datx": "HTTP 503"}


def taken_over(bridge, checked: int = 1):
    """Checks claimed at 0 (the lease ends at 60), then the first of them by another worker at
    100."""
    ingest(bridge, bridge.institution("testvenue"), bridge.stream("ticketchecks"),
           checks(81_000_000_000, checked))
    late = claim(bridge.engine, ["testvenue"], 10, 60, now=0)
    other = claim(bridge.engine, ["testvenue"], 1, 60, now=100)
    assert late.seqs[:1] == other.seqs
    return late, other, late.seqs[0]


def recorded(bridge, seq: int) -> tuple:
    """The record's delivery rows, its state, attempts and retry time, and the attempts in the
    history (of every record)."""
    with bridge.engine.connect() as conn:
        rows = conn.execute(text("SELECT target, state, attempts FROM delivery "
                                 "WHERE inbox_id = :s"), {"s": seq}).all()
        state = conn.execute(text("SELECT state, attempts, next_attempt_at FROM inbox_state "
                                  "WHERE id = :s"), {"s": seq}).one()
        tries = conn.execute(select(func.count()).select_from(ATTEMPT)).scalar()
    return [tuple(r) for r in rows], tuple(state), tries


def attempt(seq: int, at: float, error: str | None) -> list[history.Group]:
    return history.pushed("datx", at, [seq], error and {seq: Failure(error)})


@pytest.mark.parametrize("first", ["delivered", "failed"])
def test_a_late_failure_does_not_overwrite_the_outcome_of_the_worker_that_took_over(
        any_bridge, first):
    late, other, seq = taken_over(any_bridge)
    if first == "delivered":
        complete(any_bridge.engine, other.token, [seq], [], 3, 60, 600, now=200,
                 attempts=attempt(seq, 200, None))
        expected = ([], ("done", 0, None), 2)
    else:
        complete(any_bridge.engine, other.token, [], [Outcome(seq, 0, FAILED)], 3, 60, 600,
                 now=200, attempts=attempt(seq, 200, "HTTP 503"))
        rows, state, _ = recorded(any_bridge, seq)
        expected = (rows, state, 2)
        assert rows == [("datx", "failed", 1)] and state[:2] == ("pending", 1)
    complete(any_bridge.engine, late.token, [], [Outcome(seq, 0, FAILED)], 3, 60, 600,
             now=300, attempts=attempt(seq, 300, "HTTP 503"))
    assert recorded(any_bridge, seq) == expected


def test_the_records_a_late_completion_still_holds_get_their_outcome(any_bridge):
    """Of a batch of two, the other worker took the first over: the late completion records
    the second's failure and retry, and leaves the first alone."""
    late, _, first = taken_over(any_bridge, 2)
    second = late.seqs[1]
    complete(any_bridge.engine, late.token, [], [Outcome(s, 0, FAILED) for s in late.seqs],
             3, 60, 600, now=300)
    assert recorded(any_bridge, first)[:2] == ([], ("pending", 0, 0.0))
    rows, (state, tries, retry), _ = recorded(any_bridge, second)
    assert rows == [("datx", "failed", 1)] and (state, tries) == ("pending", 1) and retry > 300
