"""COPY into PostgreSQL, the fastest way in: through a temporary staging table and one insert
(``copy_insert``), or straight into the table when a batch's keys are all new (``copy_new``).
The receiver's inbox and the warehouse targets write their batches this way (bench/README.md)."""

from __future__ import annotations

import zlib
from functools import lru_cache

from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

from s360bridge.core.storage.rawsql import driver, driver_errors, run, run_all


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
    cursor = driver(conn).cursor()
    try:
        with driver_errors(conn, insert):
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


def _skipping(conn: Connection, table: str) -> bool:
    """Whether this batch of ``table`` goes the slower way without a copy tried, the last one
    having been refused lately (on this connection); counted."""
    skip = conn.connection.info.setdefault(_SKIP, {})
    left, last = skip.get(table, (0, 0))
    if left:
        skip[table] = (left - 1, last)
    return bool(left)


def _tried(conn: Connection, table: str, refused: bool) -> None:
    """A copy refused: the next 1, 2, 4 … 64 batches skip it (doubling while refused); copied:
    none."""
    skip = conn.connection.info.setdefault(_SKIP, {})
    last = min(max(1, 2 * skip.get(table, (0, 0))[1]), _MOST_SKIPPED) if refused else 0
    skip[table] = (last, last)


def copy_new(conn: Connection, table: str, columns: tuple[str, ...], rows: list[tuple],
             numbered: tuple[str, str, tuple] | None = None) -> list[int] | None:
    """PostgreSQL: COPY ``rows`` straight into ``table``, in a savepoint, when none of their
    keys is there yet. Answers None, with nothing written, when one is: the caller then upserts
    the batch (and the next 1, 2, 4 … 64 batches are its to upsert at once, without a try: a
    stream of updates costs one wasted copy in 64 batches). Else the ids of the rows, in order,
    when ``numbered``: the id column, and a statement (with its parameters) that answers one
    id per row, run in the savepoint in the same round trip (e.g. ``nextval`` of the column's
    sequence; the inbox's also queues them). The n-th smallest id is the n-th row's.

    Test the answer with ``is None``: a batch copied without ``numbered`` answers ``[]``. Call
    it once per table and transaction: its savepoint is left for the commit to release.

    About twice as fast on the server as ``copy_insert``'s staging table and upsert, for
    batches of new keys: a backlog of gate checks, a first import, arrivals. Each refused batch
    leaves a unique-violation error in the server's log, whose detail names the key."""
    if _skipping(conn, table):
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
    cursor = driver(conn).cursor()
    try:
        with driver_errors(conn, f"COPY {table}"):
            try:
                _copy(conn, cursor, table, names, rows)
            except conn.dialect.loaded_dbapi.errors.UniqueViolation:
                cursor.execute("ROLLBACK TO SAVEPOINT s360_copy_new")
                _tried(conn, table, refused=True)
                return None
            _tried(conn, table, refused=False)
            return ids
    finally:
        cursor.close()


def copy_alone(conn: Connection, table: str, columns: tuple[str, ...],
               rows: list[tuple]) -> int | None:
    """PostgreSQL, on a connection in autocommit (``db.alone``): COPY ``rows`` into ``table`` as
    a statement of its own, committed when the server answers: two round trips, where a
    transaction takes four. Answers how many rows it inserted; None, with nothing written,
    when one of their keys is there, and then for the next 1, 2, 4 … 64 batches without a try
    (as ``copy_new``): the caller stores those in a transaction."""
    if _skipping(conn, table):
        return None
    cursor = driver(conn).cursor()
    try:
        with driver_errors(conn, f"COPY {table}"):
            try:
                _copy(conn, cursor, table, columns, rows)
            except conn.dialect.loaded_dbapi.errors.UniqueViolation:
                _tried(conn, table, refused=True)
                return None
        _tried(conn, table, refused=False)
        return cursor.rowcount
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
