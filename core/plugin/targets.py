"""The base of every target (warehouse, CRM, file…) and the result of a push."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, ClassVar

from s360bridge.core.config_secrets import Secret, reveal
from s360bridge.core.errors import ConfigError
from s360bridge.core.plugin.hookspecs import hookimpl
from s360bridge.core.redact import redact


@dataclass
class PushResult:
    """What a push did, item by item (by index in the pushed list): an item in neither map was
    delivered; one in ``retry`` is pushed again later, after the engine's backoff or at least
    ``wait[index]`` seconds; one in ``rejected`` is refused for good and becomes a dead letter
    at once (an operator may replay it)."""

    retry: dict[int, str] = field(default_factory=dict)
    rejected: dict[int, str] = field(default_factory=dict)
    wait: dict[int, float] = field(default_factory=dict)

    def retry_later(self, index: int, reason: str, after: float | None = None) -> None:
        self.retry[index] = reason
        if after:
            self.wait[index] = after

    def reject(self, index: int, reason: str) -> None:
        self.rejected[index] = reason


class Target:
    """A configured destination. A target type subclasses this and sets ``kind``.

    Pushes must be idempotent: after a crash the engine pushes the records in flight again,
    each with the same ``StoredRecord.idempotency_key``, by which a target drops what it has
    already taken; and a target must never let an older version (smaller ``seq``) overwrite
    a newer one.
    """

    kind: ClassVar[str] = ""
    OPTIONS: ClassVar[frozenset[str] | None] = None  # the options it takes; None: not checked
    batch_size: int | None = None  # at most this many items per push; None: the whole batch
    uses_s360_api: ClassVar[bool] = False  # needs the institution's s360_api section
    # option paths ("secret", "auth.password") that only take {$env: NAME}; their values
    # reach the target as Secret objects (``.value``), which never print
    SECRETS: ClassVar[frozenset[str]] = frozenset()
    # the option holding the URL of the SQL database it writes into (the sql target's "url"):
    # `s360bridge db backup` copies that database after the engine's
    DATABASE_OPTION: ClassVar[str | None] = None
    takes_contact_numbers: bool = False  # see write_contact_numbers
    # a push the engine must not repeat after a crash once it succeeded (a remote system):
    # the engine records it before the next push of the same claim; False for a store whose
    # writes are idempotent and cheap to redo (the warehouse's versioned upsert)
    records_progress: ClassVar[bool] = True

    def __init__(self, name: str, options: dict[str, Any], ctx: Any):
        self.name = name
        self.options = options
        self.ctx = ctx
        unknown = set(options) - self.OPTIONS if self.OPTIONS is not None else ()
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(sorted(unknown))} for a {self.kind} "
                              f"target (known: {', '.join(sorted(self.OPTIONS))})")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("describe")
        if own is not None:  # every target type's description is redacted, a plugin's too
            cls.describe = functools.wraps(own)(lambda self: redact(own(self)))

    def describe(self) -> str:
        """A one-line description for `status` and `plugins`; the engine masks in it the
        values read from ``$env`` and the user-info of URLs (core/redact.py)."""
        return self.kind

    def deliver(self, institution, stream, items: list) -> PushResult | None:
        """Deliver items (the ``push`` hook of ``target_hooks`` calls this); None: all taken."""
        raise NotImplementedError(f"a {self.kind} target delivers through its plugin's push hook")

    def reconcile_side(self, institution, stream: str, comparison) -> Any:
        """This target's side of a comparison (``Reconciliation``), or None: not comparable."""
        return None

    def write_contact_numbers(self, institution, pairs: list[dict]) -> None:
        """Tell the system the S-360 numbers of contacts created from its changes
        (``{"crm_id", "contact_number"}`` items); targets that can set takes_contact_numbers."""
        raise ConfigError(f"a {self.kind} target cannot take contact numbers back")

    def close(self) -> None:
        """Release connections; called when the process stops."""


def target_hooks(target_type: type[Target]):
    """The ``register_targets`` and ``push`` hooks of a plugin whose one target type delivers
    items itself (``Target.deliver``), which every built-in target plugin writes alike."""

    @hookimpl
    def register_targets(register):
        register(target_type.kind, target_type)

    @hookimpl
    def push(institution, stream, target, items):
        return target.deliver(institution, stream, items) or PushResult()

    return register_targets, push


def bind_options(options: dict, secrets: frozenset[str], path: str = "") -> dict:
    """Options as a target receives them: its declared secrets as ``Secret`` objects (written
    in clear text they are refused), every other ``$env`` reference as its plain value (a
    variable not set raises its error here: the target needs it)."""
    bound = {}
    for key, value in options.items():
        where = f"{path}{key}"
        if isinstance(value, dict):
            bound[key] = bind_options(value, secrets, where + ".")
        elif where in secrets:
            reveal(value)  # an Unset raises
            if not isinstance(value, Secret):
                raise ConfigError(f"{where}: a secret is written as {{$env: VARIABLE_NAME}}, "
                                  "never as a value")
            bound[key] = value
        elif isinstance(value, list):
            bound[key] = [reveal(v) for v in value]
        else:
            bound[key] = reveal(value)
    return bound
