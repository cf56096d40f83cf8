"""The hook specifications every s360bridge plugin implements a part of.

Connector hooks (``receive``, ``transform``, ``push``, ``reconcile``) work on batches of records;
the core calls each one only on the plugin that declared it: ``receive`` and ``reconcile`` on
the plugin that registered the stream, ``push`` on the one that registered the target type,
``transform`` on the one that registered the (stream, target type) pair. Registration hooks take
a ``register`` callback. Each hook is documented in docs/plugins.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click

    from s360bridge.core.config import Institution
    from s360bridge.core.operations.reconcile import Reconciliation
    from s360bridge.core.plugin.services import Service
    from s360bridge.core.plugin.streams import ReceivedBatch, Stream
    from s360bridge.core.plugin.targets import PushResult, Target

hookspec = pluggy.HookspecMarker("s360bridge")
hookimpl = pluggy.HookimplMarker("s360bridge")


@hookspec
def register_streams(register: Callable[[Stream], None]) -> None:
    """Register the streams (contacts, orders, …) this plugin knows, with their schema and key."""


@hookspec
def register_services(register: Callable[[Service], None]) -> None:
    """Register services (routes and periodic work configured under ``services:``)."""


@hookspec
def register_targets(register: Callable[[str, Callable[..., Target]], None]) -> None:
    """Register target types by name (e.g. ``sql``) with a factory ``(name, options, ctx)``."""


@hookspec
def register_transforms(register: Callable[..., None]) -> None:
    """Declare the (stream, target type) pairs ``transform`` maps, as ``register(stream, kind)``."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``s360bridge`` command-line interface."""


@hookspec
def register_routes(register: Callable[[Any], None]) -> None:
    """Register Flask blueprints served by the receiver beside the S-360 endpoints."""


@hookspec
def register_migrations(register: Callable[[Any], None]) -> None:
    """Register the Alembic versions folder (a path, or its package) of the tables it owns."""


@hookspec
def register_jobs(register: Callable[[str, float, Callable[[], Any]], None], bridge: Any) -> None:
    """Register periodic jobs as ``register(name, every_seconds, function)``."""


@hookspec
def register_gauges(register: Callable[[str, str, Sequence[str], Callable[[], Any]], None],
                    bridge: Any) -> None:
    """Register gauges ``/metrics`` reads once per scrape, as ``register(name, help, labels,
    read)``; ``read()`` answers ``(label values, value)`` pairs."""


@hookspec
def register_operator_pages(register: Callable[[Any, str, str], None], bridge: Any) -> None:
    """Add pages to the operator's console: ``register(blueprint, title, endpoint)``."""


@hookspec(firstresult=True)
def receive(
    institution: Institution, stream: Stream, records: Sequence[Any]
) -> ReceivedBatch | None:
    """Validate and key an incoming batch of a stream this plugin registered."""


@hookspec(firstresult=True)
def transform(
    institution: Institution, stream: Stream, target: Target, records: Sequence[dict]
) -> list | None:
    """Map stored records into the items ``target`` takes, one per record, in order."""


@hookspec(firstresult=True)
def push(
    institution: Institution, stream: Stream, target: Target, items: list
) -> PushResult | None:
    """Deliver items to a target of a type this plugin registered, idempotently."""


@hookspec(firstresult=True)
def reconcile(institution: Institution, stream: Stream, target: Target) -> Reconciliation | None:
    """Say how to compare the stream's S-360 export with a target's side, by unique key."""


@hookspec
def forget(bridge: Any, institution: Institution, contact_number: str) -> list[str] | None:
    """Erase one contact's personal data from a store this plugin owns; say what was removed."""
