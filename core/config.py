"""Per-institution YAML configuration: loading, validation and `$env` secret references.

One file describes one institution (see config/myvenue.yaml). A process serves every file it is
given, or every ``*.yaml`` file of a folder. An optional ``engine:`` section sets process-wide
settings; ``S360BRIDGE_DATABASE_URL`` overrides the engine's database.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from jsonschema import Draft202012Validator

from s360bridge.core.errors import ConfigError
from s360bridge.core.redact import redact_logs, remember
from s360bridge.core.storage.db import DatabaseLimits

DATABASE_URL_ENV = "S360BRIDGE_DATABASE_URL"
S360_RETRIES = 12  # S-360 re-sends a refused payload every M minutes, up to 12 times
SECRET_KEYS = {"password", "key", "secret", "token"}  # fields that only take {$env: NAME}


@dataclass(frozen=True)
class Secret:
    """A secret read from an environment variable; its value never appears in repr or str."""

    env: str
    value: str = field(repr=False)

    def __str__(self) -> str:
        return f"<secret ${self.env}>"

    __repr__ = __str__


def reveal(value: Any) -> Any:
    """The value behind a ``Secret``; any other value as it is."""
    return value.value if isinstance(value, Secret) else value


@dataclass(frozen=True)
class Auth:
    """How S-360 authenticates on one webhook URL: none, basic, or an API key header."""

    type: str = "none"
    username: str | None = None
    password: Secret | None = None
    header: str | None = None
    key: Secret | None = None


@dataclass(frozen=True)
class StreamConfig:
    name: str
    enabled: bool = True
    auth: Auth = Auth()
    targets: tuple[str, ...] = ()
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Caller:
    """One of a service's callers with credentials of their own (``services.X.callers``), e.g.
    a reseller of the offers service: the core knows each request's caller by its credentials,
    and the service applies the caller's ``options``."""

    name: str
    auth: Auth
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ServiceConfig:
    """An institution's entry of a service (``services:``): the same as a stream's, but no
    targets (a service does its work itself), and maybe ``callers`` of its own."""

    name: str
    enabled: bool = True
    auth: Auth = Auth()
    options: dict = field(default_factory=dict)
    callers: dict[str, Caller] = field(default_factory=dict)


@dataclass(frozen=True)
class TargetConfig:
    name: str
    type: str
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class S360ApiSettings:
    """How to call the institution's S-360 backend APIs (REFERENCE §e)."""

    base_url: str
    operator: str
    partner: str
    secret: Secret
    iat_unit: str = "seconds"  # the reference's text says milliseconds; its sample, seconds
    token_ttl_seconds: float = 30.0
    timeout_seconds: float = 30.0
    calls_per_minute: int = 57  # S-360 allows 60 per institution and method: keep a margin
    window_seconds: float = 60.0
    retries: int = 5
    in_progress_wait_seconds: float = 10.0
    versions: dict = field(default_factory=dict)
    monthly_calls: int | None = None  # the plan's quota, if it has one (REFERENCE §e.4)
    monthly_reserve_for_sales: int | None = None  # default: a tenth of monthly_calls


@dataclass(frozen=True)
class Institution:
    code: str
    timezone: ZoneInfo
    streams: dict[str, StreamConfig]
    targets: dict[str, TargetConfig]
    history_cutoff: dt.date | None = None
    allowed_sources: tuple = ()
    webhook_frequency_minutes: int = 15
    s360_api: S360ApiSettings | None = None
    reconcile: dict = field(default_factory=dict)  # per stream, see config.schema.json
    source: Path | None = None
    services: dict[str, ServiceConfig] = field(default_factory=dict)

    @property
    def cutoff_utc(self) -> dt.datetime | None:
        """The start of the cut-off day in the venue's time zone, as naive UTC."""
        if self.history_cutoff is None:
            return None
        start = dt.datetime.combine(self.history_cutoff, dt.time(0), tzinfo=self.timezone)
        return start.astimezone(dt.UTC).replace(tzinfo=None)

    def allows(self, address: str | None) -> bool:
        """True when no allow-list is set or ``address`` is inside it."""
        if not self.allowed_sources:
            return True
        try:
            ip = ipaddress.ip_address(address or "")
        except ValueError:
            return False
        return any(ip in net for net in self.allowed_sources)


