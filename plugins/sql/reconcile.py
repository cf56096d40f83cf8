"""The warehouse's side of a reconciliation: its rows, read through the target's connection."""

from __future__ import annotations

from sqlalchemy import Table, select
from sqlalchemy import delete as sql_delete

from s360bridge.core.api import Comparison, Field, Reconciliation, Side


def warehouse_side(target, institution, comparison: Comparison) -> Reconciliation | None:
    """Compare the fields with the stream's warehouse table, whose column of each field is
    ``comparison.columns[name]``; amounts are stored in thousandths and times as UTC, as every
    stream writes them. None when the stream has no warehouse table."""
    table: Table | None = comparison.table
    if table is None:
        return None
    key, fields, columns = comparison.key, comparison.fields, comparison.columns
    key_col = table.c[columns[key.name]]
    as_key = key_col.type.python_type

    def rows(compared: list[Field]):
        cols = [key_col, *(table.c[columns[f.name]] for f in compared)]
        target._ensure([table])
        with target.engine.connect().execution_options(stream_results=True) as conn:
            result = conn.execute(select(*cols).where(table.c.institution == institution.code))
            for chunk in result.partitions(10_000):
                yield from chunk

    def drop(keys: list[str]) -> None:
        with target.engine.connect().execution_options(write=True) as conn, conn.begin():
            for i in range(0, len(keys), 500):
                conn.execute(sql_delete(table).where(
                    table.c.institution == institution.code,
                    key_col.in_([as_key(k) for k in keys[i:i + 500]])))

    side = Side({f.name: f.name for f in (key, *fields)}, "thousandths", "UTC")
    return Reconciliation(key, fields, side, target_rows=rows, drop=drop)
