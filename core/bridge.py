"""The runtime context shared by the receiver, the workers and the CLI of one process."""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Literal

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from s360bridge.core.config import Institution, Settings
from s360bridge.core.config_secrets import MissingVariable, first_unset, require
from s360bridge.core.errors import ConfigError, StoreUnavailable
from s360bridge.core.plugin.manager import Hooks
from s360bridge.core.plugin.streams import Stream
from s360bridge.core.plugin.targets import Target, bind_options
from s360bridge.core.s360.client import S360Client
from s360bridge.core.storage import migrate
from s360bridge.core.storage.db import make_engine, unavailable

log = logging.getLogger("s360bridge.bridge")


class Bridge:
    """Settings, the engine database, the plugins and the configured targets.

    ``schema`` says what to do with the engine database's schema: ``require`` it at the heads
    of the migrations (OutdatedSchema otherwise), ``upgrade`` it (``s360bridge run``), or
    ``ignore`` it and open nothing (``check-config``). A target whose options read a variable
    that is not set (settings loaded ``lazy``) is checked when it is first built, and fails
    then with that variable's error."""

    def __init__(self, settings: Settings, hooks: Hooks | None = None,
                 schema: Literal["require", "upgrade", "ignore"] = "require"):
        self.settings = settings
        self.hooks = hooks or Hooks()
        e = settings.engine
        try:
            self.engine = make_engine(e.database_url, e.sqlite_synchronous,
                                      e.sqlite_busy_timeout_seconds, e)
        except ConfigError as exc:
            raise ConfigError(f"engine.database_url: {exc}") from None
        self._targets: dict[tuple[str, str], Target] = {}
        self._clients: dict[str, S360Client] = {}
        self._lock = threading.Lock()
        self._check()
        if schema == "ignore":
            return
        try:
            self._prepare(schema == "upgrade")
        except (DBAPIError, PoolTimeout, StoreUnavailable) as exc:
            where = make_url(e.database_url).render_as_string(hide_password=True)
            reason = unavailable(exc.__cause__ or exc)
            raise StoreUnavailable(f"cannot open the engine database {where}: {reason} (check "
                                   "engine.database_url or S360BRIDGE_DATABASE_URL, and that "
                                   "the database runs and answers)") from exc

    def _prepare(self, upgrade: bool) -> None:
        locations = self.hooks.migrations()
        if upgrade:
            applied = migrate.upgrade(self.engine, locations)
            if applied:
                log.info("engine database schema upgraded: applied %s", ", ".join(applied))
        else:
            configs = " ".join(f"-c {inst.source}" for inst in self.settings.institutions.values())
            migrate.require(self.engine, locations, f"s360bridge db upgrade {configs}")
        self.engine.dispose()  # nothing pooled before a server forks its workers

    def _check(self) -> None:
        """Every configured stream and target type must be provided by a loaded plugin."""
        for inst in self.settings.institutions.values():
            for name, cfg in inst.streams.items():
                stream = self.hooks.streams.get(name)
                if stream is None and name in self.hooks.services:
                    raise ConfigError(f"{inst.source}: streams.{name}: {name} is a service, "
                                      f"not a stream: move its entry under services:")
                if stream is None:
                    known = ", ".join(sorted(self.hooks.streams))
                    raise ConfigError(f"{inst.source}: streams.{name}: no loaded plugin provides "
                                      f"this stream (known: {known})")
                _check_options(inst, f"streams.{name}", stream.check_options, cfg.options)
            self._check_services(inst)
            for name, tcfg in inst.targets.items():
                if tcfg.type not in self.hooks.target_types:
                    raise ConfigError(
                        f"{inst.source}: targets.{name}.type: unknown target type {tcfg.type!r} "
                        f"(known: {', '.join(sorted(self.hooks.target_types))})")
                try:
                    target = self.target(inst, name)  # built now: bad options stop start-up
                except MissingVariable:
                    continue  # settings loaded lazy: checked if a command builds it
                if target.uses_s360_api and inst.s360_api is None:
                    raise ConfigError(f"{inst.source}: targets.{name}: a {tcfg.type} target "
                                      "calls the S-360 APIs: add an s360_api section")
            for name, cfg in inst.streams.items():
                for tname in cfg.targets:
                    try:
                        problem = self.hooks.route_problem(inst, name, self.target(inst, tname))
                    except MissingVariable:
                        continue
                    if problem:
                        raise ConfigError(
                            f"{inst.source}: streams.{name}.targets: institution {inst.code} "
                            f"routes stream {name} to target {tname} "
                            f"({inst.targets[tname].type}), which cannot take it: {problem}")

    def _check_services(self, inst: Institution) -> None:
        """Every configured service must be provided by a loaded plugin, with valid options."""
        for name, cfg in inst.services.items():
            service = self.hooks.services.get(name)
            if service is None:
                known = ", ".join(sorted(self.hooks.services)) or "none"
                raise ConfigError(f"{inst.source}: services.{name}: no loaded plugin provides "
                                  f"this service (known: {known})")
            _check_options(inst, f"services.{name}", service.check_options, cfg.options)
            if cfg.callers and service.check_caller_options is None:
                raise ConfigError(f"{inst.source}: services.{name}.callers: service {name} "
                                  "takes no callers")
            for who, caller in cfg.callers.items():
                _check_options(inst, f"services.{name}.callers.{who}",
                               service.check_caller_options, caller.options)

    def institution(self, code: str) -> Institution | None:
        return self.settings.institutions.get(code)

    def stream(self, name: str) -> Stream | None:
        return self.hooks.streams.get(name)

    def target(self, inst: Institution, name: str) -> Target:
        """The target ``name`` of an institution, built once per process."""
        with self._lock:
            target = self._targets.get((inst.code, name))
            if target is None:
                cfg = inst.targets[name]
                factory = self.hooks.target_types[cfg.type]
                try:
                    options = bind_options(cfg.options, getattr(factory, "SECRETS", frozenset()))
                    target = factory(name, options, self)
                except MissingVariable:
                    raise  # its message names the file and the key already
                except ConfigError as exc:
                    raise ConfigError(f"{inst.source}: targets.{name}: {exc}") from None
                self._targets[(inst.code, name)] = target
            return target

    def describe(self, inst: Institution, name: str) -> str:
        """A target's description (``status``); one that reads a variable not set here says
        which instead of failing, so the commands that need none of its secrets still run."""
        try:
            return self.target(inst, name).describe()
        except MissingVariable as exc:
            return f"{inst.targets[name].type} (not built: ${exc.env} is not set here)"

    def targets_of(self, inst: Institution, kind: str) -> list[Target]:
        """The institution's targets of one type (a plugin asks for its own type's)."""
        return [self.target(inst, name) for name, cfg in inst.targets.items()
                if cfg.type == kind]

    def s360(self, inst: Institution, operator: str | None = None) -> S360Client:
        """The S-360 API client of an institution, with its budget shared across processes;
        with ``operator``, one that calls as that virtual operator (the JWT's ``aud``: a
        reseller's own sales channel, REFERENCE §g.2) inside the same budget."""
        with self._lock:
            client = self._clients.get(inst.code)
            if client is None:
                api = inst.s360_api
                if api is None:
                    raise ConfigError(f"{inst.source}: s360_api: this institution calls the "
                                      "S-360 APIs, so it needs an s360_api section")
                require(api)  # settings loaded lazy: the variables it reads must be set
                from s360bridge.core.s360.budget import (
                    CallBudget,  # pyrate-limiter: only where S-360 is called
                )

                budget = CallBudget(self.engine, api.calls_per_minute, api.window_seconds)
                client = self._clients[inst.code] = S360Client(inst.code, api, budget)
            if operator is None or operator == client.settings.operator:
                return client
            key = f"{inst.code}\0{operator}"
            if key not in self._clients:
                self._clients[key] = S360Client(
                    inst.code, dataclasses.replace(client.settings, operator=operator),
                    client.budget, client.session)
            return self._clients[key]

    def close(self) -> None:
        for target in self._targets.values():
            target.close()
        self.engine.dispose()


def _check_options(inst: Institution, where: str, check, options: dict) -> None:
    """A stream's or service's ``check_options``, its error naming the file and the key."""
    if check is None or first_unset(options):  # lazy settings, a command that needs none
        return
    try:
        check(options)
    except ConfigError as exc:
        raise ConfigError(f"{inst.source}: {where}.options: {exc}") from None
