"""Backups of the databases a configuration names (``s360bridge db backup``): the engine
database, then the database of each target that writes one (the ``sql`` targets' warehouses).

A SQLite database is copied with SQLite's online backup API in one step: one read transaction,
which in WAL mode blocks no writer, so the copy is the database as of one commit while the
bridge runs. The engine database is copied first: a warehouse copied after it holds at least
what the engine's copy says was delivered, and a restored engine delivers again what its
warehouse lacks (the warehouse's upserts are versioned: a repeat changes nothing). That
warehouse may also hold versions stored after the engine's copy, numbered past what the copy
has given: the copy counts on a billion ids further (``AHEAD``), so that a restored engine
never numbers a new version below them (the warehouse would refuse it as older). A database on
PostgreSQL is not copied: the backup names the pg_dump command to run instead.
"""

from __future__ import annotations

import os
import re
import shlex
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from s360bridge.core.config_secrets import reveal
from s360bridge.core.errors import S360BridgeError


@dataclass(frozen=True)
class Database:
    """One database to back up: what it is (``label``), its URL, and the file name of its copy
    in the backup folder."""

    label: str
    url: URL
    name: str
    engine: bool = False  # the engine database (its inbox numbers versions)

    @property
    def path(self) -> Path | None:
        """The file of a SQLite database; None on PostgreSQL."""
        return Path(self.url.database) if self.url.get_backend_name() == "sqlite" else None


def databases(bridge) -> list[Database]:
    """The engine database, then each target's that writes one (a target type names the
    option holding its URL: ``Target.DATABASE_OPTION``), each once. A URL read from a variable
    that is not set raises its error here, before anything is copied."""
    engine = make_url(bridge.settings.engine.database_url)
    found = [Database("the engine database", engine, _name(engine, "engine"), engine=True)]
    for inst in bridge.settings.institutions.values():
        for name, cfg in inst.targets.items():
            option = getattr(bridge.hooks.target_types.get(cfg.type), "DATABASE_OPTION", None)
            if option and cfg.options.get(option) is not None:
                url = make_url(reveal(cfg.options[option]))
                found.append(Database(f"target {name} of {inst.code}", url,
                                      _name(url, f"{inst.code}-{name}")))
    unique: dict = {}
    for db in found:
        if db.path is not None and db.url.database in ("", ":memory:"):
            continue  # in memory: nothing outlives the process
        unique.setdefault(db.path.resolve() if db.path else db.url, db)
    names = [db.name for db in unique.values()]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise S360BridgeError(f"two databases would be copied to {', '.join(twice)}: their "
                              "files have the same name; back them up one configuration at a "
                              "time")
    return list(unique.values())


def _name(url: URL, label: str) -> str:
    """The copy's file name: a SQLite file's own name; ``label.dump`` for PostgreSQL."""
    if url.get_backend_name() == "sqlite":
        return Path(url.database or "memory").name
    return f"{label}.dump"


AHEAD = 1_000_000_000  # ids a restored engine skips (as engine_0013 does): 64-bit, plenty


def copy_sqlite(source: Path, to: Path, busy_timeout: float = 10.0,
                engine: bool = False) -> None:
    """Copy the SQLite database ``source`` to ``to`` as of one commit, while other processes
    read and write it; the copy is written beside ``to`` and renamed when complete. The copy
    of the ``engine`` database counts its inbox's ids on by ``AHEAD``."""
    part = to.with_name(f".{to.name}.part")
    src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=rw", uri=True,
                          timeout=busy_timeout)  # never creates the file
    try:
        dst = sqlite3.connect(part)
        try:
            src.backup(dst)  # every page in one step: one read transaction, one snapshot
            if engine and dst.execute("SELECT 1 FROM sqlite_master "
                                      "WHERE name = 'sqlite_sequence'").fetchone():
                with dst:  # (before engine_0013, whose upgrade of the copy counts on itself)
                    dst.execute("UPDATE sqlite_sequence SET seq = seq + ? WHERE name = 'inbox'",
                                (AHEAD,))
        finally:
            dst.close()
    finally:
        src.close()
    fd = os.open(part, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(part, to)
    fd = os.open(to.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename too
    finally:
        os.close(fd)


def pg_dump_command(url: URL, to: Path) -> str:
    """The pg_dump command that backs up a PostgreSQL database (its schema alone when the URL
    sets a ``search_path``), in pg_dump's custom format for pg_restore; the password is left
    to ``PGPASSWORD`` or ``~/.pgpass``."""
    options = url.query.get("options")
    schemas = re.findall(r"-c\s*search_path=([^\s]+)", options if isinstance(options, str)
                         else " ".join(options or ()))
    libpq = URL.create("postgresql", url.username, None, url.host, url.port, url.database,
                       url.query)  # no password: it would print
    args = ["pg_dump", "--format=custom", f"--file={to}",
            f"--dbname={libpq.render_as_string(hide_password=False)}"]
    args += [f"--schema={s}" for found in schemas for s in found.split(",") if s]
    return shlex.join(args)