@dataclass(frozen=True)
class OperatorSettings:
    """The operator listener (``engine.operator``): off by default, on localhost, its own port
    and credentials; ``/metrics`` is served there (core/operator/)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8361
    auth: Auth = Auth()
    source: Path | None = None  # the file that configures it, for messages

    def check_secret(self) -> None:
        """Stop a process that serves the listener when its secret is not in the
        environment (other commands do not read it)."""
        secret = self.auth.password or self.auth.key
        if secret is not None and not secret.value:
            field_ = "password" if self.auth.type == "basic" else "key"
            raise ConfigError(f"{self.source}: engine.operator.auth.{field_}: environment "
                              f"variable {secret.env} is not set (or empty)")


@dataclass(frozen=True)
class EngineSettings(DatabaseLimits):
    """Process-wide settings of the engine, with production-minded defaults (the pool's and
    PostgreSQL's limits are DatabaseLimits')."""

    database_url: str = "sqlite:///var/s360bridge.db"
    sqlite_synchronous: str = "FULL"
    sqlite_busy_timeout_seconds: float = 10.0
    request_timeout_seconds: float = 5.0
    ready_within_seconds: float = 5.0
    max_body_bytes: int = 10 * 1024 * 1024
    retention_hours: float = 7 * 24
    batch_size: int = 500
    lease_seconds: float = 120.0
    max_attempts: int = 10
    backoff_base_seconds: float = 5.0
    backoff_max_seconds: float = 3600.0
    poll_interval_seconds: float = 0.5
    workers: int = 1
    operator: OperatorSettings = OperatorSettings()


@dataclass(frozen=True)
class Settings:
    engine: EngineSettings
    institutions: dict[str, Institution]


def _schema_validator() -> Draft202012Validator:
    text = resources.files(__package__).joinpath("config.schema.json").read_text("utf-8")
    return Draft202012Validator(json.loads(text),
                                format_checker=Draft202012Validator.FORMAT_CHECKER)


def _where(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _plain(value: Any) -> Any:
    """YAML dates become ISO strings so that one schema validates every file."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _secret(ref: dict, file: Path, where: str, environ, required: bool = True) -> Secret:
    name = ref["$env"]
    if not environ.get(name) and not required:
        return Secret(name, "")
    if not environ.get(name):
        raise ConfigError(f"{file}: {where}: environment variable {name} is not set (or empty)")
    remember(environ[name])  # whatever field it fills, a value from $env never prints
    return Secret(name, environ[name])


def _resolve_env(value: Any, file: Path, where: str, environ, keep: bool = False) -> Any:
    """Replace ``{"$env": NAME}`` references in options with their values (``keep``: with
    ``Secret`` objects, which the target's declared secrets stay); the secrets of an ``auth``
    block (password, key, token) must be such references."""
    if isinstance(value, dict):
        if set(value) == {"$env"}:
            secret = _secret(value, file, where, environ)
            return secret if keep else secret.value
        for k, v in value.items():
            if where.endswith("auth") and k in SECRET_KEYS and not isinstance(v, dict):
                raise ConfigError(f"{file}: {where}.{k}: a secret is written as "
                                  "{$env: VARIABLE_NAME}, never as a value")
        return {k: _resolve_env(v, file, f"{where}.{k}", environ, keep) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_env(v, file, f"{where}.{i}", environ, keep) for i, v in enumerate(value)]
    return value


