"""The engine's database connections: engines made for SQLite (WAL) or PostgreSQL (limits on
every wait), write transactions, and whether the last commit succeeded (readiness).

The tables are in tables.py.
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel import create_engine

from s360bridge.core.errors import ConfigError, S360BridgeError, StoreUnavailable
from s360bridge.core.storage.copies import forget_staging
from s360bridge.core.storage.deadline import WATCHDOG, watch
from s360bridge.core.storage.rawsql import begin_with_first_statements


@dataclass(frozen=True)
class DatabaseLimits:
    """How long a database may keep a process waiting (declared once here; the ``engine``
    settings extend it, docs/configuration.md). The pool's apply to SQLite too; the others to
    PostgreSQL, where a checkout is also held twice the statement timeout at most
    (core/storage/deadline.py; the receiver holds its own for less)."""

    pool_size: int = 10
    pool_max_overflow: int = 10
    pool_timeout_seconds: float = 5.0
    postgres_connect_timeout_seconds: float = 5.0
    postgres_statement_timeout_seconds: float = 60.0
    postgres_lock_timeout_seconds: float = 10.0
    postgres_keepalives_idle_seconds: float = 30.0

    def libpq(self, query_options: str | None) -> dict:
        """psycopg's connect arguments: libpq's connect timeout (2 s at least), keepalives,
        and the server's statement and lock timeouts after the URL's own ``options``."""
        idle = max(1, round(self.postgres_keepalives_idle_seconds))
        timeouts = (f"-c statement_timeout={_ms(self.postgres_statement_timeout_seconds)} "
                    f"-c lock_timeout={_ms(self.postgres_lock_timeout_seconds)}")
        return {"connect_timeout": max(2, math.ceil(self.postgres_connect_timeout_seconds)),
                "keepalives": 1, "keepalives_idle": idle,
                "keepalives_interval": max(1, idle // 3), "keepalives_count": 3,
                "tcp_user_timeout": idle * 1000,  # unacknowledged data: the peer is gone
                "options": f"{query_options} {timeouts}" if query_options else timeouts}


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def make_engine(url: str, synchronous: str = "FULL", busy_timeout: float = 10.0,
                limits: DatabaseLimits = DatabaseLimits()) -> Engine:
    """Create an engine with a bounded pool; on PostgreSQL with the timeouts of ``limits``; on
    SQLite: WAL, the chosen ``synchronous`` level, a busy timeout, and write transactions that
    take the lock up front (``BEGIN IMMEDIATE``)."""
    parsed = make_url(url)
    pool = {"pool_size": limits.pool_size, "max_overflow": limits.pool_max_overflow,
            "pool_timeout": limits.pool_timeout_seconds}
    if parsed.get_backend_name() != "sqlite":
        if (parsed.get_backend_name(), parsed.get_driver_name()) != ("postgresql", "psycopg"):
            raise ConfigError(f"{parsed.render_as_string(hide_password=True)} is not supported: "
                              "use sqlite:///… or postgresql+psycopg://… (psycopg 3)")
        options = parsed.query.get("options")
        engine = create_engine(url, connect_args=limits.libpq(
            options if isinstance(options, str) else None), **pool)
        event.listen(engine, "rollback", forget_staging)
        begin_with_first_statements(engine)
        watch(engine, 2 * limits.postgres_statement_timeout_seconds)  # before the idle ping
        _ping_when_idle(engine)
        _commits[engine] = Commits()
        _limits[engine] = limits
        return engine
    engine = create_engine(url, connect_args={"timeout": busy_timeout,
                                              "check_same_thread": False}, **pool)

    in_file = parsed.database and parsed.database != ":memory:"
    shm = f"{parsed.database}-shm" if in_file else None

    @event.listens_for(engine, "do_connect")
    def _make_folder(_dialect, _record, _args, _kwargs):
        if in_file:  # when used, not when configured
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            _shm_writable(shm, "connect")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # let the "begin" hook below emit BEGIN
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        _use_wal(cur, busy_timeout)
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        statement = "BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN"
        _shm_writable(shm, statement)
        try:  # straight on the driver: this runs before every transaction of the hot paths
            conn.connection.driver_connection.execute(statement)
        except sqlite3.OperationalError as exc:  # as SQLAlchemy would have raised it
            raise OperationalError(statement, None, exc) from exc

    _commits[engine] = Commits()
    return engine


def _shm_writable(shm: str | None, statement: str) -> None:
    """Refuse to touch a SQLite file whose shared memory cannot be written. SQLite maps the
    ``-shm`` file and writes it in memory, even to read: once the file is immutable (``chattr
    +i``, which stops root too), such a write kills the process with SIGBUS instead of failing.
    Checked before every transaction (a system call); a file made immutable during one can
    still do it. A missing file is fine: the last connection to close removes it, and the next
    to open makes it again."""
    if shm is None:
        return
    # Never open the file to find out: closing any descriptor of it drops every POSIX lock
    # this process holds on it, SQLite's included (its WAL locking then breaks: lost commits,
    # SIGBUS). access() and exists() instead, asked again when the answers disagree: between
    # them the last connection's close may remove the file and the next open make it again.
    for _ in range(3):
        if os.access(shm, os.W_OK) or not os.path.exists(shm):
            return
    raise OperationalError(statement, None, sqlite3.OperationalError(
        f"{shm} is not writable (immutable, or read-only)"))


IDLE_PING_SECONDS = 5.0


def _ping_when_idle(engine: Engine) -> None:
    """Check a pooled PostgreSQL connection before use when it has been idle for a while (a
    server restarted meanwhile, a proxy that dropped it); one in use moments ago is taken as
    it is. SQLAlchemy's ``pool_pre_ping`` asks at every checkout: a round trip per
    transaction, five a batch for the worker. A connection that breaks in between fails its
    statement, which the caller takes as the database being unavailable, and is replaced."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn, record):
        record.info["checked_in"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn, record, _proxy):
        if time.monotonic() - record.info.get("checked_in", math.inf) <= IDLE_PING_SECONDS:
            return
        try:  # in autocommit mode: one round trip, and no transaction left open
            was, dbapi_conn.autocommit = dbapi_conn.autocommit, True
            dbapi_conn.cursor().execute("SELECT 1")
            dbapi_conn.autocommit = was
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(str(exc)) from exc  # the pool takes a new connection


