"""The engine's own database: inbox, per-target deliveries and quarantine.

Timestamps used by the queue (arrival, retry time, lease expiry) are epoch seconds, so that claims
compare plain numbers on every database.
"""

from __future__ import annotations

import sqlite3
import time
import zlib
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import orjson
from sqlalchemy import BigInteger, Column, Index, Integer, Text, UniqueConstraint, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlmodel import Field, SQLModel, create_engine

from .errors import ConfigError, StoreUnavailable


class InboxRecord(SQLModel, table=True):
    """One version of one S-360 record, stored before S-360 is answered 200."""

    __tablename__ = "inbox"
    __table_args__ = (
        UniqueConstraint("institution", "stream", "record_key", "content_hash",
                         name="uq_inbox_version"),
        # pending rows in arrival order; partial, so it stays as small as the backlog
        Index("ix_inbox_pending", "id", sqlite_where=text("state = 'pending'"),
              postgresql_where=text("state = 'pending'")),
    )
    id: int | None = Field(default=None, sa_column=Column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True))
    institution: str
    stream: str
    record_key: str
    content_hash: str
    payload: str = Field(sa_column=Column(Text, nullable=False))
    received_at: float
    state: str = "pending"  # pending | done | superseded | dead
    attempts: int = 0
    next_attempt_at: float = 0.0
    lease_owner: str | None = None
    lease_until: float | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text))


class Delivery(SQLModel, table=True):
    """The state of one inbox record towards one target."""

    __tablename__ = "delivery"
    inbox_id: int = Field(sa_column=Column(BigInteger, primary_key=True))
    target: str = Field(primary_key=True)
    state: str  # done | failed | dead
    attempts: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    updated_at: float


class Quarantined(SQLModel, table=True):
    """A record that failed validation, kept with the reason until it is fixed and re-processed."""

    __tablename__ = "quarantine"
    __table_args__ = (Index("ix_quarantine_where", "institution", "stream", "state"),)
    id: int | None = Field(default=None, primary_key=True)
    institution: str
    stream: str
    payload: str = Field(sa_column=Column(Text, nullable=False))
    reason: str = Field(sa_column=Column(Text, nullable=False))
    received_at: float
    state: str = "held"  # held | reprocessed


class SkippedCount(SQLModel, table=True):
    """Records left out on purpose and counted, e.g. older than the history cut-off."""

    __tablename__ = "skipped"
    institution: str = Field(primary_key=True)
    stream: str = Field(primary_key=True)
    reason: str = Field(primary_key=True)
    count: int = 0


INBOX = InboxRecord.__table__
DELIVERY = Delivery.__table__
QUARANTINE = Quarantined.__table__
SKIPPED = SkippedCount.__table__


def make_engine(url: str, synchronous: str = "FULL", busy_timeout: float = 10.0) -> Engine:
    """Create an engine; on SQLite: WAL, the chosen ``synchronous`` level, a busy timeout, and
    write transactions that take the lock up front (``BEGIN IMMEDIATE``)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        if (parsed.get_backend_name(), parsed.get_driver_name()) != ("postgresql", "psycopg"):
            raise ConfigError(f"{parsed.render_as_string(hide_password=True)} is not supported: "
                              "use sqlite:///… or postgresql+psycopg://… (psycopg 3)")
        engine = create_engine(url, pool_pre_ping=True)

        @event.listens_for(engine, "rollback")
        def _forget_staging(conn):  # a rolled-back transaction took its new staging tables
            if not conn.invalidated:  # (an invalidated connection's next one starts afresh)
                conn.connection.info.pop("s360_staging", None)

        return engine
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": busy_timeout,
                                              "check_same_thread": False})

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
        try:  # straight on the driver: this runs before every transaction of the hot paths
            conn.connection.driver_connection.execute(statement)
        except sqlite3.OperationalError as exc:  # as SQLAlchemy would have raised it
            raise OperationalError(statement, None, exc) from exc

    return engine


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


def create_tables(engine: Engine, metadata, tables=None) -> None:
    """Create tables that do not exist yet, so that processes starting together (gunicorn
    workers) do not race: in a write transaction (SQLite takes the file's lock), under an
    advisory lock on PostgreSQL (its catalog would refuse the second CREATE)."""
    with engine.connect().execution_options(write=True) as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(360360)"))
        metadata.create_all(conn, tables=tables)


# On PostgreSQL the inbox's pages keep room for the claim's lease update of every row they
# hold, so that update is HOT: the new row version stays in its page and no index gets an
# entry for it (lease columns are in no index).
_INBOX_STORAGE = {"fillfactor": "50"}


def create_schema(engine: Engine) -> None:
    """Create the engine's tables, with no connection left in the pool."""
    create_tables(engine, SQLModel.metadata, [INBOX, DELIVERY, QUARANTINE, SKIPPED])
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn, conn.begin():
            have = conn.exec_driver_sql(
                "SELECT reloptions FROM pg_class WHERE oid = 'inbox'::regclass").scalar() or []
            wanted = [f"{k}={v}" for k, v in _INBOX_STORAGE.items()]
            if set(wanted) - set(have):
                conn.exec_driver_sql(f"ALTER TABLE inbox SET ({', '.join(wanted)})")
    engine.dispose()  # nothing pooled before a server forks its workers


def dialect_insert(conn: Connection, table):
    """An INSERT of the connection's dialect, which knows ON CONFLICT (SQLite, PostgreSQL)."""
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)


