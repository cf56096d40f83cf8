"""Deadlines on the waits for a PostgreSQL server: a connection checked out of the pool is held
at most so long, then cut.

A server that stops answering without closing anything (a hung proxy, a network that drops
packets) leaves a statement waiting for ever: its ``statement_timeout`` runs on the server,
which never sees the statement, and TCP keepalives are answered by whatever holds the
connection. So the process keeps its own deadline: each checkout is armed with one (the
thread's, set by ``within``, or the engine's), and a watchdog thread shuts the connection's
socket down when it passes. The wait then fails at once with the driver's OperationalError,
which ``db.write`` turns into StoreUnavailable, and the pool replaces the connection.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from contextlib import contextmanager

from sqlalchemy import event
from sqlalchemy.engine import Engine

log = logging.getLogger("s360bridge.storage")
_local = threading.local()


@contextmanager
def within(seconds: float):
    """Connections this thread checks out inside the block are held ``seconds`` at most
    (``math.inf``: no limit, e.g. a migration), whatever the engine's own limit."""
    outer = getattr(_local, "seconds", None)
    _local.seconds = seconds
    try:
        yield
    finally:
        _local.seconds = outer


class _Watchdog:
    """One daemon thread that cuts the connections whose deadline passed."""

    def __init__(self):
        self._cond = threading.Condition()
        # pool entry -> (deadline, socket, thread, limit, the socket's identity)
        self._armed: dict[object, tuple[float, int, int, float, tuple]] = {}
        self._cut: dict[int, float] = {}  # thread -> the limit its connection overran
        self._thread: threading.Thread | None = None
        self._wakes_at = math.inf  # when the watchdog looks next, by itself

    def arm(self, entry, limit: float, fd: int) -> None:
        thread = threading.get_ident()
        identity = _identity(fd)
        deadline = time.monotonic() + limit
        with self._cond:
            self._cut.pop(thread, None)
            self._armed[entry] = (deadline, fd, thread, limit, identity)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="db-deadlines",
                                                 daemon=True)
                self._thread.start()
            if deadline < self._wakes_at:  # else it looks in time anyway: no thread switch
                self._wakes_at = deadline
                self._cond.notify()

    def disarm(self, entry) -> None:
        """After this, the entry's socket is never touched: cutting happens under the lock."""
        with self._cond:
            self._armed.pop(entry, None)

    def overran(self) -> float | None:
        """The limit a connection of this thread overran since the last call, if it did."""
        with self._cond:
            return self._cut.pop(threading.get_ident(), None)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for entry, (deadline, fd, thread, limit, identity) in list(self._armed.items()):
                    if deadline <= now:
                        del self._armed[entry]
                        if _identity(fd) == identity:  # not a descriptor number reused since
                            self._cut[thread] = limit
                            log.warning("cut a database connection held past %g s", limit)
                            _cut(fd)
                soonest = min((a[0] for a in self._armed.values()), default=math.inf)
                self._wakes_at = soonest
                self._cond.wait(None if soonest == math.inf else soonest - now)


def _identity(fd: int) -> tuple:
    """What the descriptor is (device and inode of the socket): a connection closed without
    the pool knowing frees its number for the next socket, which must never be cut."""
    try:
        st = os.fstat(fd)
    except OSError:
        return ()
    return (st.st_dev, st.st_ino)


def _cut(fd: int) -> None:
    """Shut the socket down (a copy of its descriptor: the driver still owns the original)."""
    try:
        with socket.socket(fileno=os.dup(fd)) as s:
            s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


WATCHDOG = _Watchdog()


def watch(engine: Engine, seconds: float) -> None:
    """Hold each checkout of ``engine``'s pool ``seconds`` at most, unless the thread says
    otherwise (``within``). Listens first, so that what other checkout listeners do (the ping
    of an idle connection) is under the deadline too."""

    @event.listens_for(engine, "checkout", insert=True)
    def _checkout(dbapi_conn, entry, _proxy):
        limit = getattr(_local, "seconds", None) or seconds
        if limit != math.inf:
            WATCHDOG.arm(entry, limit, dbapi_conn.fileno())

    def _released(_dbapi_conn, entry, *_):
        WATCHDOG.disarm(entry)

    for name in ("checkin", "invalidate", "close", "detach"):
        event.listen(engine, name, _released)

