"""The built-in ``sql`` target: DatX analytics tables in any SQLAlchemy database (SQLite default).

Stream plugins own their tables and their mapping (``transform`` returns WarehouseRow items);
this plugin creates the tables and upserts rows keyed by (institution, natural key), so that an
older version (smaller ``source_seq``) never overwrites a newer one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache, lru_cache

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Float,
    MetaData,
    String,
    Table,
    Text,
    Time,
    and_,
    bindparam,
    select,
    tuple_,
)
from sqlalchemy import delete as sql_delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from s360bridge.core.db import executemany, make_engine
from s360bridge.core.errors import ConfigError, TargetUnavailable
from s360bridge.core.hookspecs import hookimpl
from s360bridge.core.targets import PushResult, Target

METADATA = MetaData()  # every warehouse table, whichever stream plugin defines it
_DIALECTS = {"sqlite": sqlite, "postgresql": postgresql}


def warehouse_table(name: str, *columns: Column, child: bool = False) -> Table:
    """A warehouse table with the common columns: ``institution``, and on top-level tables the
    version (``source_seq``), arrival time and the raw JSON beside the typed columns."""
    common = [Column("institution", String(40), primary_key=True)]
    if not child:
        common += [Column("source_seq", BigInteger, nullable=False),
                   Column("received_at", Float, nullable=False),
                   Column("raw", Text, nullable=False)]
    return Table(name, METADATA, *common, *columns)


def _having_keys(columns: list, keys: list[tuple]):
    """``columns`` IN ``keys``, written so that every database uses the primary key index:
    the institution (first column) as an equality, the rest as a plain IN where it is one
    column."""
    institutions = {k[0] for k in keys}
    if len(institutions) != 1 or len(columns) != 2:
        return tuple_(*columns).in_(keys)
    return and_(columns[0] == institutions.pop(), columns[1].in_([k[1] for k in keys]))


@cache
def _primary_key(table: Table) -> tuple[str, ...]:
    return tuple(c.name for c in table.primary_key.columns)


@cache
def _upsert_statement(table: Table, dialect: str):
    """An upsert that never lets an older version (smaller ``source_seq``) win."""
    stmt = _DIALECTS[dialect].insert(table).values({c.name: bindparam(c.name)
                                                    for c in table.columns})
    return stmt.on_conflict_do_update(
        index_elements=list(table.primary_key.columns),
        set_={c.name: stmt.excluded[c.name] for c in table.columns if not c.primary_key},
        where=table.c.source_seq < stmt.excluded.source_seq)


_shapes: dict[tuple[Table, int], tuple[tuple[str, ...], tuple]] = {}


def _row_shape(table: Table, dialect) -> tuple[tuple[str, ...], tuple]:
    """The table's columns in order, and ``(index, conversion)`` of those whose Python values
    the driver cannot take as they are (date-times on SQLite). Date-times repeat across a
    batch (a burst of gate checks, one order's lines), so their conversions are memoised."""
    shape = _shapes.get((table, id(dialect)))
    if shape is None:
        convert = []
        for i, c in enumerate(table.columns):
            proc = c.type.dialect_impl(dialect).bind_processor(dialect)
            if proc is not None:
                memo = isinstance(c.type, DateTime | Date | Time)
                convert.append((i, lru_cache(maxsize=4096)(proc) if memo else proc))
        shape = _shapes[(table, id(dialect))] = (tuple(c.name for c in table.columns),
                                                  tuple(convert))
    return shape


@dataclass
class WarehouseRow:
    """One version of one record for a top-level table, with the child rows it owns."""

    table: Table
    values: dict
    children: dict[Table, list[dict]] = field(default_factory=dict)


class SqlTarget(Target):
    kind = "sql"
    OPTIONS = frozenset({"url", "sqlite_synchronous"})

    def __init__(self, name, options, ctx):
        super().__init__(name, options, ctx)
        if not options.get("url"):
            raise ConfigError("url: required, a SQLAlchemy database URL such as "
                              "sqlite:///var/warehouse.db")
        self.url = make_url(options["url"])
        engine_cfg = ctx.settings.engine
        try:
            self.engine = make_engine(options["url"], options.get(
                "sqlite_synchronous", engine_cfg.sqlite_synchronous),
                engine_cfg.sqlite_busy_timeout_seconds)
        except ConfigError as exc:
            raise ConfigError(f"url: {exc}") from None
        self._created: set[str] = set()

    def describe(self) -> str:
        return f"sql {self.url.render_as_string(hide_password=True)}"

    def _ensure(self, tables) -> None:
        missing = [t for t in tables if t.name not in self._created]
        if missing:
            with self.engine.connect().execution_options(write=True) as conn, conn.begin():
                METADATA.create_all(conn, tables=missing)
            self._created.update(t.name for t in missing)

    def upsert(self, rows: list[WarehouseRow]) -> None:
        """Write the newest version of each row; replace the children of the rows that won."""
        newest: dict = {}
        for row in rows:
            table = row.table
            pk = tuple(row.values[c] for c in _primary_key(table))
            old = newest.get((table, pk))
            if old is None or old.values["source_seq"] < row.values["source_seq"]:
                newest[(table, pk)] = row
        by_table: dict[Table, list[WarehouseRow]] = {}
        for (table, _), row in newest.items():
            by_table.setdefault(table, []).append(row)
        self._ensure({*by_table, *(c for r in newest.values() for c in r.children)})
        try:
            with self.engine.connect().execution_options(write=True) as conn, conn.begin():
                for table, group in by_table.items():
                    self._upsert_group(conn, table, group)
        except OperationalError as exc:
            raise TargetUnavailable(f"warehouse {self.describe()}: {exc.orig}") from exc

    def _upsert_group(self, conn, table: Table, group: list[WarehouseRow]) -> None:
        columns, convert = _row_shape(table, conn.dialect)
        rows = [tuple(map(r.values.get, columns)) for r in group]
        if convert:
            for n, row in enumerate(rows):
                row = list(row)
                for i, proc in convert:
                    if row[i] is not None:
                        row[i] = proc(row[i])
                rows[n] = tuple(row)
        executemany(conn, _upsert_statement(table, conn.dialect.name), columns, rows,
                    f"warehouse-upsert-{table.name}")
        if not any(r.children for r in group):
            return
        pk = list(table.primary_key.columns)
        keys = [tuple(r.values[c.name] for c in pk) for r in group]
        stored = dict((tuple(row[:-1]), row[-1]) for row in conn.execute(
            select(*pk, table.c.source_seq).where(_having_keys(pk, keys))))
        winners = [r for r, k in zip(group, keys, strict=True)
                   if stored.get(k) == r.values["source_seq"]]
        child_tables = {t for r in winners for t in r.children}
        for child in child_tables:
            win_keys = [tuple(r.values[c.name] for c in pk) for r in winners]
            conn.execute(sql_delete(child).where(
                _having_keys([child.c[c.name] for c in pk], win_keys)))
            rows = [v for r in winners for v in r.children.get(child, [])]
            if rows:
                conn.execute(child.insert(), rows)

    def delete(self, table: Table, where: dict) -> int:
        """Delete rows matching ``where`` (column → value); answer how many went."""
        self._ensure([table])
        with self.engine.connect().execution_options(write=True) as conn, conn.begin():
            cond = and_(*(table.c[k] == v for k, v in where.items()))
            return conn.execute(sql_delete(table).where(cond)).rowcount

    def close(self) -> None:
        self.engine.dispose()


@hookimpl
def register_targets(register):
    register("sql", SqlTarget)


@hookimpl
def push(institution, stream, target, items):
    if not isinstance(target, SqlTarget):
        return None
    target.upsert(items)
    return PushResult()