@contextmanager
def write(engine: Engine):
    """A write transaction; a database that cannot commit raises StoreUnavailable."""
    try:
        with engine.connect().execution_options(write=True) as conn, conn.begin():
            yield conn
    except OperationalError as exc:
        raise StoreUnavailable(f"the engine database could not commit: {exc.orig}") from exc


_compiled: dict[tuple[int, str], tuple[str, bool]] = {}


@contextmanager
def _driver_errors(conn: Connection, sql: str):
    """A driver's OperationalError as SQLAlchemy would raise it, so ``write`` sees it."""
    try:
        yield
    except conn.dialect.loaded_dbapi.OperationalError as exc:
        raise OperationalError(sql, None, exc) from exc


def executemany(conn: Connection, stmt, columns: tuple[str, ...], rows: list[tuple],
                cache_key: str) -> int:
    """Run ``stmt`` for many rows straight on the driver's cursor, compiled once per dialect.
    The receiver's insert and the warehouse upsert use it: SQLAlchemy's per-row parameter
    processing and execution events cost more there than the statement itself. ``rows`` are
    tuples in ``columns`` order, passed as they are to drivers with positional parameters
    (sqlite3). Answers the driver's row count. (On PostgreSQL, psycopg pipelines the rows; one
    ``INSERT … SELECT * FROM unnest(arrays)`` was measured slower: 11 ms against 8 for 500
    warehouse rows.)"""
    key = (id(conn.dialect), cache_key)
    if key not in _compiled:
        compiled = stmt.compile(dialect=conn.dialect)
        if compiled.positional and tuple(compiled.positiontup) != tuple(columns):
            raise ValueError(f"{cache_key}: parameters {compiled.positiontup} != {columns}")
        _compiled[key] = (str(compiled), compiled.positional)
    sql, positional = _compiled[key]
    params = rows if positional else [dict(zip(columns, r, strict=True)) for r in rows]
    cursor = conn.connection.driver_connection.cursor()
    try:
        with _driver_errors(conn, sql):
            cursor.executemany(sql, params)
        return cursor.rowcount
    finally:
        cursor.close()


@lru_cache(maxsize=64)
def _copy_statements(table: str, columns: tuple[str, ...], tail: str) -> tuple[str, str, str]:
    stage = f"_s360_stage_{table}"
    if len(stage) > 63:  # PostgreSQL's limit: keep long names apart
        stage = f"{stage[:50]}_{zlib.crc32(table.encode()):08x}"
    stage = f'"{stage}"'
    cols = ", ".join(f'"{c}"' for c in columns)
    return (f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS "
            f'SELECT {cols}, 0::bigint AS _n FROM "{table}" WITH NO DATA',
            f"COPY {stage} ({cols}, _n) FROM STDIN",
            f"WITH batch AS (DELETE FROM {stage} RETURNING *) "
            f'INSERT INTO "{table}" ({cols}) SELECT {cols} FROM batch ORDER BY _n {tail}')


