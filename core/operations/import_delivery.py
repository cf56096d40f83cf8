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

import logging
import multiprocessing
import os
from contextlib import contextmanager

from sqlalchemy import event

from s360bridge.core.garbage import fewer_collections

log = logging.getLogger("s360bridge.import")

BESIDE_BYTES = 16 << 20  # smaller files are delivered after their store, in the import itself
_POLL_SECONDS = 0.05


@contextmanager
def commits_unflushed(engine):
    """SQLite: the engine database's transactions of the block commit without an fsync
    (``synchronous=NORMAL``; afterwards the pool is emptied, so that later ones have the
    configured level). The import's store needs no more: nothing answers S-360 on it, a crash
    loses none of it, and a power cut may lose the last batches with their checkpoint, which
    the next run reads again. Its delivery does not run in such a block: each claim commits
    at the configured level, and that commit flushes the log with everything written before
    it, so no target gets a record that is not on disk (a warehouse holding a version whose
    inbox row a power cut took would refuse the next version given that id as older)."""
    if engine.dialect.name != "sqlite":
        yield
        return

    def normal(dbapi_conn, _record, _proxy):
        dbapi_conn.execute("PRAGMA synchronous=NORMAL")

    event.listen(engine, "checkout", normal)
    try:
        yield
    finally:
        event.remove(engine, "checkout", normal)
        engine.dispose()


class Beside:
    """The delivery process of one import (``start``, then ``finish`` once stored)."""

    def __init__(self, configs):
        ctx = multiprocessing.get_context("spawn")  # nothing of this process's databases
        # a pipe, not an Event: no semaphore for the resource tracker to find left after a
        # kill -9
        self.pipe, self._theirs = ctx.Pipe()
        self.process = ctx.Process(target=_deliver, name="s360bridge-import-delivery",
                                   args=(list(configs), os.getpid(), self._theirs),
                                   daemon=True)

    def start(self) -> Beside:
        self.process.start()
        self._theirs.close()  # so that its end of the pipe closes with the process
        return self

    def finish(self) -> int:
        """Say that everything is stored, wait for the process, and answer how many records
        it delivered; a process that failed is logged (its records stay queued)."""
        try:
            self.pipe.send("stored")
            delivered = self.pipe.recv()
        except (EOFError, OSError):  # it ended before: its count is lost, not its work
            delivered = 0
        self.process.join()
        if self.process.exitcode != 0:
            log.warning("the import's delivery process ended with %s; what it left is "
                        "delivered now", self.process.exitcode)
        return delivered

    def stop(self) -> None:
        """The import failed: the process is stopped (SIGTERM); a batch it had in hand is
        delivered again once its lease ends, by a worker or the next import."""
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()


def _deliver(configs, parent: int, pipe) -> None:
    from s360bridge.core.cli.common import open_bridge
    from s360bridge.core.pipeline.worker import Worker

    bridge = open_bridge(configs)
    worker, delivered, stored = Worker(bridge), 0, False
    try:
        with fewer_collections():
            while os.getppid() == parent:
                stored = stored or pipe.poll()  # before the claim: an empty one after it ends
                n = worker.run_once()
                delivered += n
                if n == 0:
                    if stored:
                        pipe.send(delivered)
                        break
                    pipe.poll(_POLL_SECONDS)
    finally:
        worker.finish()
        bridge.close()
