"""``s360bridge db``: the engine database's schema, its migrations and their upgrade."""

from __future__ import annotations

import click

from s360bridge.core.cli.common import config_option, open_bridge
from s360bridge.core.storage import migrate


@click.group()
def db():
    """The engine database's schema: which migrations it has, and the upgrade."""


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
