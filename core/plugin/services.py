"""Services beside streams: a plugin's HTTP routes and periodic work, configured per institution.

A stream is records S-360 (or another system) sends, stored and delivered by the engine. A
service is something the bridge *does* on request, such as creating offers in S-360: the plugin
serves its own routes (a Flask blueprint) and runs its own jobs, while the core gives it what a
stream gets: the institution's ``services:`` entry (enabled, auth, options), the receiver's
checks on each request (``service_request``), leases on its rows (``leases``) and the scheduler.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

# one periodic job of a service for one institution: (name, every_seconds, function)
Job = tuple[str, float, Callable[[], Any]]


@dataclass(frozen=True)
class Service:
    """A service a plugin offers: its routes (``blueprint``), the periodic jobs it runs for
    each institution that enables it (``jobs(bridge, institution, config)``), and the checks,
    at start-up, of its ``options:`` and of each caller's (raise ConfigError; a service
    without ``check_caller_options`` takes no ``callers``)."""

    name: str
    title: str
    blueprint: Any  # a flask.Blueprint whose routes take <code>; the core admits each request
    jobs: Callable[[Any, Any, Any], Iterable[Job]] | None = None
    check_options: Callable[[dict], None] | None = None
    check_caller_options: Callable[[dict], None] | None = None
