"""A clock that stands still until a test moves it."""

from __future__ import annotations


class Clock:
    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def erasure_gives_up_at_once(monkeypatch) -> None:
    """``erase_versions`` finds its patience (``engine.lease_seconds``) spent at its second look
    at a delivery in flight, without waiting for it."""
    from s360bridge.core.operations import erasure

    minutes = iter(range(0, 10_000_000, 60))
    monkeypatch.setattr(erasure, "_clock", lambda: next(minutes))
    monkeypatch.setattr(erasure, "_pause", lambda seconds: None)
