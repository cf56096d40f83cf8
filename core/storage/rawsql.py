"""SQL straight on the driver, for the hot paths (the receiver's insert, the worker's claim and
completion, the warehouse upsert): statements compiled or written once, rows as plain tuples,
lists as one parameter, batches copied into PostgreSQL, and plans that no statistics decide.
SQLAlchemy's per-row parameter processing and execution events cost more there than the
statements themselves (bench/README.md)."""

from __future__ import annotations

import zlib
from contextlib import contextmanager
from functools import cache, lru_cache

import orjson
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

_compiled: dict[tuple[int, str], tuple[str, bool]] = {}
_IDLE = 0  # psycopg.pq.TransactionStatus.IDLE (psycopg is imported on PostgreSQL only)


@contextmanager
def _driver_errors(conn: Connection, sql: str):
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
    cursor = conn.connection.driver_connection.cursor()
    try:
        with _driver_errors(conn, sql):
            cursor.executemany(sql, params)
        return cursor.rowcount
    finally:
        cursor.close()


@lru_cache(maxsize=64)
def _copy_statements(table: str, columns: tuple[str, ...], tail: str,
                     then: str = "") -> tuple[str, str, str, str]:
    stage = f"_s360_stage_{table}"
    if len(stage) > 63:  # PostgreSQL's limit: keep long names apart
        stage = f"{stage[:50]}_{zlib.crc32(table.encode()):08x}"
    stage = f'"{stage}"'
    cols = ", ".join(f'"{c}"' for c in columns)
    insert = f'INSERT INTO "{table}" ({cols}) SELECT {cols} FROM batch ORDER BY _n {tail}'
    return (f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS "
            f'SELECT {cols}, 0::bigint AS _n FROM "{table}" WITH NO DATA',
            f"SELECT {cols}, _n FROM {stage} LIMIT 0",
            f"COPY {stage} ({cols}, _n) FROM STDIN (FORMAT BINARY)",
            f"WITH batch AS (DELETE FROM {stage} RETURNING *) "
            + (insert if not then else f", new AS ({insert}) {then}"))


# in a pooled connection's info: the staging tables it has made, and their column types
_STAGED = "s360_staging"


def forget_staging(conn: Connection) -> None:
    """On rollback: the transaction took the staging tables it made with it. (An invalidated
    connection is left alone: the next one starts afresh, and asking would raise.)"""
    if not conn.invalidated:
        conn.connection.info.pop(_STAGED, None)


def copy_insert(conn: Connection, table: str, columns: tuple[str, ...], rows: list[tuple],
                tail: str, then: str = "") -> tuple[int, list[tuple]]:
    """PostgreSQL: COPY ``rows`` (tuples in ``columns`` order) into a temporary table of those
    columns, then insert them into ``table`` in one statement, in the order given, ending with
    ``tail`` (``ON CONFLICT …``, ``RETURNING …``). ``then``, when given, is a statement that
    reads what that insert returned as ``new`` (``INSERT INTO queue … SELECT … FROM new``), run
    as part of the same statement. COPY is the fastest way into PostgreSQL and the server plans
    and runs one statement for the batch, which also empties the temporary table. Answers the
    row count (of ``then`` when given) and the rows returned.

    The temporary table is made once per connection. Should it be gone all the same (a
    failed COMMIT, ``DISCARD TEMP``, a pooler that hands out server sessions per transaction:
    use session pooling), the batch fails as the database being unavailable would, and the
    next one makes it again.

    The rows go in PostgreSQL's binary format, typed as the temporary table's columns: 4 µs a
    row against 10 in the text format, for a ticket check (bench/README.md). A value must then
    be of its column's Python type (int for integers, float for double precision, datetime for
    timestamps, Decimal for numeric): the server converts no text."""
    create, describe, copy, insert = _copy_statements(table, columns, tail, then)
    staged = conn.connection.info.setdefault(_STAGED, {})
    cursor = conn.connection.driver_connection.cursor()
    try:
        with _driver_errors(conn, insert):
            if table not in staged:
                cursor.execute(create)
                cursor.execute(describe)
                staged[table] = [d.type_code for d in cursor.description]
            try:
                with cursor.copy(copy) as out:
                    out.set_types(staged[table])
                    for n, row in enumerate(rows):
                        out.write_row((*row, n))
            except conn.dialect.loaded_dbapi.errors.UndefinedTable as exc:
                staged.pop(table, None)
                raise OperationalError(copy, None, exc) from exc
            cursor.execute(insert)
            return cursor.rowcount, cursor.fetchall() if cursor.description else []
    finally:
        cursor.close()


# in a pooled connection's info: the column types of the tables copied into directly, and
# per table the batches still to leave to the caller's upsert, and how many the last refusal set
_DIRECT, _SKIP = "s360_direct_types", "s360_direct_skip"
_MOST_SKIPPED = 64


