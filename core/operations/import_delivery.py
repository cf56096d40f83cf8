"""An import's delivery beside its store: a worker process of its own delivers what the import
has stored while the import reads on, so that a large file's two halves of the work share the
machine's cores instead of taking turns (bench/README.md, the initial import).

The process is an ordinary worker (claims with leases, the same completion), so every
guarantee of the webhooks' path holds, and a worker running elsewhere at the same time is no
harm. It stops once the import says that everything is stored and nothing is left due, and as
soon as it finds the import gone (``kill -9``): what it leaves is queued, and delivered by the
next import of the file or by any worker. It collects garbage seldom (``fewer_collections``):
each batch makes a few hundred thousand short-lived objects, which the collector would
otherwise scan over and over.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
from contextlib import contextmanager

log = logging.getLogger("s360bridge.import")

BESIDE_BYTES = 16 << 20  # smaller files are delivered after their store, in the import itself
_POLL_SECONDS = 0.05


@contextmanager
def fewer_collections():
    """Collect the young generation every 50,000 allocations instead of 700, and leave the
    objects made so far (modules, settings) out of every collection, for the block."""
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


class Beside:
    """The delivery process of one import (``start``, then ``finish`` once stored)."""

    def __init__(self, configs):
        ctx = multiprocessing.get_context("spawn")  # nothing of this process's databases
        self.stored = ctx.Event()
        self.delivered = ctx.Value("q", 0)
        self.process = ctx.Process(target=_deliver, name="s360bridge-import-delivery",
                                   args=(list(configs), os.getpid(), self.stored,
                                         self.delivered), daemon=True)

    def start(self) -> Beside:
        self.process.start()
        return self

    def finish(self) -> int:
        """Say that everything is stored, wait for the process, and answer how many records
        it delivered; a process that failed is logged (its records stay queued)."""
        self.stored.set()
        self.process.join()
        if self.process.exitcode != 0:
            log.warning("the import's delivery process ended with %s; what it left is "
                        "delivered now", self.process.exitcode)
        return self.delivered.value

    def stop(self) -> None:
        """The import failed: the process ends after its batch in hand."""
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()


def _deliver(configs, parent: int, stored, delivered) -> None:
    from s360bridge.core.cli.common import open_bridge
    from s360bridge.core.pipeline.worker import Worker

    bridge = open_bridge(configs)
    worker = Worker(bridge)
    try:
        with fewer_collections():
            while os.getppid() == parent:
                done = stored.is_set()  # read before the claim: an empty claim after it ends
                n = worker.run_once()
                with delivered.get_lock():
                    delivered.value += n
                if n == 0:
                    if done:
                        break
                    stored.wait(_POLL_SECONDS)
    finally:
        worker.finish()
        bridge.close()
