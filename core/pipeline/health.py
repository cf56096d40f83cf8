"""Readiness: the engine database commits. ``/health/ready`` answers from the commits the
process made anyway (core/storage/db.py ``commits``); when none succeeded within
``engine.ready_within_seconds`` it writes a heartbeat row, at most one per that many seconds
whatever the polling rate, and a poll that comes while one is under way answers at once."""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy.engine import Engine

from s360bridge.core.errors import StoreUnavailable
from s360bridge.core.storage.db import commits, unavailable, write
from s360bridge.core.storage.tables import HEARTBEAT, dialect_insert

log = logging.getLogger("s360bridge.health")


class Readiness:
    def __init__(self, engine: Engine, within: float):
        self.engine = engine
        self.within = within
        self._beating = threading.Lock()
        self._beat_at = -within
        self._told: str | None = None

    def problem(self) -> str | None:
        """None when the database committed within ``within`` seconds, else why not (logged
        when it changes)."""
        problem = self._problem()
        if problem != self._told:
            self._told = problem
            if problem is None:
                log.info("ready again: the engine database commits")
            else:
                log.warning("not ready: %s", problem)
        return problem

    def _problem(self) -> str | None:
        if self._fresh():
            return None
        if self._beating.acquire(blocking=False):
            try:
                if time.monotonic() - self._beat_at >= self.within:
                    self._beat_at = time.monotonic()
                    self._beat()
            finally:
                self._beating.release()
            if self._fresh():
                return None
        log = commits(self.engine)
        if log.failed_at > log.ok_at:
            return f"the engine database cannot commit: {log.error}"
        return f"no commit within {self.within:g} s, a heartbeat is under way"

    def _fresh(self) -> bool:
        log = commits(self.engine)
        return log.ok_at >= log.failed_at and time.monotonic() - log.ok_at <= self.within

    def _beat(self) -> None:
        try:
            with write(self.engine) as conn:
                ins = dialect_insert(conn, HEARTBEAT).values(id=1, beat_at=time.time())
                conn.execute(ins.on_conflict_do_update(index_elements=[HEARTBEAT.c.id],
                                                       set_={"beat_at": ins.excluded.beat_at}))
        except Exception as exc:  # write() noted a StoreUnavailable: anything else, here
            if not isinstance(exc, StoreUnavailable):
                log = commits(self.engine)
                log.failed_at, log.error = time.monotonic(), unavailable(exc)
