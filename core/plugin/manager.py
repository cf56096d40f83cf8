"""Plugin loading and the facade through which the core calls every hook.

Built-in plugins are ordinary plugins listed in DEFAULT_PLUGINS; third-party plugins arrive
through the setuptools entry-point group ``s360bridge``. ``S360BRIDGE_LOAD_PLUGINS`` (a comma
separated list of plugin names) restricts which of them load.
"""

from __future__ import annotations

import importlib
import os
import threading
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from s360bridge.core.errors import PluginError
from s360bridge.core.plugin import hookspecs
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
    """The one small facade between the core and the plugin hooks."""

    def __init__(self, pm: pluggy.PluginManager | None = None):
        self.pm = pm or plugin_manager()
        self._streams: dict[str, Stream] | None = None
        self._target_types: dict[str, Any] | None = None

    def _collect(self, hook_name: str, what: str) -> dict[str, Any]:
        found: dict[str, Any] = {}

        def register(name_or_obj, value=None):
            name = getattr(name_or_obj, "name", name_or_obj)
            if name in found:
                raise PluginError(f"two plugins register the {what} {name!r}")
            found[name] = name_or_obj if value is None else value

        getattr(self.pm.hook, hook_name)(register=register)
        return found

    @property
    def streams(self) -> dict[str, Stream]:
        if self._streams is None:
            self._streams = self._collect("register_streams", "stream")
        return self._streams

    @property
    def target_types(self) -> dict[str, Any]:
        if self._target_types is None:
            self._target_types = self._collect("register_targets", "target type")
        return self._target_types

    def add_commands(self, cli) -> None:
        self.pm.hook.register_commands(cli=cli)

    def blueprints(self) -> list:
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
        found: list = []
        self.pm.hook.register_jobs(register=lambda *job: found.append(job), bridge=bridge)
        return found

    def receive(self, institution, stream: Stream, records) -> ReceivedBatch:
        batch = self.pm.hook.receive(institution=institution, stream=stream, records=records)
        if batch is None:
            raise PluginError(f"no plugin validates stream {stream.name!r}")
        return batch

    def transform(self, institution, stream: Stream, target: Target, records) -> list:
        items = self.pm.hook.transform(institution=institution, stream=stream, target=target,
                                       records=records)
        if items is None:
            raise PluginError(f"no plugin maps stream {stream.name!r} to target type "
                              f"{target.kind!r}")
        return items

    def push(self, institution, stream: Stream, target: Target, items: list) -> PushResult:
        result = self.pm.hook.push(institution=institution, stream=stream, target=target,
                                   items=items)
        if result is None:
            raise PluginError(f"no plugin pushes to target type {target.kind!r}")
        return result

    def reconcile(self, institution, stream: Stream, target: Target):
        spec = self.pm.hook.reconcile(institution=institution, stream=stream, target=target)
        if spec is None:
            raise PluginError(f"no plugin reconciles stream {stream.name!r} with a "
                              f"{target.kind} target")
        return spec

    def forget(self, bridge, institution, contact_number: str) -> list[str]:
        said = self.pm.hook.forget(bridge=bridge, institution=institution,
                                   contact_number=contact_number)
        return [line for lines in said for line in (lines or [])]

    def describe(self) -> list[dict]:
        """Every loaded plugin with where it comes from and the hooks it implements."""
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
            })
        return rows


def _folder(location) -> Path:
    """The folder of a package, or a path given as it is."""
    folder = Path(location.__file__).parent if isinstance(location, ModuleType) \
        else Path(location)
    if not folder.is_dir():
        raise PluginError(f"register_migrations: {location} is not a folder of migrations")
    return folder.resolve()
