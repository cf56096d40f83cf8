"""Error classes, each with a message written for the person who has to act on it."""

from s360bridge.core.redact import redact


class S360BridgeError(Exception):
    """Base class of every error s360bridge raises on purpose. Its message is redacted as it
    is formed (core/redact.py): no secret reaches a log, a stored ``last_error`` or a screen
    through it."""

    def __init__(self, *args):
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))


class ConfigError(S360BridgeError):
    """A configuration file is missing, malformed or inconsistent."""


class PluginError(S360BridgeError):
    """A plugin is broken, or no plugin answers a hook that needs an answer."""


class TargetUnavailable(S360BridgeError):
    """A target cannot be reached right now: retry the whole batch later, do not split it."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class ServerError(TargetUnavailable):
    """The target answered a plain server error (HTTP 500) to a batch: perhaps one item is at
    fault, so the engine halves the batch; if both halves fail alike, the target is down."""


class StoreUnavailable(S360BridgeError):
    """The engine's database could not commit (down, or locked past its timeout)."""


class Undeliverable(PluginError):
    """No loaded plugin can deliver a stream to a target type: a permanent error for the
    records concerned (dead letters at once), never an outage to wait out."""


class OutdatedSchema(S360BridgeError):
    """The engine database's schema is older than this version needs: `s360bridge db upgrade`."""


class UnknownSchema(S360BridgeError):
    """The engine database holds a schema revision that this installation does not know."""