def copy_new(conn: Connection, table: str, columns: tuple[str, ...], rows: list[tuple],
             numbered: tuple[str, str, tuple] | None = None) -> list[int] | None:
    """PostgreSQL: COPY ``rows`` straight into ``table``, in a savepoint, when none of their
    keys is there yet. Answers None, with nothing written, when one is: the caller then upserts
    the batch (and the next 1, 2, 4 … 64 batches are its to upsert at once, without a try: a
    stream of updates costs one wasted copy in 64 batches). Else the ids of the rows, in order,
    when ``numbered``: the id column, and a statement (with its parameters) that answers one
    id per row, run in the savepoint in the same round trip (e.g. ``nextval`` of the column's
    sequence; the inbox's also queues them).

    Test the answer with ``is None``: a batch copied without ``numbered`` answers ``[]``. Call
    it once per table and transaction: its savepoint is left for the commit to release.

    About twice as fast on the server as ``copy_insert``'s staging table and upsert, for
    batches of new keys: a backlog of gate checks, a first import, arrivals. Each refused batch
    leaves a unique-violation error in the server's log, whose detail names the key."""
    skip = conn.connection.info.setdefault(_SKIP, {})
    left, last = skip.get(table, (0, 0))
    if left:
        skip[table] = (left - 1, last)
        return None
    ids, names = [], columns
    if numbered:
        column, numbering, params = numbered
        ids = sorted(i for (i,) in run_all(conn, [("SAVEPOINT s360_copy_new", ()),
                                                  (numbering, params)])[1])
        rows = [(i, *row) for i, row in zip(ids, rows, strict=True)]
        names = (column, *columns)
    else:
        run(conn, "SAVEPOINT s360_copy_new")
    cursor = conn.connection.driver_connection.cursor()
    try:
        with _driver_errors(conn, f"COPY {table}"):
            try:
                _copy(conn, cursor, table, names, rows)
            except conn.dialect.loaded_dbapi.errors.UniqueViolation:
                cursor.execute("ROLLBACK TO SAVEPOINT s360_copy_new")
                last = min(max(1, 2 * last), _MOST_SKIPPED)
                skip[table] = (last, last)
                return None
            skip[table] = (0, 0)
            return ids
    finally:
        cursor.close()


def _copy(conn: Connection, cursor, table: str, columns: tuple[str, ...],
          rows: list[tuple]) -> None:
    """Binary COPY, typed as the table's columns (asked once per connection)."""
    types = conn.connection.info.setdefault(_DIRECT, {})
    cols = ", ".join(f'"{c}"' for c in columns)
    if (table, columns) not in types:
        cursor.execute(f'SELECT {cols} FROM "{table}" LIMIT 0')
        types[(table, columns)] = [d.type_code for d in cursor.description]
    with cursor.copy(f'COPY "{table}" ({cols}) FROM STDIN (FORMAT BINARY)') as out:
        out.set_types(types[(table, columns)])
        for row in rows:
            out.write_row(row)


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
        return run_all(conn, [(sql, params)])[0]
    sql, params = _driver_form(conn, sql, params)
    cursor = conn.connection.driver_connection.cursor()
    try:
        with _driver_errors(conn, sql):
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
    driver = conn.connection.driver_connection
    if begins:  # psycopg would send its BEGIN alone and wait for the answer
        driver.autocommit = True
        conn.connection.info[_OWN_BEGIN] = True
        statements = [("BEGIN", ()), *statements]
    cursors = []
    try:
        with _driver_errors(conn, statements[0][0]), driver.pipeline():
            for sql, params in statements:
                statement = _driver_form(conn, sql, params)  # before the cursor copies the
                cursors.append(driver.cursor(binary=binary))  # connection's adapters
                cursors[-1].execute(*statement)
        rows = [c.fetchall() if c.description else [] for c in cursors]
        return rows[1:] if begins else rows
    finally:
        for c in cursors:
            c.close()


# in a pooled connection's info: run_all sent the BEGIN of its transaction itself, with
# psycopg in autocommit mode meanwhile (it then sends no BEGIN of its own, and commits and
# rolls back as usual); ``begin_as_usual`` ends that
_OWN_BEGIN = "s360_own_begin"


def _begins(conn: Connection) -> bool:
    """Does the next statement start the connection's transaction (PostgreSQL)? psycopg then
    sends a BEGIN first and, in a pipeline, waits for its answer: a round trip of its own."""
    if conn.dialect.name != "postgresql":
        return False
    driver = conn.connection.driver_connection
    return not driver.autocommit and driver.info.transaction_status == _IDLE


def begin_as_usual(dbapi_conn, info: dict) -> None:
    """Hand the transactions of a connection back to psycopg once the one ``run_all`` began
    is over (at the next transaction's start, and when the connection goes back to the
    pool): statements outside ``run_all`` must not run in autocommit mode. (A connection the
    pool invalidated has none: ``dbapi_conn`` None.)"""
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
