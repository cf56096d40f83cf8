"""What every ``s360bridge`` command shares: the error handling, the config option, the bridge."""

from __future__ import annotations

import logging
import traceback

import click
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from s360bridge.core.bridge import Bridge
from s360bridge.core.config import Institution, load_settings
from s360bridge.core.errors import S360BridgeError
from s360bridge.core.storage.db import user_error

CONFIG_HELP = "Institution YAML file, or a folder of them (repeatable)."


class CLIGroup(click.Group):
    """Turns our own errors, and a database that fails a command, into one clear line and
    exit status 2 (a JSON object with ``--log-format json``); the traceback only with
    ``--debug``."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (S360BridgeError, DBAPIError, PoolTimeout) as exc:
            if ctx.params.get("debug"):
                traceback.print_exc()
            if ctx.params.get("log_format") == "json":  # the log's format: one object a line
                logging.getLogger("s360bridge.cli").error("error: %s", user_error(exc))
            else:
                click.echo(f"error: {user_error(exc)}", err=True)
            ctx.exit(2)


def config_option(func):
    return click.option("--config", "-c", "configs", multiple=True, required=True,
                        type=click.Path(exists=True), help=CONFIG_HELP)(func)


def open_bridge(configs, receiving: bool = False, schema: str = "require",
                lazy: bool = False) -> Bridge:
    """The Bridge of the given files; only receiving processes need the webhook credentials,
    and a ``lazy`` command (status, replay…) needs a stream's or a target's only where it
    uses it. ``schema``: see Bridge (only ``run`` upgrades by itself)."""
    return Bridge(load_settings(configs, receiver_secrets=receiving, lazy=lazy), schema=schema)


def institution_of(bridge: Bridge, code: str) -> Institution:
    inst = bridge.institution(code)
    if inst is None:
        known = ", ".join(sorted(bridge.settings.institutions))
        raise S360BridgeError(f"unknown institution {code!r} (configured: {known})")
    return inst
