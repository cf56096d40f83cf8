"""Routing by declaration: which plugin answers each connector hook call.

A plugin registers streams and target types, and declares the (stream, target type) pairs its
``transform`` maps (``"*"``: any stream). The core then calls ``receive`` and ``reconcile`` only
on the stream's plugin, ``push`` only on the target type's plugin and ``transform`` only on the
pair's plugin; no plugin needs to look at another plugin's classes to know a call is for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from s360bridge.core.errors import PluginError

ANY_STREAM = "*"


@dataclass(frozen=True)
class Pair:
    """A declared transform: ``plugin`` maps ``stream`` into what targets of ``kind`` take.
    ``check(institution, stream_name, target)`` answers why a configured target cannot take
    the stream (e.g. no URL configured for it), or None when it can."""

    stream: str
    kind: str
    plugin: str
    check: Callable[[Any, str, Any], str | None] | None = None


def per_plugin(pm, hook_name: str):
    """(plugin name, the hook called on that plugin alone) for each implementation."""
    plugins = dict(pm.list_name_plugin())
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        others = [p for name, p in plugins.items() if name != impl.plugin_name]
        yield impl.plugin_name, pm.subset_hook_caller(hook_name, remove_plugins=others)


def owned(pm, hook_name: str, what: str) -> dict[str, tuple[Any, str]]:
    """Call a registration hook plugin by plugin: name -> (what was registered, plugin)."""
    found: dict[str, tuple[Any, str]] = {}
    for plugin, call in per_plugin(pm, hook_name):
        def register(name_or_obj, value=None, _plugin=plugin):
            name = getattr(name_or_obj, "name", name_or_obj)
            if name in found:
                raise PluginError(f"plugins {found[name][1]!r} and {_plugin!r} both register "
                                  f"the {what} {name!r}")
            found[name] = (name_or_obj if value is None else value, _plugin)
        call(register=register)
    return found


def declared_pairs(pm) -> dict[tuple[str, str], Pair]:
    """Every (stream, kind) pair declared through ``register_transforms``; a pair declared by
    two plugins, or declared by a plugin without a ``transform`` hook, stops loading."""
    pairs: dict[tuple[str, str], Pair] = {}
    for plugin, call in per_plugin(pm, "register_transforms"):
        def register(stream: str, kind: str, check=None, _plugin=plugin):
            other = pairs.get((stream, kind))
            if other is not None:
                raise PluginError(f"plugins {other.plugin!r} and {_plugin!r} both declare the "
                                  f"transform of stream {stream!r} to target type {kind!r}")
            pairs[(stream, kind)] = Pair(stream, kind, _plugin, check)
        call(register=register)
    transforming = {i.plugin_name for i in pm.hook.transform.get_hookimpls()}
    declaring = {p.plugin for p in pairs.values()}
    for name in sorted(declaring - transforming):
        raise PluginError(f"plugin {name!r} declares transforms (register_transforms) but "
                          "implements no transform hook")
    for name in sorted(transforming - declaring):
        raise PluginError(f"plugin {name!r} implements transform but declares no pair: "
                          "add a register_transforms hook saying which streams and target "
                          "types it maps")
    return pairs


def find(pairs: dict[tuple[str, str], Pair], stream: str, kind: str) -> Pair | None:
    """The pair that maps ``stream`` to ``kind``: an exact declaration before a wildcard."""
    return pairs.get((stream, kind)) or pairs.get((ANY_STREAM, kind))


def problem(pairs: dict[tuple[str, str], Pair], institution, stream: str,
            target) -> str | None:
    """Why the configured ``target`` cannot take ``stream``, naming what comes close; or None."""
    pair = find(pairs, stream, target.kind)
    if pair is None:
        close = sorted({f"{p.plugin} ({p.stream} -> {p.kind})" for p in pairs.values()
                        if p.stream == stream or p.kind == target.kind})
        return (f"no plugin maps stream {stream!r} to target type {target.kind!r}"
                + (f"; declared close to it: {', '.join(close)}" if close else
                   "; no plugin declares anything for this stream or this target type"))
    return pair.check(institution, stream, target) if pair.check else None
