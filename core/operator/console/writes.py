"""The console's actions on a database that takes no writes: a PostgreSQL hot standby, or a
session with ``default_transaction_read_only`` (docs/production.md: a console on the standby
reads, and its actions belong to one on the primary).

Each action asks the engine database first (``check_writable``) and, when it is read-only,
answers 503 with a page that says so, before anything is written: an action that writes to
several stores (``forget``) never stops half way for that reason. A write refused anyway as
read-only (SQLSTATE 25006, e.g. a warehouse on the standby) gets the same page, which then
says that the action stopped at that write.
"""

from __future__ import annotations

from flask import Blueprint, render_template
from sqlalchemy.exc import DBAPIError

READ_ONLY_SQLSTATE = "25006"  # read_only_sql_transaction, as a hot standby answers a write
_READ_ONLY = "SELECT current_setting('transaction_read_only'), pg_is_in_recovery()"


class ReadOnly(Exception):
    """The engine database takes no writes: nothing was done."""


def check_writable(bridge) -> None:
    """Raise ReadOnly when the engine database would refuse this process's writes."""
    if bridge.engine.dialect.name != "postgresql":
        return  # SQLite has no standby; a file it cannot write fails the action's commit
    with bridge.engine.connect() as conn:
        read_only, standby = conn.exec_driver_sql(_READ_ONLY).one()
    if read_only == "on":
        raise ReadOnly("The engine database is a hot standby, which takes no writes."
                       if standby else "The engine database takes no writes from this console "
                       "(default_transaction_read_only is on for its sessions).")


def register_handlers(bp: Blueprint) -> None:
    @bp.errorhandler(ReadOnly)
    def _read_only(exc: ReadOnly):
        return render_template("console/read_only.html", message=str(exc), stopped=False), 503

    @bp.errorhandler(DBAPIError)
    def _refused(exc: DBAPIError):
        if getattr(exc.orig, "sqlstate", None) != READ_ONLY_SQLSTATE:
            raise exc  # any other failure: as without this handler
        message = str(exc.orig).strip().splitlines()[0]
        return render_template("console/read_only.html", stopped=True,
                               message=f"A database refused to write: {message}."), 503
