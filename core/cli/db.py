"""``s360bridge db``: the engine database's schema, its migrations and their upgrade; backups
of the engine database and the warehouses."""

from __future__ import annotations

from pathlib import Path

import click

from s360bridge.core.cli.common import config_option, open_bridge
from s360bridge.core.errors import S360BridgeError
from s360bridge.core.storage import backup, migrate


@click.group()
def db():
    """The engine database's schema: which migrations it has, and the upgrade; backups."""


@db.command()
@config_option
def upgrade(configs):
    """Apply the migrations the engine database lacks (processes starting together upgrade
    once)."""
    bridge = open_bridge(configs, schema="ignore", lazy=True)
    try:
        applied = migrate.upgrade(bridge.engine, bridge.hooks.migrations())
    finally:
        bridge.close()
    click.echo(f"applied {', '.join(applied)}" if applied else "the schema is up to date")


@db.command()
@config_option
def current(configs):
    """Each branch of the schema: the revision the database is at, and the one needed."""
    for branch in _branches(configs):
        needs = f"  (this version needs {branch.head})" if branch.outdated else ""
        click.echo(f"{branch.label:<12} {branch.applied or 'none'}{needs}")


@db.command()
@config_option
@click.pass_context
def check(ctx, configs):
    """Exit with status 1 while a migration is pending."""
    outdated = [b for b in _branches(configs) if b.outdated]
    for branch in outdated:
        click.echo(f"{branch.label}: at {branch.applied or 'none'}, needs {branch.head}")
    if outdated:
        click.echo("pending migrations: run `s360bridge db upgrade "
                   f"{' '.join(f'-c {c}' for c in configs)}`")
        ctx.exit(1)
    click.echo("the schema is up to date")


def _branches(configs) -> list[migrate.Branch]:
    bridge = open_bridge(configs, schema="ignore", lazy=True)
    try:
        return migrate.branches(bridge.engine, bridge.hooks.migrations())
    finally:
        bridge.close()


@db.command("backup")
@config_option
@click.option("--to", "folder", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder of the copies, made if missing; a file there is never overwritten.")
@click.pass_context
def backup_databases(ctx, configs, folder):
    """Copy the engine database and the warehouses that are on SQLite, consistently while the
    bridge runs; for those on PostgreSQL, print the pg_dump command and exit with status 1."""
    bridge = open_bridge(configs, schema="ignore", lazy=True)
    try:
        found = backup.databases(bridge)
        busy_timeout = bridge.settings.engine.sqlite_busy_timeout_seconds
    finally:
        bridge.close()
    for db in found:
        if db.path is not None and not db.path.is_file():
            raise S360BridgeError(f"{db.label}: {db.path}: no such SQLite database (a relative "
                                  "path is taken from the current folder: run this where the "
                                  "bridge runs)")
        if (folder / db.name).exists():
            raise S360BridgeError(f"{folder / db.name} exists already: back up into a new "
                                  "folder")
    folder.mkdir(parents=True, exist_ok=True)
    dumps = []
    for db in found:  # the engine database first (core/storage/backup.py says why)
        if db.path is None:
            dumps.append(f"{db.label} is on PostgreSQL: back it up with\n"
                         f"  {backup.pg_dump_command(db.url, folder / db.name)}")
            continue
        backup.copy_sqlite(db.path, folder / db.name, busy_timeout, db.engine)
        click.echo(f"{db.label}: {db.path} -> {folder / db.name}")
    for text in dumps:
        click.echo(text, err=True)
    if dumps:
        ctx.exit(1)
