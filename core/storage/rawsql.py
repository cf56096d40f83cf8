"""SQL straight on the driver, for the hot paths (the receiver's insert, the worker's claim and
completion, the warehouse upsert): statements compiled or written once, rows as plain tuples,
lists as one parameter, a transaction's BEGIN sent with its first statements, and plans that no
statistics decide (COPY: copies.py).
SQLAlchemy's per-row parameter processing and execution events cost more there than the
statements themselves (bench/README.md)."""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from functools import cache, lru_cache

import orjson
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

_compiled: dict[tuple[int, str], tuple[str, bool]] = {}
_IDLE = 0  # psycopg.pq.TransactionStatus.IDLE (psycopg is imported on PostgreSQL only)


@contextmanager
def driver_errors(conn: Connection, sql: str):
    """A driver's OperationalError as SQLAlchemy would raise it, so ``write`` sees it."""
    try:
        yield
    except conn.dialect.loaded_dbapi.OperationalError as exc:
        raise OperationalError(sql, None, exc) from exc


def executemany(conn: Connection, stmt, columns: tuple[str, ...], rows: list[tuple],
                cache_key: str) -> int:
    """Run ``stmt`` for many rows straight on the driver's cursor, compiled once per dialect:
    the receiver's insert and the warehouse upsert on SQLite (PostgreSQL takes them through
    ``copy_insert``). ``rows`` are tuples in ``columns`` order, passed as they are to drivers
    with positional parameters (sqlite3), as dictionaries otherwise. Answers the driver's row
    count."""
    key = (id(conn.dialect), cache_key)
    if key not in _compiled:
        compiled = stmt.compile(dialect=conn.dialect)
        if compiled.positional and tuple(compiled.positiontup) != tuple(columns):
            raise ValueError(f"{cache_key}: parameters {compiled.positiontup} != {columns}")
        _compiled[key] = (str(compiled), compiled.positional)
    sql, positional = _compiled[key]
    params = rows if positional else [dict(zip(columns, r, strict=True)) for r in rows]
    cursor = driver(conn).cursor()
    try:
        with driver_errors(conn, sql):
            cursor.executemany(sql, params)
        return cursor.rowcount
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


def index_plans(conn: Connection) -> list[tuple[str, tuple]]:
    """``index_plans_only`` as statements to go first in a ``run_all``."""
    return [(_INDEX_PLANS, ())] if conn.dialect.name == "postgresql" else []


class _Ids(list):
    """A list of integers bound for PostgreSQL, dumped by ``_ids_dumper``."""


@cache
def _ids_dumper():
    from psycopg import postgres
    from psycopg.adapt import Dumper

    class IdsDumper(Dumper):
        """The text of a bigint[]: a quarter of the client's CPU of psycopg's own list dumper
        (Python), which a claim, its completion and the attempt history each pay for
        thousands of ids. Typed, so a statement needs no cast to read it."""

        oid = postgres.types["int8"].array_oid

        def dump(self, obj):
            return ("{" + ",".join(map(str, obj)) + "}").encode()

    return IdsDumper


# in a pooled connection's info: its driver connection dumps _Ids with _ids_dumper
_IDS = "s360_ids_dumper"


def _ints(conn: Connection, values: list) -> list:
    if not all(type(v) is int for v in values):
        return values
    if _IDS not in conn.connection.info:
        conn.connection.driver_connection.adapters.register_dumper(_Ids, _ids_dumper())
        conn.connection.info[_IDS] = True
    return _Ids(values)


def run(conn: Connection, sql: str, params: tuple = ()) -> list[tuple]:
    """Run one statement of the worker's hot path straight on the driver, in the connection's
    transaction, and answer the rows it returns (SELECT or RETURNING). ``sql`` is written
    once for both databases: ``?`` marks a value, ``IN ?ints`` / ``IN ?texts`` a list
    parameter (given as a Python list)."""
    if _begins(conn):
        return _pipelined(conn, [(sql, params)], False, True)[0]
    sql, params = _driver_form(conn, sql, params)
    cursor = driver(conn).cursor()
    try:
        with driver_errors(conn, sql):
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else []
    finally:
        cursor.close()


def run_all(conn: Connection, statements: list[tuple[str, tuple]],
            binary: bool = False) -> list[list[tuple]]:
    """``run`` each of ``statements`` in turn, answering the rows of each. On PostgreSQL they
    go in one round trip (psycopg's pipeline mode), with the BEGIN of the transaction when
    they start it (``_begins``): a worker that claims and completes in a thread of its own
    waits for the interpreter lock after every answer from the server, so fewer answers are
    less waiting as well as less latency. ``binary``: PostgreSQL sends the rows in its binary
    format (less work on both sides for large values and numbers)."""
    begins = _begins(conn)
    if not begins and (conn.dialect.name != "postgresql" or (len(statements) < 2
                                                            and not binary)):
        return [run(conn, sql, params) for sql, params in statements]
    return _pipelined(conn, statements, binary, begins)


