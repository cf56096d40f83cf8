"""The built-in ``sql`` target: DatX analytics tables in any SQLAlchemy database (SQLite default).

Stream plugins own their tables and their mapping (``transform`` returns WarehouseRow items);
this plugin creates the tables and upserts rows keyed by (institution, natural key), so that an
older version (smaller ``source_seq``) never overwrites a newer one.
"""

from __future__ import annotations

from sqlalchemy import Table, and_, text
from sqlalchemy import delete as sql_delete
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from s360bridge.core.api import (
    WAREHOUSE,
    ConfigError,
    Target,
    TargetUnavailable,
    WarehouseRow,
    hookimpl,
    index_plans_only,
    make_engine,
    target_hooks,
)

from . import upsert
from .reconcile import warehouse_side

TABLES_LOCK = 0x7333_3630_6477_6874  # "s360dwht": PostgreSQL's advisory lock of table creation


class SqlTarget(Target):
    kind = "sql"
    records_progress = False  # a versioned upsert: pushing a batch again only rewrites it
    OPTIONS = frozenset({"url", "sqlite_synchronous"})
    DATABASE_OPTION = "url"  # `s360bridge db backup` copies the warehouse

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
                if conn.dialect.name == "postgresql":  # two workers' first batches: in turn
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                 {"key": TABLES_LOCK})
                WAREHOUSE.create_all(conn, tables=missing)
            self._created.update(t.name for t in missing)

    def upsert(self, rows: list[WarehouseRow]) -> None:
        """Write the newest version of each row; replace the children of the rows that won."""
        newest: dict = {}
        for row in rows:
            table = row.table
            pk = tuple(row.values[c] for c in upsert.primary_key(table))
            old = newest.get((table, pk))
            if old is None or old.values["source_seq"] < row.values["source_seq"]:
                newest[(table, pk)] = row
        by_table: dict[Table, list[WarehouseRow]] = {}
        for (table, _), row in newest.items():
            by_table.setdefault(table, []).append(row)
        try:  # a warehouse that cannot be reached is down as a whole, from the first query
            self._ensure({*by_table, *(c for r in newest.values() for c in r.children)})
            with self.engine.connect().execution_options(write=True) as conn, conn.begin():
                for table, group in by_table.items():
                    self._upsert_group(conn, table, group)
        except OperationalError as exc:
            raise TargetUnavailable(f"warehouse {self.describe()}: {exc.orig}") from exc

    def _upsert_group(self, conn, table: Table, group: list[WarehouseRow]) -> None:
        with_children = any(r.children for r in group)
        won = upsert.write(conn, table, [r.values for r in group], with_children)
        if not with_children:
            return
        pk = upsert.primary_key(table)
        winners = [r for r in group if tuple(r.values[c] for c in pk) in won]
        if not winners:
            return
        win_keys = [tuple(r.values[c] for c in pk) for r in winners]
        index_plans_only(conn)
        for child in {t for r in winners for t in r.children}:
            upsert.replace_children(conn, child, pk, win_keys,
                                    [v for r in winners for v in r.children.get(child, [])])

    def delete(self, table: Table, where: dict) -> int:
        """Delete rows matching ``where`` (column → value); answer how many went."""
        self._ensure([table])
        with self.engine.connect().execution_options(write=True) as conn, conn.begin():
            cond = and_(*(table.c[k] == v for k, v in where.items()))
            return conn.execute(sql_delete(table).where(cond)).rowcount

    def deliver(self, institution, stream, items):
        self.upsert(items)

    def reconcile_side(self, institution, stream, comparison):
        return warehouse_side(self, institution, comparison)

    def close(self) -> None:
        self.engine.dispose()


register_targets, push = target_hooks(SqlTarget)


@hookimpl
def forget(bridge, institution, contact_number):
    """The contact's rows in every warehouse table that declares a personal key."""
    removed = []
    personal = [t for t in WAREHOUSE.sorted_tables if t.info.get("personal_key")]
    for target in bridge.targets_of(institution, SqlTarget.kind):
        for table in personal:
            n = target.delete(table, {"institution": institution.code,
                                      table.info["personal_key"]: contact_number})
            removed.append(f"target {target.name}: {n} row(s) from table {table.name}")
    return removed
