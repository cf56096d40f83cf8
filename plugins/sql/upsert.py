"""Writing a batch of warehouse rows: the newest version of each key wins, and the caller learns
which rows won (their children are replaced).

SQLite runs a compiled upsert once per row on the driver (in C), then reads back which
versions are stored. PostgreSQL copies the batch into a temporary table (``COPY``, the fastest
way in) and upserts from it in one statement whose ``RETURNING`` names the rows that won: no
read before or after, and no plan that statistics could spoil.
"""

from __future__ import annotations

from functools import cache, lru_cache

from sqlalchemy import Date, DateTime, Table, Time, and_, bindparam, select, tuple_

from s360bridge.core.api import (
    copy_insert,
    copy_new,
    dialect_insert,
    driver,
    executemany,
    run,
)


@cache
def primary_key(table: Table) -> tuple[str, ...]:
    return tuple(c.name for c in table.primary_key.columns)


def _one_institution(columns: list, keys: list[tuple]) -> str | None:
    """The institution of every key, when the keys are (institution, one more column) and
    that column holds plain numbers or text."""
    institutions = {k[0] for k in keys}
    if len(institutions) != 1 or len(columns) != 2 or \
            not all(isinstance(k[1], int | str) for k in keys):
        return None
    return next(iter(institutions))


def _key_list(names: list[str]) -> str:
    """SQLite: ``names`` (institution, one more column) matching an institution and a list,
    read through the primary key (``run``'s list parameter: one JSON array)."""
    return f'"{names[0]}" = ? AND "{names[1]}" IN ?texts'


def having_keys(columns: list, keys: list[tuple]):
    """``columns`` IN ``keys``, written so that every database uses the primary key index:
    the institution (first column) as an equality, the rest as a plain IN where it is one
    column."""
    institution = _one_institution(columns, keys)
    if institution is None:
        return tuple_(*columns).in_(keys)
    return and_(columns[0] == institution, columns[1].in_([k[1] for k in keys]))


@cache
def upsert_statement(table: Table, dialect: str):
    """An upsert that never lets an older version (smaller ``source_seq``) win."""
    stmt = dialect_insert(dialect, table).values({c.name: bindparam(c.name)
                                                    for c in table.columns})
    return stmt.on_conflict_do_update(
        index_elements=list(table.primary_key.columns),
        set_={c.name: stmt.excluded[c.name] for c in table.columns if not c.primary_key},
        where=table.c.source_seq < stmt.excluded.source_seq)


_shapes: dict[tuple[Table, str], tuple[tuple[str, ...], tuple]] = {}


def _row_shape(table: Table, dialect) -> tuple[tuple[str, ...], tuple]:
    """The table's columns in order, and ``(index, conversion)`` of those whose Python values
    the driver cannot take as they are (date-times on SQLite). Date-times repeat across a
    batch (a burst of gate checks, one order's lines), so their conversions are memoised."""
    shape = _shapes.get((table, dialect.name))
    if shape is None:
        convert = []
        for i, c in enumerate(table.columns):
            proc = c.type.dialect_impl(dialect).bind_processor(dialect)
            if proc is not None:
                memo = isinstance(c.type, DateTime | Date | Time)
                convert.append((i, _memoised(proc) if memo else proc))
        shape = _shapes[(table, dialect.name)] = (tuple(c.name for c in table.columns),
                                                   tuple(convert))
    return shape


def _memoised(proc):
    """``proc`` remembered for naive values; an aware date-time equals the same instant at
    another offset, so it is converted every time."""
    memo = lru_cache(maxsize=4096)(proc)
    return lambda v: memo(v) if getattr(v, "tzinfo", None) is None else proc(v)


def _tuples(table: Table, dialect, values: list[dict]) -> tuple[tuple[str, ...], list[tuple]]:
    columns, convert = _row_shape(table, dialect)
    rows = [tuple(map(v.get, columns)) for v in values]
    for n, row in enumerate(rows) if convert else ():
        row = list(row)
        for i, proc in convert:
            if row[i] is not None:
                row[i] = proc(row[i])
        rows[n] = tuple(row)
    return columns, rows