def _pipelined(conn: Connection, statements: list[tuple[str, tuple]], binary: bool,
               begins: bool) -> list[list[tuple]]:
    """PostgreSQL: ``statements`` in psycopg's pipeline mode, after our BEGIN if ``begins``."""
    pg = conn.connection.driver_connection if begins else driver(conn)
    label = statements[0][0] if statements else "BEGIN"
    if begins:  # psycopg would send its BEGIN alone, and wait for the answer
        pg.autocommit = True  # it then sends none: ours goes first in the pipeline
        conn.connection.info[_OWN_BEGIN] = True
        statements = [(_begin_statement(pg), ()), *statements]
    cursors = []
    try:
        with driver_errors(conn, label), pg.pipeline():
            for sql, params in statements:
                statement = _driver_form(conn, sql, params)  # before the cursor copies the
                cursors.append(pg.cursor(binary=binary))  # connection's adapters
                cursors[-1].execute(*statement)
        rows = [c.fetchall() if c.description else [] for c in cursors]
        return rows[1:] if begins else rows
    finally:
        for c in cursors:
            c.close()


# The engines whose transactions ``run`` and ``run_all`` may begin themselves, by their dialect
# (``make_engine`` marks them, and hooks ``driver``; a dialect outlives the engine's dispose()
# and is shared by its execution_options() copies); in a pooled connection's info, that they did:
# psycopg is then in autocommit mode (it commits and rolls back as usual, and sends no BEGIN)
# until the transaction is over
_BEGIN_HERE: weakref.WeakSet = weakref.WeakSet()
_OWN_BEGIN = "s360_own_begin"


def begin_with_first_statements(engine) -> None:
    """Let ``run`` and ``run_all`` send the BEGIN of a transaction they start on ``engine``
    (PostgreSQL) with its first statements: psycopg sends its own alone and waits for the
    answer, a round trip of its own for every transaction of the hot paths. psycopg gets the
    connection's transactions back once that one is over: when the next one starts, when a
    statement goes to the driver outside them (``driver``), and when the connection goes back
    to the pool."""
    from sqlalchemy import event

    _BEGIN_HERE.add(engine.dialect)
    event.listen(engine, "begin", lambda conn: driver(conn))
    event.listen(engine, "begin_twophase", lambda conn, _xid: driver(conn))
    event.listen(engine, "checkin",
                 lambda dbapi_conn, record: _as_usual(dbapi_conn, record.info))


def _begins(conn: Connection) -> bool:
    """Is the next statement the first of the connection's transaction, on an engine whose
    transactions begin here?"""
    if conn.dialect not in _BEGIN_HERE or conn.get_execution_options().get(
            "isolation_level") == "AUTOCOMMIT":
        return False
    pg = conn.connection.driver_connection
    return pg.info.transaction_status == _IDLE and (
        not pg.autocommit or conn.connection.info.get(_OWN_BEGIN, False))


def _begin_statement(pg) -> str:
    """The BEGIN psycopg would send, with the connection's isolation level (SQLAlchemy sets
    READ COMMITTED on every connection it has reset from AUTOCOMMIT), read-only and deferrable
    settings (psycopg's ``_get_tx_start_command``)."""
    from psycopg import IsolationLevel

    words = ["BEGIN"]
    if pg.isolation_level is not None:
        level = IsolationLevel(pg.isolation_level).name
        words.append("ISOLATION LEVEL " + level.replace("_", " "))
    if pg.read_only is not None:
        words.append("READ ONLY" if pg.read_only else "READ WRITE")
    if pg.deferrable is not None:
        words.append("DEFERRABLE" if pg.deferrable else "NOT DEFERRABLE")
    return " ".join(words)


def driver(conn: Connection):
    """The connection's driver connection, for a statement run straight on it: when the
    transaction ``run_all`` began is over, psycopg begins the next one again (not a statement
    autocommitted at a time). A connection set to AUTOCOMMIT stays so."""
    if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
        _as_usual(conn.connection.driver_connection, conn.connection.info)
    return conn.connection.driver_connection


def _as_usual(dbapi_conn, info: dict) -> None:
    """Once the transaction ``run_all`` began is over, psycopg begins the connection's next
    ones again. (A connection the pool invalidated has none: ``dbapi_conn`` None.)"""
    if dbapi_conn is not None and info.get(_OWN_BEGIN) \
            and dbapi_conn.info.transaction_status == _IDLE:
        dbapi_conn.autocommit = False
        del info[_OWN_BEGIN]


def _driver_form(conn: Connection, sql: str, params: tuple) -> tuple[str, tuple]:
    dialect = conn.dialect.name
    sql = _for_dialect(sql, dialect)
    if dialect == "sqlite":
        params = tuple(orjson.dumps(p).decode() if isinstance(p, list) else p for p in params)
    elif any(isinstance(p, list) for p in params):
        params = tuple(_ints(conn, p) if isinstance(p, list) else p for p in params)
    return sql, params