def copy_insert(conn: Connection, table: str, columns: tuple[str, ...], rows: list[tuple],
                tail: str) -> tuple[int, list[tuple]]:
    """PostgreSQL: COPY ``rows`` (tuples in ``columns`` order) into a temporary table of those
    columns, then insert them into ``table`` in one statement, in the order given, ending with
    ``tail`` (``ON CONFLICT …``, ``RETURNING …``). COPY is the fastest way into PostgreSQL and
    the server plans and runs one statement for the batch, which also empties the temporary
    table. Answers the row count and the rows returned.

    The temporary table is made once per connection. Should it be gone all the same (a
    failed COMMIT, ``DISCARD TEMP``, a pooler that hands out server sessions per transaction:
    use session pooling), the batch fails as the database being unavailable would, and the
    next one makes it again."""
    create, copy, insert = _copy_statements(table, columns, tail)
    staged = conn.connection.info.setdefault("s360_staging", set())
    cursor = conn.connection.driver_connection.cursor()
    try:
        with _driver_errors(conn, insert):
            if table not in staged:
                cursor.execute(create)
                staged.add(table)
            try:
                with cursor.copy(copy) as out:
                    for n, row in enumerate(rows):
                        out.write_row((*row, n))
            except conn.dialect.loaded_dbapi.errors.UndefinedTable as exc:
                staged.discard(table)
                raise OperationalError(copy, None, exc) from exc
            cursor.execute(insert)
            return cursor.rowcount, cursor.fetchall() if cursor.description else []
    finally:
        cursor.close()


# How a list parameter is written: SQLite reads one JSON array, PostgreSQL one typed array.
# Either way the statement text is the same whatever the list's length.
_LISTS = {
    "sqlite": {"IN ?ints": "IN (SELECT value FROM json_each(?))",
               "IN ?texts": "IN (SELECT value FROM json_each(?))"},
    "postgresql": {"IN ?ints": "= ANY(?::bigint[])", "IN ?texts": "= ANY(?::text[])"},
}


@lru_cache(maxsize=256)
def _for_dialect(sql: str, dialect: str) -> str:
    for mark, text_ in _LISTS[dialect].items():
        sql = sql.replace(mark, text_)
    return sql.replace("?", "%s") if dialect == "postgresql" else sql


# The hot statements read indexes in their order. PostgreSQL's planner would choose otherwise
# from missing or stale statistics (a table filled since its last ANALYZE looks empty, so a
# bitmap scan and a sort of every pending row look cheaper than an ordered index scan), so it
# is left no other choice for the transaction: what PgQ and the job queues get from fixed
# access paths, with no dependence on autovacuum having analyzed the tables.
_INDEX_PLANS = "SELECT " + ", ".join(f"set_config('enable_{name}', 'off', true)"
                                     for name in ("seqscan", "bitmapscan", "sort"))


def index_plans_only(conn: Connection) -> None:
    """For the rest of this transaction, plan with ordered index scans only (PostgreSQL; on
    SQLite the statements are written so that its planner takes the index)."""
    if conn.dialect.name == "postgresql":
        run(conn, _INDEX_PLANS)


def run(conn: Connection, sql: str, params: tuple = ()) -> list[tuple]:
    """Run one statement of the worker's hot path straight on the driver, in the connection's
    transaction, and answer the rows it returns (SELECT or RETURNING). ``sql`` is written
    once for both databases: ``?`` marks a value, ``IN ?ints`` / ``IN ?texts`` a list
    parameter (given as a Python list)."""
    dialect = conn.dialect.name
    sql = _for_dialect(sql, dialect)
    if dialect == "sqlite":
        params = tuple(orjson.dumps(p).decode() if isinstance(p, list) else p for p in params)
    cursor = conn.connection.driver_connection.cursor()
    try:
        with _driver_errors(conn, sql):
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else []
    finally:
        cursor.close()
