"""The S-360 call budget, shared by every process of an installation through the engine database.

S-360 counts 60 calls a minute per institution and method, whoever makes them (REFERENCE §e.4).
pyrate-limiter provides the sliding-window policy and the blocking wait; this module stores its
log in the engine database, so that web workers, workers and CLI commands on one database spend
one budget. A check and its insert run in one write transaction (``BEGIN IMMEDIATE`` on SQLite,
a transaction-scoped advisory lock on PostgreSQL), so two processes never both take the last
call of a window.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable

from pyrate_limiter import AbstractBucket, BucketFactory, Limiter, Rate, RateItem
from sqlalchemy import BigInteger, Column, Index, MetaData, String, Table, delete, func, select
from sqlalchemy import text as sql_text

from s360bridge.core.storage.db import write

METADATA = MetaData()  # the table is made by core/storage/migrations: change both
CALL_LOG = Table(
    "s360_call_log", METADATA,
    Column("bucket", String(200), nullable=False),  # "{institution}/{service}.{method}"
    Column("at_ms", BigInteger, nullable=False),
    Index("ix_s360_call_log", "bucket", "at_ms"),
)


class EngineBucket(AbstractBucket):
    """The call log of one (institution, method), kept in the engine database."""

    is_async = False

    def __init__(self, engine, key: str, rates: list[Rate], clock: Callable[[], float]):
        self.engine = engine
        self.key = key
        self.rates = rates
        self._now_ms = lambda: int(clock() * 1000)
        self._lock_id = zlib.crc32(key.encode()) & 0x7FFFFFFF

    def now(self) -> int:
        return self._now_ms()

    def put(self, item: RateItem) -> bool:
        log = CALL_LOG.c
        with write(self.engine) as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sql_text("SELECT pg_advisory_xact_lock(:k)"), {"k": self._lock_id})
            # read the clock once the lock is held: the time recorded is the time admitted,
            # not the time this process began to wait for another one
            now = self._now_ms()
            counts = [conn.execute(select(func.count()).where(
                log.bucket == self.key,
                log.at_ms >= self._algorithm.window_start(rate, now))).scalar_one()
                for rate in self.rates]

            def newest(offset: int) -> int | None:
                return conn.execute(select(log.at_ms).where(log.bucket == self.key)
                                    .order_by(log.at_ms.desc()).limit(1).offset(offset)
                                    ).scalar()

            decision = self._algorithm.decide(self.rates, counts, item.weight, now, newest)
            if not self._record(RateItem(item.name, now, item.weight), decision):
                return False
            conn.execute(CALL_LOG.insert(), [{"bucket": self.key, "at_ms": now}] * item.weight)
            bound = self._algorithm.leak_bound(self.rates, now)
            conn.execute(delete(CALL_LOG).where(log.bucket == self.key, log.at_ms < bound))
        return True

    def leak(self, current_timestamp: int | None = None) -> int:
        return 0  # put() removes what falls out of the window, in the same transaction

    def flush(self) -> None:
        with write(self.engine) as conn:
            conn.execute(delete(CALL_LOG).where(CALL_LOG.c.bucket == self.key))
        self.failing_rate = None
        self._last_wait = None

    def count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).where(
                CALL_LOG.c.bucket == self.key)).scalar_one()

    def peek(self, index: int) -> RateItem | None:
        with self.engine.connect() as conn:
            at = conn.execute(select(CALL_LOG.c.at_ms).where(CALL_LOG.c.bucket == self.key)
                              .order_by(CALL_LOG.c.at_ms.desc()).limit(1).offset(index)).scalar()
        return None if at is None else RateItem(self.key, at)


class _Buckets(BucketFactory):
    """One EngineBucket per key, made on first use."""

    def __init__(self, engine, rates: list[Rate], clock):
        self.engine, self.rates, self.clock = engine, rates, clock
        self._buckets: dict[str, EngineBucket] = {}

    def wrap_item(self, name: str, weight: int = 1) -> RateItem:
        return RateItem(name, int(self.clock() * 1000), weight)

    def get(self, item: RateItem) -> EngineBucket:
        bucket = self._buckets.get(item.name)
        if bucket is None:
            bucket = self._buckets[item.name] = EngineBucket(self.engine, item.name, self.rates,
                                                             self.clock)
        return bucket


class CallBudget:
    """At most ``calls`` per ``window_seconds`` for each key, across processes, spread evenly:
    a window's calls are not spent in a burst at its start but at most
    ``ceil(calls / window_seconds)`` a second (the reference advises about one a second)."""

    def __init__(self, engine, calls: int, window_seconds: float = 60.0,
                 clock: Callable[[], float] = time.time):
        self.engine, self.clock = engine, clock
        self.calls, self.window_seconds = calls, window_seconds
        rates = [Rate(calls, int(window_seconds * 1000))]
        if window_seconds > 1:
            rates.append(Rate(math.ceil(calls / window_seconds), 1000))
        self._limiter = Limiter(_Buckets(engine, rates, clock), buffer_ms=5)

    def acquire(self, key: str, timeout: float) -> bool:
        """Wait for a call of ``key`` to fit the budget; False if it does not within timeout."""
        return bool(self._limiter.try_acquire(key, blocking=True, timeout=timeout))
