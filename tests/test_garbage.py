"""What the bridge's processes ask of Python's garbage collector (core/garbage.py): what a
long-running process built to start is frozen once it has started, and nothing else changes."""

from __future__ import annotations

import gc
import signal
import weakref

import pytest

from s360bridge.core.garbage import fewer_collections, freeze_startup
from s360bridge.core.pipeline.processes import Process
from s360bridge.core.wsgi import app_from_env


class Cycle:
    """An object only the cyclic collector frees: it refers to itself."""

    def __init__(self):
        self.me = self


@pytest.fixture
def unfrozen():
    """The test process's heap as the collector sees it by default, before and after."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def cycle_dropped() -> weakref.ref:
    """A weak reference to a cycle nothing refers to any more: garbage, not yet collected."""
    return weakref.ref(Cycle())


def test_freeze_startup_collects_the_garbage_of_the_start_then_freezes_the_rest(unfrozen):
    thresholds = gc.get_threshold()
    kept, dropped = Cycle(), cycle_dropped()
    freeze_startup()
    assert dropped() is None  # collected, not frozen for good
    assert gc.get_freeze_count() > 0
    assert not any(o is kept for o in gc.get_objects())  # out of every walk
    # what is made afterwards is collected as before
    assert gc.isenabled() and gc.get_threshold() == thresholds


def test_fewer_collections_is_undone_after_its_block(unfrozen):
    before = gc.get_threshold()
    with fewer_collections():
        assert gc.get_threshold()[0] == 250_000 and gc.get_freeze_count() > 0
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_fewer_collections_keeps_a_freeze_made_before_it(unfrozen):
    freeze_startup()
    frozen = gc.get_freeze_count()
    with fewer_collections():
        pass
    assert gc.get_freeze_count() >= frozen


def test_a_served_process_freezes_what_it_built_before_it_starts(unfrozen, bridge,
                                                                  monkeypatch):
    process = Process(bridge, receiver=False, workers=1, scheduler=False)
    process.stop.set()  # it starts, finds itself stopped and shuts down
    frozen_at_start = []
    start = process.start
    monkeypatch.setattr(process, "start", lambda: (frozen_at_start.append(
        gc.get_freeze_count()), start()))
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        process.serve_forever()
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
    assert frozen_at_start and frozen_at_start[0] > 0


def test_the_wsgi_receiver_freezes_what_it_built(unfrozen, config_path, monkeypatch):
    monkeypatch.setenv("S360BRIDGE_CONFIG", str(config_path))
    app = app_from_env()
    try:
        assert not any(o is app for o in gc.get_objects())
    finally:
        app.extensions["s360bridge"].close()
