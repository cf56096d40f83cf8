"""The log of refused requests, bounded whatever the flood: within each period, the first
refusal of each kind is logged in full and the others are counted, then summed up in one line.

S-360 sends a refused payload again every M minutes: each of its tries stays visible with its
reason (a period is much shorter than M), while a scan of venue codes or passwords writes a
few lines a minute, not one per request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

SUMMARY_SECONDS = 60.0


class RefusalLog:
    """Logs refusals on ``log``; ``clock`` (monotonic seconds) is injected by tests.

    The summary of a period is written with the first refusal after it ends: a flood that
    stops leaves its last count to the next refusal."""

    def __init__(self, log: logging.Logger, every: float = SUMMARY_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.log = log
        self.every = every
        self.clock = clock
        self._lock = threading.Lock()
        self._start: float | None = None
        self._seen: set[str] = set()
        self._counted: Counter = Counter()

    def refused(self, kind: str, message: str, *args) -> None:
        """One refusal of ``kind`` (the key of the count, such as "401 unknown institution");
        ``message % args`` is what is logged when it is the first of its kind in the period."""
        now = self.clock()
        with self._lock:
            summary = None
            if self._start is None or now - self._start >= self.every:
                if self._counted:
                    summary = (now - self._start, sum(self._counted.values()),
                               ", ".join(f"{k} x{n}" for k, n in sorted(self._counted.items())))
                self._start, self._seen, self._counted = now, set(), Counter()
            first = kind not in self._seen
            if first:
                self._seen.add(kind)
            else:
                self._counted[kind] += 1
        if summary:
            self.log.warning("%d more request(s) refused in the last %.0fs, not logged one "
                             "by one: %s", summary[1], summary[0], summary[2])
        if first:
            self.log.warning(message, *args)