def write(conn, table: Table, values: list[dict], want_winners: bool) -> set[tuple] | None:
    """Upsert ``values`` (one dict per row, one row per key); with ``want_winners``, answer
    the primary keys of the rows whose version is now the stored one."""
    if conn.dialect.name == "postgresql":
        return _copy_upsert(conn, table, values, want_winners)
    columns, rows = _tuples(table, conn.dialect, values)
    executemany(conn, upsert_statement(table, conn.dialect.name), columns, rows,
                f"warehouse-upsert-{table.name}")
    if not want_winners:
        return None
    pk = list(table.primary_key.columns)
    keys = [tuple(v[c.name] for c in pk) for v in values]
    institution = _one_institution(pk, keys)
    if institution is None:
        found = conn.execute(select(*pk, table.c.source_seq).where(having_keys(pk, keys)))
    else:  # on the driver, the list as one parameter: no SQLAlchemy parameter per key
        found = run(conn, f'SELECT "{pk[0].name}", "{pk[1].name}", source_seq FROM '
                          f'"{table.name}" WHERE {_key_list([c.name for c in pk])}',
                    (institution, [k[1] for k in keys]))
    stored = {tuple(row[:-1]): row[-1] for row in found}
    return {k for k, v in zip(keys, values, strict=True) if stored.get(k) == v["source_seq"]}


@cache
def _plain_insert(table: Table, dialect: str):
    return dialect_insert(dialect, table).values({c.name: bindparam(c.name)
                                                  for c in table.columns})


@cache
def _conflict(table: Table, same_wins: bool = False) -> str:
    """What the copied batch does to rows already there: the newer version wins (and the same
    version again, where its children are to be written again, as the read-back counts it)."""
    pk = ", ".join(f'"{c}"' for c in primary_key(table))
    updates = ", ".join(f'"{c.name}" = excluded."{c.name}"' for c in table.columns
                        if not c.primary_key)
    return (f"ON CONFLICT ({pk}) DO UPDATE SET {updates} "
            f'WHERE "{table.name}".source_seq {"<=" if same_wins else "<"} excluded.source_seq')


def _copy_upsert(conn, table: Table, values: list[dict], want_winners: bool):
    """Copy the batch straight into the table while its keys are new (``copy_new``), else
    upsert it from the staging table."""
    columns, rows = _tuples(table, conn.dialect, values)
    if copy_new(conn, table.name, columns, rows) is not None:
        return {tuple(v[c] for c in primary_key(table)) for v in values} \
            if want_winners else None
    tail = _conflict(table, same_wins=want_winners)
    if want_winners:
        tail += " RETURNING " + ", ".join(f'"{c}"' for c in primary_key(table))
    _, won = copy_insert(conn, table.name, columns, rows, tail)
    return {tuple(r) for r in won} if want_winners else None


@cache
def _children_delete(child: Table, key_columns: tuple[str, ...], dialect) -> str:
    """PostgreSQL: the rows of ``child`` under the listed parent keys, found by one probe of
    its primary key per parent (a LATERAL that is not flattened), deleted by row address; as
    a plain list, an unanalyzed table would let the planner scan every row of the
    institution."""
    types = [child.c[c].type.compile(dialect=dialect) for c in key_columns]
    arrays = ", ".join(f"%s::{t}[]" for t in types)
    names = ", ".join(f"k{i}" for i in range(len(key_columns)))
    match = " AND ".join(f'"{c}" = k.k{i}' for i, c in enumerate(key_columns))
    return (f'DELETE FROM "{child.name}" WHERE ctid = ANY(ARRAY(SELECT c.ctid FROM '
            f"unnest({arrays}) AS k({names}), LATERAL (SELECT ctid FROM \"{child.name}\" "
            f"WHERE {match} OFFSET 0) AS c))")


def replace_children(conn, child: Table, key_columns: tuple[str, ...], keys: list[tuple],
                     rows: list[dict]) -> None:
    """Delete the rows of ``child`` under the parents ``keys`` and insert ``rows``. On SQLite
    both on the driver (the keys as one list parameter, the rows as plain tuples through a
    statement compiled once): through SQLAlchemy, an order's five child rows cost more than
    the rest of its delivery (bench/README.md, the initial import)."""
    if conn.dialect.name != "postgresql":
        institution = _one_institution(list(key_columns), keys)
        if institution is None:
            conn.execute(child.delete().where(having_keys([child.c[c] for c in key_columns],
                                                          keys)))
        else:
            run(conn, f'DELETE FROM "{child.name}" WHERE {_key_list(list(key_columns))}',
                (institution, [k[1] for k in keys]))
        if rows:
            columns, tuples = _tuples(child, conn.dialect, rows)
            executemany(conn, _plain_insert(child, conn.dialect.name), columns, tuples,
                        f"warehouse-insert-{child.name}")
        return
    cursor = driver(conn).cursor()
    try:
        cursor.execute(_children_delete(child, key_columns, conn.dialect),
                       [list(column) for column in zip(*keys, strict=True)])
    finally:
        cursor.close()
    if rows:
        columns, tuples = _tuples(child, conn.dialect, rows)
        copy_insert(conn, child.name, columns, tuples, "")
