"""The base of every target (warehouse, CRM, file…) and the result of a push."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from s360bridge.core.errors import ConfigError


@dataclass
class PushResult:
    """What a push did: ``failed`` maps the index of an item that was refused to the reason."""

    failed: dict[int, str] = field(default_factory=dict)


class Target:
    """A configured destination. A target type subclasses this and sets ``kind``.

    Pushes must be idempotent: the engine may push a record again after a crash, and a target
    must never let an older version (smaller ``seq``) overwrite a newer one.
    """

    kind: ClassVar[str] = ""
    OPTIONS: ClassVar[frozenset[str] | None] = None  # the options it takes; None: not checked
    batch_size: int | None = None  # at most this many items per push; None: the whole batch
    uses_s360_api: ClassVar[bool] = False  # needs the institution's s360_api section

    def __init__(self, name: str, options: dict[str, Any], ctx: Any):
        self.name = name
        self.options = options
        self.ctx = ctx
        unknown = set(options) - self.OPTIONS if self.OPTIONS is not None else ()
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(sorted(unknown))} for a {self.kind} "
                              f"target (known: {', '.join(sorted(self.OPTIONS))})")

    def describe(self) -> str:
        """A one-line description for `status` and `plugins`, free of secrets."""
        return self.kind

    def close(self) -> None:
        """Release connections; called when the process stops."""
