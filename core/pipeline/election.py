"""Which process runs the periodic jobs: one at a time among every ``s360bridge run`` and
``worker`` that may (not ``--no-scheduler``), on any number of hosts, elected by a lock that
is released when its process dies, even by ``kill -9``:

* PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``), held on a connection
  of its own, outside the pool, for as long as the process runs the jobs; the server drops it
  with the session. The connection asks the server for keepalives too (the settings of
  ``postgres_keepalives_idle_seconds``): the session of a host that vanished without a word
  ends, and its lock with it, within about twice that.
* SQLite (every process on one host): ``flock`` on a file beside the database, held open;
  the kernel drops it with the process. An in-memory database has one process: no election.

The lock's key is the engine database's schema: one scheduler per engine database, which runs
the jobs of the institutions of its own configuration. So every process that may be elected
must have every institution (hosts given a folder of some, docs/production.md, run with
``--no-scheduler``): the scheduler names itself with a digest of its institutions, and a
process (or ``status``) that sees other institutions there says so. A process standing by tries
again every ``engine.scheduler_retry_seconds``, and the scheduler checks that often that it
still holds the lock: a lost connection means a lost lock, and the jobs stop until it is taken
again.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import math
import os
import socket
import time
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from s360bridge.core.redact import redact

log = logging.getLogger("s360bridge.scheduler")
SCOPE = "s360bridge scheduler"


def _digest(*parts: str) -> bytes:
    return hashlib.blake2b(" ".join((SCOPE, *parts)).encode(), digest_size=8).digest()


def _institutions(bridge) -> str:
    """The digest of the configuration's institutions, which the scheduler names itself with."""
    return _digest(",".join(sorted(bridge.settings.institutions))).hex()[:8]


def _label(institutions: str) -> str:
    return f"{institutions} {identity()}"


OTHER_INSTITUTIONS = ("; warning: its configuration has other institutions than this one, and "
                      "it runs the jobs of its own: every process that may be the scheduler "
                      "must have every institution (docs/production.md)")


def _who(label: str, institutions: str, where: str = "") -> str:
    """Who the scheduler's ``label`` names (and ``where`` from), with a warning when its
    institutions are others."""
    digest, _, who = label.partition(" ")
    if not who or len(digest) != 8:  # not a label: what a session calls itself
        return label + where
    return who + where + ("" if digest == institutions else OTHER_INSTITUTIONS)


class Unknown(Exception):
    """Who is the scheduler cannot be seen from here: a hot standby sees its own locks only."""


def identity() -> str:
    """Who holds the lock, as ``status`` says it."""
    return f"{socket.gethostname()} pid {os.getpid()}"


