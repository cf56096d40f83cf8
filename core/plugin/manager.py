"""Plugin loading and the facade through which the core calls every hook.

Built-in plugins are ordinary plugins listed in DEFAULT_PLUGINS; third-party plugins arrive
through the setuptools entry-point group ``s360bridge``. ``S360BRIDGE_LOAD_PLUGINS`` (a comma
separated list of plugin names) restricts which of them load.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import threading
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

import click
import flask
import pluggy

from s360bridge.core.errors import PluginError, Undeliverable
from s360bridge.core.plugin import hookspecs, routes
from s360bridge.core.plugin.services import Service
from s360bridge.core.plugin.streams import ReceivedBatch, Stream
from s360bridge.core.plugin.targets import PushResult, Target

DEFAULT_PLUGINS = (
    "s360bridge.core.operations.retention",
    "s360bridge.core.operations.erasure",
    "s360bridge.plugins.contacts",
    "s360bridge.plugins.contacts.crm_changes",
    "s360bridge.plugins.contacts.to_s360",
    "s360bridge.plugins.orders",
    "s360bridge.plugins.ticketchecks",
    "s360bridge.plugins.sql",
    "s360bridge.plugins.jsonl",
    "s360bridge.plugins.crm",
    "s360bridge.plugins.offers",
)
ENTRY_POINT_GROUP = "s360bridge"
GAUGE_NAME = re.compile(r"s360bridge_[a-z0-9_]+")
LOAD_PLUGINS_ENV = "S360BRIDGE_LOAD_PLUGINS"

_lock = threading.Lock()
_manager: pluggy.PluginManager | None = None


def _allowed(environ) -> set[str] | None:
    text = environ.get(LOAD_PLUGINS_ENV)
    if text is None:
        return None
    return {n.strip() for n in text.split(",") if n.strip()}


def plugin_manager(environ=None) -> pluggy.PluginManager:
    """The process-wide plugin manager, loaded on first use (lazy and idempotent)."""
    global _manager
    with _lock:
        if _manager is None:
            _manager = _load(os.environ if environ is None else environ)
        return _manager


def _load(environ) -> pluggy.PluginManager:
    pm = pluggy.PluginManager("s360bridge")
    pm.add_hookspecs(hookspecs)
    allowed = _allowed(environ)
    for path in DEFAULT_PLUGINS:
        name = path.rsplit(".", 1)[-1]
        if allowed is None or name in allowed:
            pm.register(importlib.import_module(path), name=name)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if allowed is None or ep.name in allowed:
            try:
                pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=ep.name)
            except Exception as exc:
                raise PluginError(f"plugin {ep.name!r} ({ep.value}) failed to load: {exc}") \
                    from exc
    check(pm)
    return pm


def check(pm: pluggy.PluginManager) -> None:
    """Fail on a hook implementation that matches no hook, e.g. a misspelled name."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"{exc} (known hooks: {', '.join(hook_names())})") from None


def hook_names() -> list[str]:
    return sorted(n for n in dir(hookspecs) if not n.startswith("_")
                  and hasattr(getattr(hookspecs, n), "s360bridge_spec"))


