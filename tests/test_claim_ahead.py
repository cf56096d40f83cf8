"""The worker claims its next batch while it delivers a full one, and completes it while it
delivers the next (``run`` does on PostgreSQL; here on SQLite, asked to): the batch claimed
ahead is delivered next, given back when the worker stops, and given back rather than
delivered when half its lease went by meanwhile."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError, ProgrammingError

from s360bridge.core.errors import StoreUnavailable
from s360bridge.core.pipeline import worker as worker_module
from s360bridge.core.pipeline.claims import claim
from s360bridge.core.pipeline.ingest import ingest
from s360bridge.core.pipeline.queue import Outcome, complete
from s360bridge.core.pipeline.worker import Worker
from s360bridge.core.storage.tables import QUEUE, STATES

from .conftest import Journal, base_config, bridge_of, drain, write_config
from .helpers.clock import Clock
from .helpers.processes import checks

BATCH = 5


@pytest.fixture
def small_batches(tmp_path, secrets_env):
    cfg = base_config(tmp_path)
    cfg["engine"]["batch_size"] = BATCH
    cfg["streams"]["ticketchecks"]["targets"] = ["journal"]
    bridge = bridge_of(write_config(tmp_path, cfg))
    ingest(bridge, bridge.institution("testvenue"), bridge.stream("ticketchecks"),
           checks(70_000_000_000, 4 * BATCH))
    yield bridge, Journal(tmp_path / "journal.jsonl")
    bridge.close()


def queue(bridge) -> tuple[int, int]:
    """Queued records, and how many of them are leased."""
    with bridge.engine.connect() as conn:
        return conn.execute(select(func.count(), func.count(QUEUE.c.lease_owner))).one()


def test_the_next_batch_is_claimed_while_one_is_delivered(small_batches):
    bridge, journal = small_batches
    worker = Worker(bridge)
    assert worker.run_once(ahead=True) == BATCH
    assert len(journal.pushes()) == BATCH
    worker.settle()  # the completion, after the claim ahead: both done
    assert queue(bridge) == (3 * BATCH, BATCH)  # the next batch, leased in the background
    while worker.run_once(ahead=True):
        pass
    assert queue(bridge) == (0, 0)
    assert sorted(journal.pushes().values()) == [1] * 4 * BATCH


def test_a_stopping_worker_gives_back_the_batch_it_claimed_ahead(small_batches):
    bridge, journal = small_batches
    worker, stop = Worker(bridge), threading.Event()
    worker.ahead = True
    original = worker.run_once

    def once_then_stop(*args, **kwargs):
        n = original(*args, **kwargs)
        stop.set()
        return n

    worker.run_once = once_then_stop
    worker.run(stop)
    assert len(journal.pushes()) == BATCH
    assert queue(bridge) == (3 * BATCH, 0)
    assert drain(bridge) == 3 * BATCH
    assert sorted(journal.pushes().values()) == [1] * 4 * BATCH


def test_a_batch_claimed_ahead_too_long_ago_is_given_back_not_delivered(small_batches,
                                                                      monkeypatch):
    """Another worker may hold it once its lease has ended: only the claim made afresh is
    delivered, and every record once."""
    bridge, journal = small_batches
    clock = Clock()
    worker = Worker(bridge, clock)
    given_back = []
    monkeypatch.setattr(worker_module, "release", lambda engine, token, seqs: (
        seqs and given_back.append((token, sorted(seqs)))) or release(engine, token, seqs))
    assert worker.run_once(ahead=True) == BATCH
    ahead = worker._next.result()[0]
    clock.now += worker.cfg.lease_seconds / 2 + 1  # delivering took longer than that
    assert worker.run_once() == BATCH
    assert given_back == [(ahead.token, sorted(ahead.seqs))]
    worker.run_once(), worker.run_once()
    assert queue(bridge) == (0, 0)
    assert sorted(journal.pushes().values()) == [1] * 4 * BATCH


release = worker_module.release


def test_a_version_in_hand_is_superseded_by_a_newer_one_claimed_ahead(small_batches):
    """Were the older version in hand to fail, its retry would overwrite the newer one in the
    targets: the claim ahead takes it out of the queue."""
    bridge, _ = small_batches
    inst, stream = bridge.institution("testvenue"), bridge.stream("ticketchecks")
    in_hand = claim(bridge.engine, ["testvenue"], BATCH, 60)
    older = in_hand.seqs[-1]
    newer = dict(checks(70_000_000_000 + BATCH - 1, 1)[0], result="REFUSED")
    with bridge.engine.begin() as conn:  # the rest of the backlog waits for a retry
        conn.execute(update(QUEUE).where(QUEUE.c.lease_owner.is_(None))
                     .values(next_attempt_at=1e12))
    assert ingest(bridge, inst, stream, [newer]).accepted == 1
    ahead = claim(bridge.engine, ["testvenue"], BATCH, 60, in_hand=in_hand)
    assert [r.record["result"] for records in ahead.groups.values() for r in records] == [
        "REFUSED"]
    complete(bridge.engine, in_hand.token, in_hand.seqs[:-1],
             [Outcome(older, 0, {"journal": "HTTP 503"})], 3, 60, 600)
    with bridge.engine.connect() as conn:
        assert conn.execute(select(STATES.c.state).where(STATES.c.id == older)).scalar_one() \
            == "superseded"


def attempts_recorded(bridge) -> int:
    from s360bridge.core.storage.tables import ATTEMPT

    with bridge.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(ATTEMPT)).scalar()


@pytest.mark.parametrize("committed", [False, True], ids=["refused", "answer-lost"])
def test_a_completion_the_database_failed_is_made_again_once(small_batches, monkeypatch,
                                                              committed):
    """The engine database fails a batch's completion (before its commit, or after it with
    the answer lost): the worker tries again, so the batch leaves the queue now rather than
    being delivered again once its lease ends, and a completion that went through is not
    recorded twice."""
    bridge, journal = small_batches
    calls = []

    def failing_once(*args, again):
        calls.append(len(args[2]))
        if len(calls) == 1:
            if committed:
                complete(*args)
            raise StoreUnavailable("the engine database failed: connection lost")
        complete(*args, again=again)

    monkeypatch.setattr(worker_module, "complete", failing_once)
    assert Worker(bridge).run_once() == BATCH
    assert calls == [BATCH, BATCH]
    assert queue(bridge) == (3 * BATCH, 0)
    assert attempts_recorded(bridge) == BATCH
    assert sorted(journal.pushes().values()) == [1] * BATCH


def test_a_batch_is_completed_even_when_the_one_before_could_not_be(small_batches,
                                                                    monkeypatch):
    """The completion of a batch fails for good (the database stays away longer than the
    worker tries): the next batch, delivered meanwhile, is still completed; only the first
    one's records stay leased, to go out again when their lease ends."""
    bridge, journal = small_batches
    monkeypatch.setattr(worker_module, "COMPLETION_RETRY", 0.3)
    first = []

    def failing_for_the_first(*args, again):
        first.append(first[0] if first else args[1])
        if args[1] == first[0]:
            raise StoreUnavailable("the engine database failed: connection lost")
        complete(*args, again=again)

    monkeypatch.setattr(worker_module, "complete", failing_for_the_first)
    worker = Worker(bridge)
    assert worker.run_once(ahead=True) == BATCH
    assert worker.run_once(ahead=True) == BATCH
    worker.finish()
    assert queue(bridge) == (3 * BATCH, BATCH)  # the first batch, still leased; the second done
    assert sorted(journal.pushes().values()) == [1] * 2 * BATCH


