"""Per-institution YAML configuration: loading and validation (its `$env` references are
resolved by config_secrets.py).

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

from s360bridge.core.config_secrets import SECRET_KEYS, Auth, Caller, References, Secret, Unset
from s360bridge.core.errors import ConfigError
from s360bridge.core.redact import redact_logs, remember
from s360bridge.core.storage.db import DatabaseLimits

DATABASE_URL_ENV = "S360BRIDGE_DATABASE_URL"
S360_RETRIES = 12  # S-360 re-sends a refused payload every M minutes, up to 12 times


@dataclass(frozen=True)
class StreamConfig:
    name: str
    enabled: bool = True
    auth: Auth = Auth()
    targets: tuple[str, ...] = ()
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
    secret: Secret | Unset
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
        if secret is not None:
            secret.value  # noqa: B018 - an Unset raises the one-line error of its variable


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
    batch_size: int | None = None  # records per claim; None: the backend's (claim_size)
    lease_seconds: float = 120.0
    max_attempts: int = 10
    backoff_base_seconds: float = 5.0
    backoff_max_seconds: float = 3600.0
    poll_interval_seconds: float = 0.5
    scheduler_retry_seconds: float = 5.0
    workers: int = 1
    operator: OperatorSettings = OperatorSettings()

    def claim_size(self, dialect: str) -> int:
        """Records per worker claim: ``batch_size`` when set, else 2,000 on PostgreSQL, where
        each claim, completion and commit is a round trip to another process (a fifth less CPU
        per record than 500, bench/README.md), and 500 on SQLite (as fast as 2,000 there, and
        each claim holds the database's write lock for less time)."""
        return self.batch_size or (2000 if dialect == "postgresql" else 500)


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


def _institution(raw: dict, refs: References) -> Institution:
    file = refs.file
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
                           refs.resolve({k: v for k, v in t.items() if k != "type"},
                                        f"targets.{name}", keep=True))
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
            refs.auth(s.get("auth", {}), f"streams.{name}.auth"), tuple(s.get("targets", [])),
            refs.resolve(s.get("options", {}), f"streams.{name}.options"))
    services = {}
    for name, s in (raw.get("services") or {}).items():
        auth = refs.auth(s.get("auth", {}), f"services.{name}.auth")
        services[name] = ServiceConfig(
            name, s.get("enabled", True), auth,
            refs.resolve(s.get("options", {}), f"services.{name}.options"),
            refs.callers(s.get("callers") or {}, f"services.{name}.callers", auth))
    cutoff = raw.get("history_cutoff")
    api = raw.get("s360_api")
    if api is not None:
        api = S360ApiSettings(**{
            **refs.resolve({k: v for k, v in api.items() if k != "secret"}, "s360_api"),
            "secret": refs.secret(api["secret"], "s360_api.secret")})
        if isinstance(api.base_url, str):  # else Unset: a command that calls no API
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


def load_settings(paths, environ=None, receiver_secrets: bool = True,
                  lazy: bool = False) -> Settings:
    """Load, validate and resolve every configuration file; raise ConfigError on any problem.

    ``receiver_secrets=False`` lets commands that never receive webhooks (a worker, import…)
    run where the receivers' credentials are not set; ``lazy=True``, commands that need no
    stream's or target's secret (status, replay…) where only the engine database's settings
    are (config_secrets.py)."""
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
        inst = _institution(raw, References(file, environ, receiver_secrets, lazy))
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
    # not needed here (receiver=False): an unset variable is an Unset, read by check_secret
    auth = References(file, environ, receiver=False).auth(raw.get("auth", {}),
                                                          "engine.operator.auth")
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
