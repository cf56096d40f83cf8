"""The ``{$env: NAME}`` references of an institution file: secrets that never print, the
``auth`` blocks that hold them, and the variables a command may run without.

A process that receives webhooks or delivers records reads every variable its files name when
it starts: a missing one stops it in one line. A command that only works on the engine
database (``status``, ``replay``, ``quarantine``, ``db``) loads the files ``lazy``: a missing
variable becomes an ``Unset``, which raises that same line where its value is used, and only
there (docs/operations.md, "Which commands need which secrets").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from s360bridge.core.errors import ConfigError
from s360bridge.core.redact import remember

SECRET_KEYS = {"password", "key", "secret", "token"}  # fields that only take {$env: NAME}


@dataclass(frozen=True)
class Secret:
    """A secret read from an environment variable; its value never appears in repr or str."""

    env: str
    value: str = field(repr=False)

    def __str__(self) -> str:
        return f"<secret ${self.env}>"

    __repr__ = __str__


class MissingVariable(ConfigError):
    """A value was needed from a variable that is not set (settings loaded ``lazy``)."""

    def __init__(self, message: str, env: str):
        super().__init__(message)
        self.env = env


@dataclass(frozen=True)
class Unset:
    """A reference to a variable that is not set, in a command that may not need it: reading
    its ``value`` raises the error a process that needs it raises when it starts."""

    env: str
    problem: str = field(repr=False)

    @property
    def value(self) -> str:
        raise MissingVariable(self.problem, self.env)

    def __str__(self) -> str:
        return f"<unset ${self.env}>"

    __repr__ = __str__


def reveal(value: Any) -> Any:
    """The value behind a ``Secret`` (an ``Unset`` raises its error); any other value as it
    is."""
    return value.value if isinstance(value, Secret | Unset) else value


def first_unset(value: Any) -> Unset | None:
    """The first ``Unset`` in options (dicts and lists) or in a settings object's fields."""
    if isinstance(value, Unset):
        return value
    if isinstance(value, dict):
        items = value.values()
    elif isinstance(value, list | tuple):
        items = value
    elif is_dataclass(value) and not isinstance(value, type):
        items = [getattr(value, f.name) for f in fields(value)]
    else:
        return None
    return next((found for v in items if (found := first_unset(v)) is not None), None)


def require(value: Any) -> None:
    """Raise the error of the first ``Unset`` in ``value`` (options, settings), if any."""
    reveal(first_unset(value))


@dataclass(frozen=True)
class Auth:
    """How S-360 authenticates on one webhook URL: none, basic, or an API key header."""

    type: str = "none"
    username: str | None = None
    password: Secret | Unset | None = None
    header: str | None = None
    key: Secret | Unset | None = None


@dataclass(frozen=True)
class Caller:
    """One of a service's callers with credentials of their own (``services.X.callers``), e.g.
    a reseller of the offers service: the core knows each request's caller by its credentials,
    and the service applies the caller's ``options``."""

    name: str
    auth: Auth
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class References:
    """Resolves the ``$env`` references of one file. ``receiver``: the receivers' credentials
    (the ``auth`` of streams, services and callers) are needed; ``lazy``: no variable is
    needed until its value is read."""

    file: Path
    environ: Mapping[str, str]
    receiver: bool = True
    lazy: bool = False

    def secret(self, ref: dict, where: str, needed: bool = True) -> Secret | Unset:
        name = ref["$env"]
        value = self.environ.get(name)
        if not value:
            problem = f"{self.file}: {where}: environment variable {name} is not set (or empty)"
            if needed and not self.lazy:
                raise ConfigError(problem)
            return Unset(name, problem)
        remember(value)  # whatever field it fills, a value from $env never prints
        return Secret(name, value)

    def resolve(self, value: Any, where: str, keep: bool = False) -> Any:
        """Replace ``{"$env": NAME}`` references in options with their values (``keep``: with
        ``Secret`` objects, which the target's declared secrets stay; an ``Unset`` stays one);
        the secrets of an ``auth`` block (password, key, token) must be such references."""
        if isinstance(value, dict):
            if set(value) == {"$env"}:
                secret = self.secret(value, where)
                return secret if keep or isinstance(secret, Unset) else secret.value
            for k, v in value.items():
                if where.endswith("auth") and k in SECRET_KEYS and not isinstance(v, dict):
                    raise ConfigError(f"{self.file}: {where}.{k}: a secret is written as "
                                      "{$env: VARIABLE_NAME}, never as a value")
            return {k: self.resolve(v, f"{where}.{k}", keep) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v, f"{where}.{i}", keep) for i, v in enumerate(value)]
        return value

    def auth(self, raw: dict, where: str) -> Auth:
        """A receiver's ``auth`` block (of a stream, a service or a caller)."""
        kind = raw.get("type", "none")
        if kind == "basic":
            return Auth(kind, username=raw["username"], password=self.secret(
                raw["password"], f"{where}.password", self.receiver))
        if kind == "api_key":
            return Auth(kind, header=raw["header"],
                        key=self.secret(raw["key"], f"{where}.key", self.receiver))
        return Auth("none")

    def callers(self, raw: dict, where: str, service_auth: Auth) -> dict[str, Caller]:
        callers = {}
        seen = {_credentials(service_auth): "the service's own auth"}
        for who, c in raw.items():
            auth = self.auth(c["auth"], f"{where}.{who}.auth")
            if auth.type == "none":
                raise ConfigError(f"{self.file}: {where}.{who}.auth: a caller is known by its "
                                  "credentials: basic or api_key, not none")
            same = seen.get(_credentials(auth))
            if same is not None and _credentials(auth)[-1]:  # unread secrets: not compared
                raise ConfigError(f"{self.file}: {where}.{who}.auth: the same credentials as "
                                  f"{same}: each caller needs its own")
            seen[_credentials(auth)] = f"caller {who!r}"
            callers[who] = Caller(who, auth, self.resolve(c.get("options", {}),
                                                          f"{where}.{who}.options"))
        return callers


def _credentials(auth: Auth) -> tuple:
    """What tells a caller's requests apart: the header (or user name) and the secret."""
    secret = auth.password or auth.key
    return (auth.type, auth.username or auth.header,
            secret.value if isinstance(secret, Secret) else None)