def _auth(raw: dict, file: Path, where: str, environ, required: bool) -> Auth:
    kind = raw.get("type", "none")
    if kind == "basic":
        return Auth(kind, username=raw["username"], password=_secret(
            raw["password"], file, f"{where}.password", environ, required))
    if kind == "api_key":
        return Auth(kind, header=raw["header"],
                    key=_secret(raw["key"], file, f"{where}.key", environ, required))
    return Auth("none")


def _institution(raw: dict, file: Path, environ, receiver_secrets: bool) -> Institution:
    try:
        zone = ZoneInfo(raw["timezone"])
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{file}: timezone: unknown time zone {raw['timezone']!r}") from None
    nets = []
    for i, text in enumerate(raw.get("allowed_sources", [])):
        try:
            nets.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ConfigError(f"{file}: allowed_sources.{i}: {text!r} is not an address or "
                              "network") from None
    targets = {
        name: TargetConfig(name, t["type"],
                           _resolve_env({k: v for k, v in t.items() if k != "type"}, file,
                                        f"targets.{name}", environ, keep=True))
        for name, t in (raw.get("targets") or {}).items()
    }
    streams = {}
    for name, s in raw["streams"].items():
        for t in s.get("targets", []):
            if t not in targets:
                raise ConfigError(f"{file}: streams.{name}.targets: unknown target {t!r} "
                                  f"(defined: {', '.join(sorted(targets)) or 'none'})")
        streams[name] = StreamConfig(
            name, s.get("enabled", True),
            _auth(s.get("auth", {}), file, f"streams.{name}.auth", environ, receiver_secrets),
            tuple(s.get("targets", [])), _resolve_env(s.get("options", {}), file,
                                                      f"streams.{name}.options", environ))
    services = {}
    for name, s in (raw.get("services") or {}).items():
        auth = _auth(s.get("auth", {}), file, f"services.{name}.auth", environ, receiver_secrets)
        services[name] = ServiceConfig(
            name, s.get("enabled", True), auth,
            _resolve_env(s.get("options", {}), file, f"services.{name}.options", environ),
            _callers(s.get("callers") or {}, file, f"services.{name}.callers", environ,
                     receiver_secrets, auth))
    cutoff = raw.get("history_cutoff")
    api = raw.get("s360_api")
    if api is not None:
        api = S360ApiSettings(**{
            **_resolve_env({k: v for k, v in api.items() if k != "secret"}, file, "s360_api",
                           environ),
            "secret": _secret(api["secret"], file, "s360_api.secret", environ)})
        api = replace(api, base_url=api.base_url.rstrip("/"))
        if api.monthly_calls and (api.monthly_reserve_for_sales or 0) >= api.monthly_calls:
            raise ConfigError(f"{file}: s360_api.monthly_reserve_for_sales: "
                              f"{api.monthly_reserve_for_sales} is not below monthly_calls "
                              f"({api.monthly_calls})")
    return Institution(
        code=raw["institution"], timezone=zone, streams=streams, targets=targets,
        history_cutoff=dt.date.fromisoformat(cutoff) if cutoff else None,
        allowed_sources=tuple(nets),
        webhook_frequency_minutes=raw.get("webhook_frequency_minutes", 15), s360_api=api,
        reconcile=raw.get("reconcile") or {}, source=file, services=services)


def _callers(raw: dict, file: Path, where: str, environ, required: bool,
             service_auth: Auth) -> dict[str, Caller]:
    callers = {}
    seen = {_credentials(service_auth): "the service's own auth"}
    for who, c in raw.items():
        auth = _auth(c["auth"], file, f"{where}.{who}.auth", environ, required)
        if auth.type == "none":
            raise ConfigError(f"{file}: {where}.{who}.auth: a caller is known by its "
                              "credentials: basic or api_key, not none")
        same = seen.get(_credentials(auth))
        if same is not None and _credentials(auth)[-1]:  # unread secrets ("") outside receivers
            raise ConfigError(f"{file}: {where}.{who}.auth: the same credentials as {same}: "
                              "each caller needs its own")
        seen[_credentials(auth)] = f"caller {who!r}"
        callers[who] = Caller(who, auth, _resolve_env(c.get("options", {}), file,
                                                      f"{where}.{who}.options", environ))
    return callers