class Hooks:
    """The one small facade between the core and the plugin hooks: each connector call goes
    to the plugin that declared it (see routes.py), resolved once."""

    def __init__(self, pm: pluggy.PluginManager | None = None):
        self.pm = pm or plugin_manager()
        self._streams: dict[str, tuple[Stream, str]] | None = None
        self._target_types: dict[str, tuple[Any, str]] | None = None
        self._services: dict[str, tuple[Service, str]] | None = None
        self._pairs: dict[tuple[str, str], routes.Pair] | None = None
        self._callers: dict[tuple[str, str], Any] = {}

    @property
    def streams(self) -> dict[str, Stream]:
        return {name: s for name, (s, _) in self._owned_streams().items()}

    def _owned_streams(self) -> dict[str, tuple[Stream, str]]:
        if self._streams is None:
            self._streams = routes.owned(self.pm, "register_streams", "stream")
        return self._streams

    @property
    def services(self) -> dict[str, Service]:
        return {name: s for name, (s, _) in self._owned_services().items()}

    def _owned_services(self) -> dict[str, tuple[Service, str]]:
        if self._services is None:
            self._services = routes.owned(self.pm, "register_services", "service")
        return self._services

    @property
    def target_types(self) -> dict[str, Any]:
        return {kind: f for kind, (f, _) in self._owned_kinds().items()}

    def _owned_kinds(self) -> dict[str, tuple[Any, str]]:
        if self._target_types is None:
            self._target_types = routes.owned(self.pm, "register_targets", "target type")
        return self._target_types

    @property
    def pairs(self) -> dict[tuple[str, str], routes.Pair]:
        if self._pairs is None:
            self._pairs = routes.declared_pairs(self.pm)
        return self._pairs

    def pair_for(self, stream: str, kind: str) -> routes.Pair | None:
        return routes.find(self.pairs, stream, kind)

    def route_problem(self, institution, stream: str, target: Target) -> str | None:
        """Why ``target`` cannot take ``stream`` (for check-config), or None."""
        return routes.problem(self.pairs, institution, stream, target)

    def _stream_owner(self, name: str) -> str:
        found = self._owned_streams().get(name)
        if found is None:
            raise PluginError(f"no plugin registers stream {name!r}")
        return found[1]

    def _only(self, hook_name: str, plugin: str):
        """The hook, called on ``plugin`` alone."""
        caller = self._callers.get((hook_name, plugin))
        if caller is None:
            others = [p for name, p in self.pm.list_name_plugin() if name != plugin]
            caller = self._callers[(hook_name, plugin)] = self.pm.subset_hook_caller(
                hook_name, remove_plugins=others)
        return caller

    def add_commands(self, cli) -> None:
        self.pm.hook.register_commands(cli=cli)

    def blueprints(self) -> list:
        """The blueprints of register_routes (the receiver serves those of services apart,
        admitting their requests)."""
        found: list = []
        self.pm.hook.register_routes(register=found.append)
        return found

    def migrations(self) -> list[Path]:
        """The versions folders of the plugins' schema branches, each once."""
        found: list[Path] = []

        def register(location):
            folder = _folder(location)
            if folder not in found:
                found.append(folder)

        self.pm.hook.register_migrations(register=register)
        return found

    def jobs(self, bridge) -> list[tuple[str, float, Any]]:
        """The jobs of register_jobs, then each service's jobs for each institution that
        enables it, named ``{job} of {institution}``."""
        found: list = []
        self.pm.hook.register_jobs(register=lambda *job: found.append(job), bridge=bridge)
        for inst in bridge.settings.institutions.values():
            for name, cfg in inst.services.items():
                service = self.services[name]
                if cfg.enabled and service.jobs:
                    found += [(f"{job} of {inst.code}", every, func)
                              for job, every, func in service.jobs(bridge, inst, cfg)]
        return found

    def gauges(self, bridge) -> list[tuple[str, str, tuple[str, ...], Any]]:
        """The gauges of register_gauges: (name, help, labels, read), each name once and by
        Prometheus's rules."""
        found: dict[str, tuple] = {}

        def register(name, help_, labels, read):
            if not isinstance(name, str) or not GAUGE_NAME.fullmatch(name) or name in found:
                raise PluginError(f"register_gauges: {name!r} is not a new gauge name of the "
                                  "form s360bridge_[a-z0-9_]+")
            found[name] = (name, help_, tuple(labels), read)

        self.pm.hook.register_gauges(register=register, bridge=bridge)
        return list(found.values())

    def operator_pages(self, bridge) -> list[tuple[Any, str, str]]:
        """The console pages of register_operator_pages: (blueprint, title, endpoint), each
        blueprint's name once."""
        found: dict[str, tuple] = {}

        def register(blueprint, title, endpoint):
            if getattr(blueprint, "name", None) in (None, *found) or not title:
                raise PluginError(f"register_operator_pages: {blueprint!r} is not a new "
                                  "blueprint with a title")
            found[blueprint.name] = (blueprint, title, endpoint)

        self.pm.hook.register_operator_pages(register=register, bridge=bridge)
        return list(found.values())

    def receive(self, institution, stream: Stream, records) -> ReceivedBatch:
        owner = self._stream_owner(stream.name)
        batch = self._only("receive", owner)(institution=institution, stream=stream,
                                             records=records)
        if batch is None:
            raise PluginError(f"plugin {owner!r} registers stream {stream.name!r} but its "
                              "receive hook gave no answer")
        return batch

    def transform(self, institution, stream: Stream, target: Target, records) -> list:
        pair = routes.find(self.pairs, stream.name, target.kind)
        if pair is None:
            raise Undeliverable(routes.problem(self.pairs, institution, stream.name, target))
        items = self._only("transform", pair.plugin)(
            institution=institution, stream=stream, target=target, records=records)
        if items is None:
            raise PluginError(f"plugin {pair.plugin!r} declares {stream.name} -> {target.kind} "
                              "but its transform hook gave no answer")
        return items

    def push(self, institution, stream: Stream, target: Target, items: list) -> PushResult:
        owner = self._owned_kinds()[target.kind][1]
        result = self._only("push", owner)(institution=institution, stream=stream,
                                           target=target, items=items)
        if result is None:
            raise PluginError(f"plugin {owner!r} registers target type {target.kind!r} but "
                              "its push hook gave no answer")
        return result

    def reconcile(self, institution, stream: Stream, target: Target):
        owner = self._stream_owner(stream.name)
        spec = self._only("reconcile", owner)(institution=institution, stream=stream,
                                              target=target)
        if spec is None:
            raise PluginError(f"stream {stream.name!r} cannot be reconciled (plugin {owner!r} "
                              "gives no reconcile answer)")
        side = target.reconcile_side(institution, stream.name, spec)
        if side is None:
            raise PluginError(f"a {target.kind} target cannot be reconciled: its type gives "
                              "no side to compare")
        return dataclasses.replace(side, fetch=spec.fetch)

    def forget(self, bridge, institution, contact_number: str) -> list[str]:
        said = self.pm.hook.forget(bridge=bridge, institution=institution,
                                   contact_number=contact_number)
        return [line for lines in said for line in (lines or [])]

    def _only_on(self, hook_name: str, plugin: str):
        """The hook called on ``plugin`` alone, or None when it does not implement it."""
        return next((call for name, call in routes.per_plugin(self.pm, hook_name)
                     if name == plugin), None)

    def _commands_of(self, plugin: str) -> list[str]:
        call = self._only_on("register_commands", plugin)
        if call is None:
            return []
        group = click.Group()
        call(cli=group)
        return list(group.commands)

    def _routes_of(self, plugin: str) -> list[str]:
        call = self._only_on("register_routes", plugin)
        app = flask.Flask("s360bridge-describe")
        if call is not None:
            call(register=app.register_blueprint)
        for service, owner in self._owned_services().values():
            if owner == plugin:
                app.register_blueprint(service.blueprint)
        return [f"{' '.join(sorted(r.methods - {'HEAD', 'OPTIONS'}))} {r.rule}"
                for r in app.url_map.iter_rules() if r.endpoint != "static"]

    def describe(self) -> list[dict]:
        """Every loaded plugin: where it comes from, its hooks, and what it declares."""
        dists = {id(p): d for p, d in self.pm.list_plugin_distinfo()}
        rows = []
        for name, plugin in sorted(self.pm.list_name_plugin(), key=lambda x: x[0]):
            dist = dists.get(id(plugin))
            rows.append({
                "name": name,
                "module": getattr(plugin, "__name__", repr(plugin)),
                "source": (f"entry point of {dist.metadata['Name']} {dist.version}" if dist
                           else "built-in"),
                "hooks": sorted(h.name for h in self.pm.get_hookcallers(plugin) or []),
                "streams": sorted(s for s, (_, p) in self._owned_streams().items() if p == name),
                "services": sorted(s for s, (_, p) in self._owned_services().items()
                                   if p == name),
                "target_types": sorted(k for k, (_, p) in self._owned_kinds().items()
                                       if p == name),
                "transforms": sorted(f"{s} -> {k}" for (s, k), pair in self.pairs.items()
                                     if pair.plugin == name),
                "commands": sorted(self._commands_of(name)),
                "routes": sorted(self._routes_of(name)),
            })
        return rows


def _folder(location) -> Path:
    """The folder of a package, or a path given as it is."""
    folder = Path(location.__file__).parent if isinstance(location, ModuleType) \
        else Path(location)
    if not folder.is_dir():
        raise PluginError(f"register_migrations: {location} is not a folder of migrations")
    return folder.resolve()
