"""The worker: claim pending records, transform and push them to every target of their stream
that is not paused, and keep each attempt in the history."""

from __future__ import annotations

import logging
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from sqlalchemy.exc import DBAPIError, OperationalError

from s360bridge.core import logs
from s360bridge.core.bridge import Bridge
from s360bridge.core.errors import StoreUnavailable
from s360bridge.core.instruments import Tally
from s360bridge.core.pipeline import attempts as history
from s360bridge.core.pipeline import pushes
from s360bridge.core.pipeline.batch_lease import Kept, LeaseLost, kept
from s360bridge.core.pipeline.claims import Claim, claim
from s360bridge.core.pipeline.pushes import Failure
from s360bridge.core.pipeline.queue import (
    TIDY_EVERY,
    Outcome,
    complete,
    record_progress,
    release,
    tidy,
)
from s360bridge.core.plugin.streams import StoredRecord

log = logging.getLogger("s360bridge.worker")
COMPLETION_RETRY = 30.0  # seconds, at most half a lease


class Worker:
    """Delivers inbox records in batches; several workers may share one database."""

    def __init__(self, bridge: Bridge, clock=time.time):
        self.bridge = bridge
        self.cfg = bridge.settings.engine
        self.clock = clock
        self._next: Future | None = None  # the next batch, claimed while this one is delivered
        self._completed: Future | None = None  # the batch before, completed meanwhile
        self._background: ThreadPoolExecutor | None = None  # runs both, in that order
        # On SQLite the claim runs in this process and takes the write lock the completion
        # needs: claiming ahead made a drain slower there (17,400 records/s against 26,300)
        self.ahead = bridge.engine.dialect.name != "sqlite"
        self._since_tidy = 0.0  # records completed since the queue was last vacuumed
        self.batch_size = self.cfg.claim_size(bridge.engine.dialect.name)

    def _claim(self, in_hand: Claim | None = None) -> tuple[Claim, float, float]:
        """A claim, how long it took (ms), and when it was made (the lease's clock)."""
        started, at = time.perf_counter(), self.clock()
        c = claim(self.bridge.engine, list(self.bridge.settings.institutions),
                  self.batch_size, self.cfg.lease_seconds, at, in_hand, self._ranker)
        return c, (time.perf_counter() - started) * 1000, at

    def _ranker(self, inst_code: str, stream_name: str):
        """How the versions of a stream rank, for one institution (None: arrival order)."""
        inst, stream = self.bridge.institution(inst_code), self.bridge.stream(stream_name)
        if inst is None or stream is None or stream.rank is None:
            return None
        return lambda record: stream.rank(inst, record)

    def _claimed_ahead(self) -> tuple[Claim, float, float] | None:
        """The batch claimed ahead; None (given back) when half its lease has gone by while
        the previous batch was delivered: only a lease renewed in time keeps other workers
        off it. A claim that failed raises here, once: the next round claims afresh."""
        future, self._next = self._next, None
        c, ms, at = future.result()
        if self.clock() - at <= self.cfg.lease_seconds / 2:
            return c, ms, at
        release(self.bridge.engine, c.token, c.seqs)
        return None

    def run_once(self, stop: threading.Event | None = None, ahead: bool = False) -> int:
        """Claim and process one batch; answer how many records it held. With ``ahead``, a
        full batch has the next one claimed in the background while it is delivered, and is
        completed in the background while the next one is: the database's work overlaps this
        process's (``run`` does this where ``self.ahead``, on PostgreSQL; ``settle`` waits for
        the completion, ``finish`` also gives back a batch claimed ahead)."""
        taken = self._claimed_ahead() if self._next is not None else None
        c, claimed_ms, claimed_at = taken or self._claim()
        if not c.groups:
            self.settle()
            return 0
        if ahead and len(c) >= self.batch_size and not (stop is not None and stop.is_set()):
            if self._background is None:
                self._background = ThreadPoolExecutor(1, thread_name_prefix="worker-db")
            self._next = self._background.submit(self._claim, c)
        delivered: list[int] = []
        outcomes: list[Outcome] = []
        tried: list[history.Group] = []  # the attempts, for the history
        unprocessed: list[int] = []
        tally = Tally()
        pushes_left = [self._pushes(c)]  # the last push of a claim needs no progress record
        lost = None
        with kept(self.bridge.engine, c.token, c.seqs, self.cfg.lease_seconds, claimed_at,
                  self.clock) as lease:
            for (inst_code, stream_name), records in c.groups.items():
                if lost or (stop is not None and stop.is_set()):
                    unprocessed += [r.seq for r in records]
                    continue
                try:
                    with logs.context(institution=inst_code, stream=stream_name):
                        self._deliver_group(c, inst_code, stream_name, records, delivered,
                                            outcomes, pushes_left, tally, tried, lease)
                except LeaseLost as exc:  # its records go to whoever takes them over
                    lost = exc
                    unprocessed += [r.seq for r in records]
        if lost:
            log.warning("%s: %d record(s) of the batch left undelivered here", lost,
                        len(unprocessed))
        done = (self.bridge.engine, c.token, delivered, outcomes, self.cfg.max_attempts,
                self.cfg.backoff_base_seconds, self.cfg.backoff_max_seconds, self.clock(),
                tried)
        try:
            self.settle()
        except Exception as exc:  # this batch is completed all the same
            log.error("could not complete the batch before (its records go out again when "
                      "their lease ends): %s", exc, exc_info=not isinstance(exc, StoreUnavailable))
        try:
            if ahead and self._background is not None:
                self._completed = self._background.submit(self._complete, done, tally)
            else:
                self._complete(done, tally)
        finally:
            release(self.bridge.engine, c.token, unprocessed)
        log.debug("claimed %d record(s) in %.2f ms; handled %d, released %d", len(c),
                  claimed_ms, len(delivered) + len(outcomes), len(unprocessed))
        return len(c)

    def _pushes(self, c: Claim) -> int:
        """How many pushes the claim needs (one per target and batch of it)."""
        n = 0
        for (inst_code, stream_name), records in c.groups.items():
            inst = self.bridge.institution(inst_code)
            cfg = inst.streams.get(stream_name) if inst else None
            for name in cfg.targets if cfg else ():
                if (inst_code, name) in c.paused:
                    continue
                todo = sum(name not in c.done_targets.get(r.seq, ()) for r in records) \
                    if c.done_targets else len(records)
                size = self.bridge.target(inst, name).batch_size or todo or 1
                n += -(-todo // size)
        return n

    def _deliver_group(self, c: Claim, inst_code: str, stream_name: str,
                       records: list[StoredRecord], delivered: list[int],
                       outcomes: list[Outcome], pushes_left: list[int], tally: Tally,
                       tried: list[history.Group], lease: Kept) -> None:
        """Push the records to every target of their stream that is not paused, adding each
        attempt to ``tried``. A record delivered everywhere goes to ``delivered``; one that
        failed somewhere, was held for a paused target, or has delivery rows, gets an Outcome
        with the result per target. ``tally`` counts what each push did. Before each push,
        ``lease`` raises LeaseLost if the claim may be another worker's by its end."""
        inst = self.bridge.institution(inst_code)
        stream = self.bridge.stream(stream_name)
        if stream is None or stream_name not in inst.streams:
            why = f"stream {stream_name} is no longer configured for {inst_code}"
            outcomes += [Outcome(r.seq, c.attempts.get(r.seq, 0), {"(config)": why})
                         for r in records]
            seqs = [r.seq for r in records]
            tried += history.pushed("(config)", self.clock(), seqs,
                                    dict.fromkeys(seqs, Failure(why)))
            for r in records:
                tally.failed(inst_code, stream_name, (),
                             c.attempts.get(r.seq, 0) + 1 >= self.cfg.max_attempts)
            return
        paused = [t for t in inst.streams[stream_name].targets if (inst_code, t) in c.paused]
        targets = [t for t in inst.streams[stream_name].targets if t not in paused]
        failures: dict[int, dict[str, Failure]] = {}  # seq -> target -> failure
        progressed: set[int] = set()
        for name in targets:
            todo = [r for r in records if name not in c.done_targets.get(r.seq, ())] \
                if c.done_targets else records
            if not todo:
                continue
            target = self.bridge.target(inst, name)
            size = target.batch_size or len(todo)
            failed: dict[int, Failure] = {}
            for i in range(0, len(todo), size):
                chunk = todo[i:i + size]
                lease.check()
                chunk_failed = pushes.push(self.bridge.hooks, inst, stream, target, chunk)
                at = self.clock()
                failed |= chunk_failed
                pushes_left[0] -= 1
                if target.records_progress and pushes_left[0] > 0:  # a crash now repeats none
                    took = [r.seq for r in chunk if r.seq not in chunk_failed]
                    record_progress(self.bridge.engine, name, took, at,
                                    history.pushed(name, at, took))
                    progressed.update(took)
                    tried += history.pushed(name, at, list(chunk_failed), chunk_failed)
                else:
                    tried += history.pushed(name, at, [r.seq for r in chunk], chunk_failed)
            for seq, failure in failed.items():
                failures.setdefault(seq, {})[name] = failure
            tally.delivered(inst_code, stream_name, name,
                            [r for r in todo if r.seq not in failed])
            if failed:  # one line per target and batch, even when a whole target is down
                seq, failure = next(iter(failed.items()))
                key = next(r.key for r in todo if r.seq == seq)
                rejected = sum(f.rejected for f in failed.values())
                log.warning("%s/%s -> %s: %d of %d record(s) failed (%d rejected, the others "
                            "will retry); first (key %s): %s", inst_code, stream_name, name,
                            len(failed), len(todo), rejected, key, failure.error,
                            extra={"target": name, "key": key})
        for r in records:
            held = frozenset(t for t in paused if t not in c.done_targets.get(r.seq, ())) \
                if paused else frozenset()
            # a progress row says "done" already: a record delivered everywhere needs no more
            tracked = r.seq in c.tracked or (r.seq in progressed and r.seq in failures)
            if r.seq not in failures and not tracked and not held:
                delivered.append(r.seq)
                continue
            done_before = c.done_targets.get(r.seq, ())
            results: dict[str, str | None] = {t: None for t in targets if t not in done_before}
            mine = failures.get(r.seq, {})
            results.update({t: f.error for t, f in mine.items()})
            if mine:  # as ``complete`` decides: rejected, or out of attempts
                tally.failed(inst_code, stream_name, mine, any(f.rejected for f in mine.values())
                             or c.attempts.get(r.seq, 0) + 1 >= self.cfg.max_attempts)
            outcomes.append(Outcome(r.seq, c.attempts.get(r.seq, 0), results,
                                    max((f.wait for f in mine.values()), default=0.0), tracked,
                                    any(f.rejected for f in mine.values()), inst_code, held))

    def _complete(self, done: tuple, tally: Tally) -> None:
        """Complete a batch, count it, and vacuum the queue every TIDY_EVERY records."""
        self._complete_once(done)
        tally.count(time.time())
        self._since_tidy += len(done[2]) + len(done[3])
        if self._since_tidy >= TIDY_EVERY:
            self._since_tidy = 0.0
            try:
                tidy(self.bridge.engine)
            except OperationalError as exc:  # the database away or slow: the next time
                log.warning("could not vacuum the queue: %s", exc.orig)
            except DBAPIError as exc:  # e.g. not the table's owner: autovacuum will do
                self._since_tidy = -math.inf
                log.warning("could not vacuum the queue, left to autovacuum: %s", exc.orig)

    def _complete_once(self, done: tuple) -> None:
        """Complete a delivered batch; while the engine database is unavailable, try again
        for up to half a lease (its records would be delivered again once their lease ends,
        as after a crash). A completion whose commit went through but whose answer was lost
        is not made twice (``complete``'s ``again``)."""
        deadline = time.monotonic() + min(self.cfg.lease_seconds / 2, COMPLETION_RETRY)
        delay, tried = 0.25, False
        while True:
            try:
                complete(*done, again=tried)
                return
            except StoreUnavailable as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("could not complete a batch of %d record(s), trying again: %s",
                            len(done[2]) + len(done[3]), exc)
                time.sleep(delay)
                delay, tried = min(2 * delay, 4.0), True

    def settle(self) -> None:
        """Wait for the completion of the batch before; its error is raised here (its records
        stay leased, and are delivered again once the lease ends, as after a crash)."""
        if self._completed is not None:
            completed, self._completed = self._completed, None
            completed.result()

    def finish(self) -> None:
        """Wait for the background completion, and give back the batch claimed ahead, if any,
        untouched."""
        try:
            self.settle()
        except Exception as exc:
            log.warning("could not complete the last batch: %s", exc)
        try:
            if self._next is not None:
                future, self._next = self._next, None
                if future.exception() is None:  # else it claimed nothing
                    c = future.result()[0]
                    release(self.bridge.engine, c.token, c.seqs)
        except Exception as exc:  # its lease ends by itself
            log.warning("could not give back a batch claimed ahead: %s", exc)
        finally:
            if self._background is not None:
                self._background.shutdown()
                self._background = None

    def run(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set; the batch in hand is finished or released first."""
        log.info("worker started")
        try:
            self._work(stop)
        finally:
            self.finish()
        log.info("worker stopped")

    def _work(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                if self.run_once(stop, self.ahead) == 0:
                    stop.wait(self.cfg.poll_interval_seconds)
            except StoreUnavailable as exc:
                log.error("engine database unavailable, retrying: %s", exc)
                stop.wait(max(1.0, self.cfg.poll_interval_seconds))
            except Exception:  # a bug must not kill the worker: claimed records are leased
                log.exception("worker batch failed; its records are retried when leases end")
                stop.wait(max(1.0, self.cfg.poll_interval_seconds))
