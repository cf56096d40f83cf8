"""A claim's lease kept while its batch is delivered, and the moment it may be lost.

The worker renews the lease of the records in hand every third of its length from the claim
(which may have been made ahead, while the batch before was delivered: then sooner). A
renewal that fails (the engine database away) is tried again within a second; once the lease
has less than a third of its length left, another worker may take the records over before this
one's next push ends, so this one pushes no more of the batch (``check``): the records go to
whoever takes them over, pushed again under the same idempotency keys. A renewal that finds
none of the records still leased to the claim (taken over), or that comes or commits after
the lease ended (some may have been taken over), stops the pushes for good. A push already
under way is not stopped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from s360bridge.core.errors import StoreUnavailable
from s360bridge.core.pipeline.queue import extend

log = logging.getLogger("s360bridge.worker")


class LeaseLost(Exception):
    """The claim's lease ran out or was taken over: push no more of the batch."""


class Kept:
    """What is known of a claim's lease: until when it holds (the claim's clock)."""

    def __init__(self, until: float, seconds: float, clock: Callable[[], float]):
        self.until, self.seconds, self.clock = until, seconds, clock

    def check(self) -> None:
        """Raise LeaseLost unless at least a third of the lease is left."""
        if self.until == LOST:
            raise LeaseLost("the batch's lease was lost (its records taken over, or renewed "
                            "only after it had ended)")
        left = self.until - self.clock()
        if left < self.seconds / 3:
            raise LeaseLost(f"the batch's lease {'ended' if left <= 0 else 'ends'} "
                            f"{abs(left):.1f} s {'ago' if left <= 0 else 'from now'}, "
                            "its renewals having failed")


LOST = -float("inf")
RETRY_SECONDS = 1.0  # a failed renewal is tried again this soon (or at the next third)


@contextmanager
def kept(engine, token: str, seqs: list[int], seconds: float, claimed_at: float,
         clock: Callable[[], float]) -> Iterator[Kept]:
    """Renew the claim's lease every third of its length until the block ends."""
    lease, done = Kept(claimed_at + seconds, seconds, clock), threading.Event()
    # the first renewal a third of a lease after the claim, which may have been made ahead
    wait = max(0.0, claimed_at + seconds / 3 - clock())

    def renew():
        nonlocal wait
        failing = False  # one warning for a run of failed renewals, however many
        while not done.wait(wait):
            at, until = clock(), lease.until
            try:
                if at >= until or (seqs and not extend(engine, token, seqs, seconds, at)) \
                        or clock() >= until:  # ended before the renewal, or while it ran
                    lease.until = LOST  # none is ours any more, or some may not be
                    return
                lease.until, wait = at + seconds, seconds / 3
                if failing:
                    log.info("renewed the lease again")
                failing = False
            except StoreUnavailable as exc:
                wait = min(seconds / 3, RETRY_SECONDS)
                (log.debug if failing else log.warning)(
                    "could not renew a lease (it ends in %.1f s), trying again every %g s: %s",
                    lease.until - clock(), wait, exc)
                failing = True

    keeper = threading.Thread(target=renew, name="lease-keeper", daemon=True)
    keeper.start()
    try:
        yield lease
    finally:
        done.set()
        keeper.join()