def _use_wal(cur, busy_timeout: float) -> None:
    """Switch the file to WAL once. The switch takes the file for itself and SQLite does not
    wait for a lock there, so processes opening a new file together retry until it is done."""
    deadline = time.monotonic() + busy_timeout
    while cur.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        try:
            cur.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class Commits:
    """When a write transaction of one engine last committed, and last failed and why: what
    ``/health/ready`` reads (monotonic seconds)."""

    def __init__(self):
        self.ok_at = -math.inf
        self.failed_at = -math.inf
        self.error = ""


_commits: weakref.WeakKeyDictionary[Engine, Commits] = weakref.WeakKeyDictionary()
_limits: weakref.WeakKeyDictionary[Engine, DatabaseLimits] = weakref.WeakKeyDictionary()
_twins: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()


def commits(engine: Engine) -> Commits:
    return _commits.setdefault(engine, Commits())


def unavailable(exc: Exception) -> str:
    """Why the database did not answer, in one line with no secret (StoreUnavailable redacts)."""
    limit = WATCHDOG.overran()
    if limit is not None:
        return f"no answer within {limit:g} s, connection cut"
    if isinstance(exc, PoolTimeout):
        return "every pooled connection is busy (engine.pool_size, engine.pool_timeout_seconds)"
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def user_error(exc: Exception) -> S360BridgeError:
    """Our own error as it is; a database's failure as StoreUnavailable, in one line."""
    if isinstance(exc, S360BridgeError):
        return exc
    return StoreUnavailable(f"the engine database failed: {unavailable(exc)}")


@contextmanager
def _committing(engine: Engine):
    """A database that cannot commit (or does not answer in time, or has no free connection)
    raises StoreUnavailable; either way readiness learns it (``commits``)."""
    try:
        yield
    except (OperationalError, PoolTimeout) as exc:
        log = commits(engine)
        log.failed_at, log.error = time.monotonic(), unavailable(exc)
        raise StoreUnavailable(f"the engine database could not commit: {log.error}") from exc
    commits(engine).ok_at = time.monotonic()


@contextmanager
def write(engine: Engine):
    """A write transaction; a database that cannot commit (or does not answer in time, or
    has no free connection) raises StoreUnavailable."""
    with _committing(engine), engine.connect().execution_options(write=True) as conn, \
            conn.begin():
        yield conn


def _queueing_twin(engine: Engine) -> Engine:
    """PostgreSQL: an engine of the same database, with the same limits, whose sessions are in
    autocommit and have the inbox queue what they insert into it (``s360.queue_inserts``,
    set on each new connection: a setting a pooler might drop from the connection's options
    would leave records stored and never delivered; migrations/engine_0015); made once, on
    first use, and disposed with ``engine``."""
    twin = _twins.get(engine)
    if twin is None:
        made = make_engine(engine.url.render_as_string(hide_password=False),
                           limits=_limits[engine])

        @event.listens_for(made, "connect")
        def _queue_inserts(dbapi_conn, _record):
            was, dbapi_conn.autocommit = dbapi_conn.autocommit, True
            dbapi_conn.execute("SET s360.queue_inserts = on")
            dbapi_conn.autocommit = was

        mine = made.execution_options(isolation_level="AUTOCOMMIT")
        twin = _twins.setdefault(engine, mine)
        if twin is mine:  # its connections close with the engine's
            event.listen(engine, "engine_disposed", lambda _engine: made.dispose())
    return twin


@contextmanager
def alone(engine: Engine):
    """PostgreSQL: a connection on which each statement is a transaction of its own (the
    server commits it, and flushes its WAL, before it answers), and an insert into the inbox
    queues its rows (``_queueing_twin``); errors as ``write`` raises them."""
    with _committing(engine), _queueing_twin(engine).connect() as conn:
        yield conn