def _credentials(auth: Auth) -> tuple:
    """What tells a caller's requests apart: the header (or user name) and the secret."""
    secret = auth.password or auth.key
    return (auth.type, auth.username or auth.header, secret.value if secret else None)


def config_files(paths) -> list[Path]:
    """Expand the given files and folders into the list of YAML files to load."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted([*p.glob("*.yaml"), *p.glob("*.yml")])
            if not found:
                raise ConfigError(f"{p}: no *.yaml file in this folder")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise ConfigError(f"{p}: no such configuration file or folder")
    return files


def load_settings(paths, environ=None, receiver_secrets: bool = True) -> Settings:
    """Load, validate and resolve every configuration file; raise ConfigError on any problem.

    ``receiver_secrets=False`` lets commands that never receive webhooks (status, replay…) run
    where the receiver's credentials are not set."""
    environ = os.environ if environ is None else environ
    redact_logs()
    validator = _schema_validator()
    institutions: dict[str, Institution] = {}
    engine: dict[str, tuple[Any, Path]] = {}
    for file in config_files(paths):
        try:
            raw = _plain(yaml.safe_load(file.read_text("utf-8")))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{file}: cannot read YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{file}: expected a mapping at the top level")
        errors = sorted(validator.iter_errors(raw), key=lambda e: list(e.absolute_path))
        if errors:
            e = errors[0]
            message = e.message
            if e.absolute_path and e.absolute_path[-1] in SECRET_KEYS:  # never echo a secret
                message = "a secret is written as {$env: VARIABLE_NAME}, never as a value"
            raise ConfigError(f"{file}: {_where(e.absolute_path)}: {message}")
        for key, value in (raw.get("engine") or {}).items():
            if key in engine and engine[key][0] != value:
                raise ConfigError(f"{file}: engine.{key}: {value!r} conflicts with "
                                  f"{engine[key][0]!r} set in {engine[key][1]}")
            engine[key] = (value, file)
        inst = _institution(raw, file, environ, receiver_secrets)
        if inst.code in institutions:
            raise ConfigError(f"{file}: institution: {inst.code!r} is already configured in "
                              f"{institutions[inst.code].source}")
        institutions[inst.code] = inst
    values = {k: v for k, (v, _) in engine.items()}
    if "operator" in values:
        values["operator"] = _operator(values["operator"], engine["operator"][1], environ)
    if environ.get(DATABASE_URL_ENV):
        values["database_url"] = environ[DATABASE_URL_ENV]
    if "database_url" in values:
        remember(values["database_url"])
    settings = Settings(EngineSettings(**values), institutions)
    _check_retention(settings)
    return settings


def _operator(raw: dict, file: Path, environ) -> OperatorSettings:
    """``engine.operator``; its secret is read by the processes that serve it (check_secret)."""
    auth = _auth(raw.get("auth", {}), file, "engine.operator.auth", environ, required=False)
    if raw.get("enabled", False) and auth.type == "none":
        raise ConfigError(f"{file}: engine.operator.auth: the operator listener needs "
                          "credentials of its own: basic or api_key")
    return OperatorSettings(raw.get("enabled", False), raw.get("host", "127.0.0.1"),
                            raw.get("port", 8361), auth, file)


def _check_retention(settings: Settings) -> None:
    """Duplicates are recognised within the retention window: it must outlast S-360's retries."""
    for inst in settings.institutions.values():
        horizon_h = S360_RETRIES * inst.webhook_frequency_minutes / 60
        if settings.engine.retention_hours < horizon_h:
            raise ConfigError(
                f"{inst.source}: engine.retention_hours: {settings.engine.retention_hours} h is "
                f"shorter than S-360's retry horizon of 12 x {inst.webhook_frequency_minutes} min "
                f"= {horizon_h:g} h")