def test_a_claim_ahead_that_failed_is_made_again_once_the_database_is_back(small_batches,
                                                                           monkeypatch):
    """The engine database fails while the batch ahead is claimed: the next round raises it
    (the worker waits and tries again), and the one after claims afresh and delivers; the
    failure is not kept and raised again for ever."""
    bridge, journal = small_batches
    real_claim, calls = worker_module.claim, []

    def failing_once_ahead(*args, **kwargs):
        calls.append(kwargs)
        if len(calls) == 2:  # the first claim made ahead, in the background
            raise StoreUnavailable("the engine database could not commit: connection lost")
        return real_claim(*args, **kwargs)

    monkeypatch.setattr(worker_module, "claim", failing_once_ahead)
    worker = Worker(bridge)
    assert worker.run_once(ahead=True) == BATCH
    with pytest.raises(StoreUnavailable, match="connection lost"):
        worker.run_once(ahead=True)
    while worker.run_once(ahead=True):
        pass
    worker.finish()
    assert queue(bridge) == (0, 0)
    assert sorted(journal.pushes().values()) == [1] * 4 * BATCH


@pytest.mark.parametrize("error, vacuums", [(OperationalError, 4), (ProgrammingError, 1)])
def test_the_queue_vacuum_is_left_to_autovacuum_only_for_a_lasting_error(small_batches,
                                                                         monkeypatch, error,
                                                                         vacuums):
    """The worker vacuums the queue every TIDY_EVERY records. A vacuum cut short (the server
    away, a timeout) is tried again the next time; one refused (not the table's owner) is left
    to autovacuum for good."""
    bridge, _ = small_batches
    monkeypatch.setattr(worker_module, "TIDY_EVERY", BATCH)
    tried = []

    def tidy(engine):
        tried.append(engine)
        if len(tried) == 1:
            raise error("VACUUM (SKIP_LOCKED) queue", None, Exception("the first one fails"))

    monkeypatch.setattr(worker_module, "tidy", tidy)
    worker = Worker(bridge)
    while worker.run_once():
        pass
    assert queue(bridge) == (0, 0)
    assert len(tried) == vacuums


def test_a_stopping_worker_claims_nothing_ahead(small_batches):
    """Stopped before its batch is delivered: it gives the batch back and leases no other."""
    bridge, journal = small_batches
    worker, stop = Worker(bridge), threading.Event()
    stop.set()
    assert worker.run_once(stop, ahead=True) == BATCH
    assert worker._next is None
    worker.finish()
    assert queue(bridge) == (4 * BATCH, 0)
    assert journal.pushes() == {}


def test_finish_after_a_claim_ahead_that_failed_for_any_reason(small_batches, monkeypatch):
    """A claim ahead that failed with an unexpected error: ``finish`` logs it, completes the
    batch delivered, and shuts the background thread down, instead of raising."""
    bridge, journal = small_batches
    real_claim, calls = worker_module.claim, []

    def failing_ahead(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise RuntimeError("a bug in a claim")
        return real_claim(*args, **kwargs)

    monkeypatch.setattr(worker_module, "claim", failing_ahead)
    worker = Worker(bridge)
    assert worker.run_once(ahead=True) == BATCH
    worker.finish()
    assert worker._background is None
    assert queue(bridge) == (3 * BATCH, 0)
    assert sorted(journal.pushes().values()) == [1] * BATCH
