"""The warehouse's side of a reconciliation: its rows, read through the target's connection."""

from __future__ import annotations

from sqlalchemy import Table, select
from sqlalchemy import delete as sql_delete

from s360bridge.core.operations.reconcile import Field, Reconciliation, Side

from . import SqlTarget


def warehouse_side(target: SqlTarget, institution, table: Table, key: Field,
                   fields: list[Field], columns: dict[str, str]) -> Reconciliation:
    """Compare ``fields`` with ``table``, whose column of each field is ``columns[name]``;
    amounts are stored in thousandths and times as UTC, as every stream writes them."""
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
