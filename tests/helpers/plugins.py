"""Registering a test plugin on the process-wide plugin manager for one test."""

from __future__ import annotations

from contextlib import contextmanager

from s360bridge.core.plugin.manager import check, plugin_manager


@contextmanager
def registered(plugin, name: str):
    """Register a test plugin on the process-wide manager for the duration of a test."""
    pm = plugin_manager()
    pm.register(plugin, name=name)
    try:
        check(pm)
        yield pm
    finally:
        pm.unregister(name=name)
