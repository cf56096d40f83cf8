"""Python's cyclic garbage collector in the bridge's processes.

A worker's batch makes tens of thousands of short-lived containers (decoded payloads, rows,
tuples), so the collector runs hundreds of times a second, and every hundredth run or so walks
every object the process holds: the modules, SQLAlchemy's, pluggy's and jsonschema's tables,
the settings. In a drain on PostgreSQL that took a fifth of the worker's time, with the
interpreter lock held (bench/README.md, "The collector"). What a process built to start is
alive until it ends, so long-running processes leave it out of every later collection
(``freeze_startup``); the import collects seldom for its duration (``fewer_collections``).
"""

from __future__ import annotations

import gc
from contextlib import contextmanager


def freeze_startup() -> None:
    """Leave every object alive now out of all later collections (``gc.freeze``), once the
    garbage of the start is collected: call it when the process has loaded its plugins and
    opened its databases, before it serves. Objects made afterwards are collected as before.
    A frozen object that later ends in a reference cycle is never freed, with what it refers
    to: the start's objects live as long as the process, so that is at most a one-off loss."""
    gc.collect()
    gc.freeze()


@contextmanager
def fewer_collections():
    """Collect the young generation when 250,000 objects more are alive, not 700, and leave the
    objects made so far (modules, settings) out of every collection, for the block; a freeze
    made before it (``freeze_startup``) stays after it."""
    before, frozen = gc.get_threshold(), gc.get_freeze_count() > 0
    if not frozen:
        gc.freeze()
    gc.set_threshold(250_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        if not frozen:
            gc.unfreeze()