class FileLock:
    """SQLite: an exclusive ``flock`` on ``path``, which holds the holder's identity."""

    errors = (OSError,)  # what trying it may raise: the folder not writable

    def __init__(self, path: Path, institutions: str):
        self.path, self.institutions = path, institutions
        self._file = None

    def describe(self) -> str:
        return f"lock file {self.path}"

    def acquire(self) -> bool:
        file = open(self.path, "a+")  # noqa: SIM115 - held open while this process leads
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            return False
        file.truncate(0)
        file.write(_label(self.institutions) + "\n")
        file.flush()
        self._file = file
        return True

    def alive(self) -> bool:
        """Held: the file is still the one at ``path`` (not removed or replaced)."""
        try:
            return os.stat(self.path).st_ino == os.fstat(self._file.fileno()).st_ino
        except OSError:
            return False

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # the lock goes with the last descriptor of this open
            self._file = None

    def holder(self) -> str | None:
        try:
            with open(self.path) as file:
                try:
                    fcntl.flock(file, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    return _who(file.read().strip() or "a process", self.institutions)
                return None  # nobody holds it: ours goes when the file closes
        except FileNotFoundError:
            return None
        except OSError as exc:  # not readable: unknown, as on a standby
            raise Unknown(f"unknown: {self.path} cannot be read ({exc.strerror})") from exc


# the lock of ``key`` granted to some session of this database (a bigint key is the pair of
# its high and low 32 bits, with objsubid 1), and who that session is
_HOLDER = """SELECT coalesce(a.application_name, ''), host(a.client_addr) FROM pg_locks l
    LEFT JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
    AND l.classid = %(high)s::bigint::oid AND l.objid = %(low)s::bigint::oid
    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"""
_MINE = _HOLDER + " AND l.pid = pg_backend_pid()"
PREFIX = "s360bridge scheduler "  # of the lock's session's application_name


class AdvisoryLock:
    """PostgreSQL: ``pg_try_advisory_lock`` on a connection of this lock's own."""

    def __init__(self, bridge):
        self.engine, self.limits = bridge.engine, bridge.settings.engine
        self.institutions = _institutions(bridge)
        # the server down, …: psycopg's on the lock's connection, SQLAlchemy's through the
        # pool (``holder``: its connection refused, or every pooled connection busy)
        self.errors = (self.engine.dialect.loaded_dbapi.Error, SQLAlchemyError)
        self._conn = None
        self._key: int | None = None

    def describe(self) -> str:
        return f"advisory lock {self._key} of the engine database" if self._key is not None \
            else "advisory lock of the engine database"

    def key(self, schema: str) -> int:
        return int.from_bytes(_digest(schema), "big", signed=True)

    def _params(self, key: int) -> dict:
        return {"high": (key >> 32) & 0xFFFFFFFF, "low": key & 0xFFFFFFFF}

    def _connect(self):
        cargs, cparams = self.engine.dialect.create_connect_args(self.engine.url)
        libpq = self.limits.libpq(cparams.get("options"))
        idle = max(1, round(self.limits.postgres_keepalives_idle_seconds))
        libpq["options"] += (f" -c tcp_keepalives_idle={idle} -c tcp_keepalives_interval="
                             f"{max(1, idle // 3)} -c tcp_keepalives_count=3")
        conn = self.engine.dialect.loaded_dbapi.connect(
            *cargs, **{**cparams, **libpq, "autocommit": True,
                       "application_name": f"{PREFIX}{_label(self.institutions)}"[:63]})
        self._key = self.key(conn.execute("SELECT current_schema()").fetchone()[0])
        return conn

    def acquire(self) -> bool:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
        try:
            return self._conn.execute("SELECT pg_try_advisory_lock(%s)",
                                      (self._key,)).fetchone()[0]
        except self.engine.dialect.loaded_dbapi.Error:
            self.release()
            raise

    def alive(self) -> bool:
        try:
            return self._conn.execute(_MINE, self._params(self._key)).fetchone() is not None
        except self.engine.dialect.loaded_dbapi.Error:
            return False

    def release(self) -> None:
        if self._conn is not None:
            try:  # at once: the session's end, below, is the server's to finish in its time
                self._conn.execute("SELECT pg_advisory_unlock_all()")
            except self.engine.dialect.loaded_dbapi.Error:
                pass  # the connection is broken: the server ends its session
            self._conn.close()
            self._conn = None

    def holder(self) -> str | None:
        with self.engine.connect() as conn:
            schema, standby = conn.exec_driver_sql(
                "SELECT current_schema(), pg_is_in_recovery()").one()
            if standby:
                raise Unknown("unknown here: a hot standby does not see the primary's locks")
            row = conn.exec_driver_sql(_HOLDER, self._params(self.key(schema))).first()
        if row is None:
            return None
        name, addr = row
        where = f" (connected from {addr})" if addr else ""
        return _who(name[len(PREFIX):], self.institutions, where) if name.startswith(PREFIX) \
            else (name or "a session") + where


class Unelected:
    """An in-memory SQLite database: one process, which leads."""

    errors = ()

    def describe(self) -> str:
        return "no election (in-memory database)"

    def acquire(self) -> bool:
        return True

    def alive(self) -> bool:
        return True

    def release(self) -> None:
        pass

    def holder(self) -> str | None:
        return None


def holder(bridge) -> str | None:
    """Who is the scheduler of this bridge's configuration now (None: no process); raises
    Unknown on a hot standby."""
    return lock_for(bridge).holder()


def lock_for(bridge):
    """The lock that elects the scheduler of this bridge's engine database."""
    url = make_url(bridge.settings.engine.database_url)
    if url.get_backend_name() == "postgresql":
        return AdvisoryLock(bridge)
    if not url.database or url.database == ":memory:":
        return Unelected()
    path = Path(url.database)
    return FileLock(path.with_name(f"{path.name}.scheduler.lock"), _institutions(bridge))


class Election:
    """Whether this process runs the jobs now (``leads``), asked as often as the scheduler
    loops: the lock is tried, or checked, once per ``retry`` seconds at most; and whether it
    still holds the lock right now (``holds``), asked before each job starts."""

    def __init__(self, lock, retry: float):
        self.lock, self.retry = lock, retry
        self.leading = False
        self._asked = -math.inf
        self._said = ""  # what was last logged: each change once, not every retry

    @classmethod
    def of(cls, bridge) -> Election:
        return cls(lock_for(bridge), bridge.settings.engine.scheduler_retry_seconds)

    def leads(self) -> bool:
        now = time.monotonic()
        if now - self._asked < self.retry:
            return self.leading
        self._asked = now
        if self.holds():
            return True
        try:
            self.leading = self.lock.acquire()
        except self.lock.errors as exc:  # the database down: said once, tried again
            self._say(logging.WARNING, "failed", "cannot try the scheduler's lock (%s), again "
                      "every %gs: %s", self.lock.describe(), self.retry, one_line(exc))
            return False
        if self.leading:
            self._say(logging.INFO, "leads", "this process is the scheduler (it holds the %s)",
                      self.lock.describe())
        elif self._said != "stands by":
            try:
                holder = self.lock.holder() or "another process"
            except (*self.lock.errors, Unknown):
                holder = "another process"
            self._say(logging.INFO, "stands by", "standing by: %s is the scheduler; trying "
                      "again every %gs", holder, self.retry)
        return self.leading

    def holds(self) -> bool:
        """Whether this process holds the lock now: checked, not remembered (on PostgreSQL a
        statement on the lock's connection, on SQLite a ``stat``)."""
        if self.leading and not self.lock.alive():
            self.lock.release()
            self.leading = False
            self._say(logging.WARNING, "lost", "lost the scheduler's %s: the periodic jobs stop "
                      "until this process takes it again", self.lock.describe())
        return self.leading

    def _say(self, level: int, what: str, message: str, *args) -> None:
        if self._said != what:
            self._said = what
            log.log(level, message, *args)

    def release(self) -> None:
        self.lock.release()
        self.leading = False


def one_line(exc: Exception) -> str:
    """What went wrong, in one line with no secret."""
    text = redact(str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__
