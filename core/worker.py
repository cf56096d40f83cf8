"""The worker: claim pending records, transform and push them to every target of their stream."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from contextlib import contextmanager

from .bridge import Bridge
from .errors import StoreUnavailable, TargetUnavailable
from .queue import Claim, Outcome, claim, complete, extend, release
from .streams import StoredRecord

log = logging.getLogger("s360bridge.worker")


class Worker:
    """Delivers inbox records in batches; several workers may share one database."""

    def __init__(self, bridge: Bridge, clock=time.time):
        self.bridge = bridge
        self.cfg = bridge.settings.engine
        self.clock = clock

    def run_once(self, stop: threading.Event | None = None) -> int:
        """Claim and process one batch; answer how many records it held."""
        c = claim(self.bridge.engine, list(self.bridge.settings.institutions),
                  self.cfg.batch_size, self.cfg.lease_seconds, self.clock())
        if not c.records:
            return 0
        groups: dict[tuple[str, str], list] = defaultdict(list)
        for inst_code, stream_name, record, attempts in c.records:
            groups[(inst_code, stream_name)].append((record, attempts))
        outcomes: list[Outcome] = []
        unprocessed: list[int] = []
        with self._lease_kept(c.token, [r.seq for _, _, r, _ in c.records]):
            for (inst_code, stream_name), items in groups.items():
                if stop is not None and stop.is_set():
                    unprocessed += [r.seq for r, _ in items]
                    continue
                outcomes += self._deliver_group(c, inst_code, stream_name, items)
        complete(self.bridge.engine, c.token, outcomes, self.cfg.max_attempts,
                 self.cfg.backoff_base_seconds, self.cfg.backoff_max_seconds, self.clock())
        release(self.bridge.engine, c.token, unprocessed)
        log.debug("handled %d record(s), released %d", len(outcomes), len(unprocessed))
        return len(c.records)

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

    def _deliver_group(self, c: Claim, inst_code: str, stream_name: str, items) -> list[Outcome]:
        inst = self.bridge.institution(inst_code)
        stream = self.bridge.stream(stream_name)
        if stream is None or stream_name not in inst.streams:
            why = f"stream {stream_name} is no longer configured for {inst_code}"
            return [Outcome(r.seq, a, {"(config)": why}) for r, a in items]
        results: dict[int, dict[str, str | None]] = {r.seq: {} for r, _ in items}
        retry_after: dict[int, float] = {}
        for name in inst.streams[stream_name].targets:
            todo = [r for r, _ in items if name not in c.done_targets.get(r.seq, ())]
            if not todo:
                continue
            target = self.bridge.target(inst, name)
            failed = []
            size = target.batch_size or len(todo)
            pushed: dict = {}
            for i in range(0, len(todo), size):
                pushed |= self._push(inst, stream, target, todo[i:i + size])
            for seq, (error, wait) in pushed.items():
                results[seq][name] = error
                retry_after[seq] = max(retry_after.get(seq, 0.0), wait)
                if error:
                    failed.append((seq, error))
            if failed:  # one line per target and batch, even when a whole target is down
                key = next(r.key for r in todo if r.seq == failed[0][0])
                log.warning("%s/%s -> %s: %d of %d record(s) failed, will retry; first (key %s):"
                            " %s", inst_code, stream_name, name, len(failed), len(todo), key,
                            failed[0][1])
        return [Outcome(r.seq, a, results[r.seq], retry_after.get(r.seq, 0.0),
                        r.seq in c.tracked) for r, a in items]

    def _push(self, inst, stream, target, records: list[StoredRecord]) -> dict:
        """Push a batch; on an unexpected error split it in halves to isolate the bad record.
        Answers seq -> (error or None, seconds to wait before a retry)."""
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
        return {r.seq: (result.failed.get(i), 0.0) for i, r in enumerate(records)}

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
