"""The worker: claim pending records, transform and push them to every target of their stream."""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager

from s360bridge.core.bridge import Bridge
from s360bridge.core.errors import StoreUnavailable, TargetUnavailable
from s360bridge.core.pipeline.queue import Claim, Outcome, claim, complete, extend, release
from s360bridge.core.plugin.streams import StoredRecord

log = logging.getLogger("s360bridge.worker")


class Worker:
    """Delivers inbox records in batches; several workers may share one database."""

    def __init__(self, bridge: Bridge, clock=time.time):
        self.bridge = bridge
        self.cfg = bridge.settings.engine
        self.clock = clock

    def run_once(self, stop: threading.Event | None = None) -> int:
        """Claim and process one batch; answer how many records it held."""
        started = time.perf_counter()
        c = claim(self.bridge.engine, list(self.bridge.settings.institutions),
                  self.cfg.batch_size, self.cfg.lease_seconds, self.clock())
        claimed_ms = (time.perf_counter() - started) * 1000
        if not c.groups:
            return 0
        delivered: list[int] = []
        outcomes: list[Outcome] = []
        unprocessed: list[int] = []
        with self._lease_kept(c.token, c.seqs):
            for (inst_code, stream_name), records in c.groups.items():
                if stop is not None and stop.is_set():
                    unprocessed += [r.seq for r in records]
                    continue
                self._deliver_group(c, inst_code, stream_name, records, delivered, outcomes)
        complete(self.bridge.engine, c.token, delivered, outcomes, self.cfg.max_attempts,
                 self.cfg.backoff_base_seconds, self.cfg.backoff_max_seconds, self.clock())
        release(self.bridge.engine, c.token, unprocessed)
        log.debug("claimed %d record(s) in %.2f ms; handled %d, released %d", len(c),
                  claimed_ms, len(delivered) + len(outcomes), len(unprocessed))
        return len(c)

    @contextmanager
    def _lease_kept(self, token: str, seqs: list[int]):
        """Renew the claim's lease every third of its length until the block ends."""
        done = threading.Event()

        def renew():
            while not done.wait(self.cfg.lease_seconds / 3):
                try:
                    extend(self.bridge.engine, token, seqs, self.cfg.lease_seconds,
                           self.clock())
                except StoreUnavailable as exc:
                    log.warning("could not renew a lease: %s", exc)

        keeper = threading.Thread(target=renew, name="lease-keeper", daemon=True)
        keeper.start()
        try:
            yield
        finally:
            done.set()
            keeper.join()

    def _deliver_group(self, c: Claim, inst_code: str, stream_name: str,
                       records: list[StoredRecord], delivered: list[int],
                       outcomes: list[Outcome]) -> None:
        """Push the records to every target of their stream. A record delivered everywhere
        goes to ``delivered``; one that failed somewhere, or that has delivery rows from an
        earlier attempt, gets an Outcome with the result per target."""
        inst = self.bridge.institution(inst_code)
        stream = self.bridge.stream(stream_name)
        if stream is None or stream_name not in inst.streams:
            why = f"stream {stream_name} is no longer configured for {inst_code}"
            outcomes += [Outcome(r.seq, c.attempts.get(r.seq, 0), {"(config)": why})
                         for r in records]
            return
        targets = inst.streams[stream_name].targets
        errors: dict[int, dict[str, str]] = {}  # seq -> target -> error
        retry_after: dict[int, float] = {}
        for name in targets:
            todo = [r for r in records if name not in c.done_targets.get(r.seq, ())] \
                if c.done_targets else records
            if not todo:
                continue
            target = self.bridge.target(inst, name)
            size = target.batch_size or len(todo)
            failed: dict[int, tuple[str, float]] = {}
            for i in range(0, len(todo), size):
                failed |= self._push(inst, stream, target, todo[i:i + size])
            for seq, (error, wait) in failed.items():
                errors.setdefault(seq, {})[name] = error
                retry_after[seq] = max(retry_after.get(seq, 0.0), wait)
            if failed:  # one line per target and batch, even when a whole target is down
                seq, (error, _) = next(iter(failed.items()))
                key = next(r.key for r in todo if r.seq == seq)
                log.warning("%s/%s -> %s: %d of %d record(s) failed, will retry; first (key %s):"
                            " %s", inst_code, stream_name, name, len(failed), len(todo), key,
                            error)
        for r in records:
            if r.seq not in errors and r.seq not in c.tracked:
                delivered.append(r.seq)
                continue
            done_before = c.done_targets.get(r.seq, ())
            results: dict[str, str | None] = {t: None for t in targets if t not in done_before}
            results.update(errors.get(r.seq, {}))
            outcomes.append(Outcome(r.seq, c.attempts.get(r.seq, 0), results,
                                    retry_after.get(r.seq, 0.0), r.seq in c.tracked))

    def _push(self, inst, stream, target, records: list[StoredRecord]) -> dict:
        """Push a batch; on an unexpected error split it in halves to isolate the bad record.
        Answers seq -> (error, seconds to wait before a retry) for the records that failed."""
        hooks = self.bridge.hooks
        try:
            items = hooks.transform(inst, stream, target, records)
            result = hooks.push(inst, stream, target, items)
        except TargetUnavailable as exc:  # the whole target is down: no point in splitting
            return {r.seq: (str(exc), exc.retry_after or 0.0) for r in records}
        except Exception as exc:
            if len(records) == 1:
                return {records[0].seq: (f"{type(exc).__name__}: {exc}", 0.0)}
            half = len(records) // 2
            return (self._push(inst, stream, target, records[:half])
                    | self._push(inst, stream, target, records[half:]))
        return {records[i].seq: (reason, 0.0) for i, reason in result.failed.items()}

    def run(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set; the batch in hand is finished or released first."""
        log.info("worker started")
        while not stop.is_set():
            try:
                if self.run_once(stop) == 0:
                    stop.wait(self.cfg.poll_interval_seconds)
            except StoreUnavailable as exc:
                log.error("engine database unavailable, retrying: %s", exc)
                stop.wait(max(1.0, self.cfg.poll_interval_seconds))
            except Exception:  # a bug must not kill the worker: claimed records are leased
                log.exception("worker batch failed; its records are retried when leases end")
                stop.wait(max(1.0, self.cfg.poll_interval_seconds))
        log.info("worker stopped")
