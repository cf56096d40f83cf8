"""The plugins of examples/, seen by the tests as a user installs them, yet never installed into
the virtualenv: ``pip install --no-deps --target`` into a temporary folder (no dependencies: the
s360bridge under test is the one they use), that folder on ``sys.path`` for tests in this
process (``PYTHONPATH`` for a subprocess), the plugins loaded through their entry points.

Self-contained on purpose, so that it can merge with how tests/external_plugin gets installed.
"""

from __future__ import annotations

import importlib
import shutil
import sqlite3
import subprocess
import sys
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path

from s360bridge.core.api import WAREHOUSE
from s360bridge.core.plugin.manager import ENTRY_POINT_GROUP, check, plugin_manager

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = {"s360bridge-webhook": ROOT / "examples" / "webhook_target",
            "s360bridge-access-control": ROOT / "examples" / "access_control"}
PACKAGES = ("s360bridge_webhook", "s360bridge_access_control")


def install(into: Path) -> Path:
    """Install every example into ``into/site`` and answer that folder. The sources are
    copied first: a setuptools build writes build/ and *.egg-info beside them."""
    site, copies = into / "site", []
    for path in EXAMPLES.values():
        copy = into / "src" / path.name
        shutil.copytree(path, copy, ignore=shutil.ignore_patterns(
            "build", "*.egg-info", "__pycache__"))
        copies.append(str(copy))
    install_outside(copies, site)
    return site


def install_outside(sources: list[str], site: Path) -> None:
    """``pip install --no-deps --target site`` of local distributions, built with the
    virtualenv's own setuptools (make install brings it): nothing is downloaded at test time."""
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                           "--no-index", "--no-build-isolation", "--no-input", "--target",
                           str(site), *sources], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr


@contextmanager
def loaded(site: Path):
    """The examples registered on the process-wide plugin manager for the duration, each
    through its entry point in ``site`` (answers entry-point name -> module). After, they are
    unregistered and forgotten, and their tables leave the shared warehouse spec."""
    pm = plugin_manager()  # loaded first, or its own entry-point scan would take them
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    tables, names = set(WAREHOUSE.tables), []
    try:
        found = {}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.dist is not None and ep.dist.name in EXAMPLES \
                    and Path(ep.dist.locate_file("")).resolve() == site.resolve():
                found[ep.name] = ep.load()
                pm.register(found[ep.name], name=ep.name)
                names.append(ep.name)
        check(pm)
        yield found
    finally:
        for name in names:
            pm.unregister(name=name)
        for name in set(WAREHOUSE.tables) - tables:
            WAREHOUSE.remove(WAREHOUSE.tables[name])
        sys.path.remove(str(site))
        for module in [m for m in sys.modules if m.split(".")[0] in PACKAGES]:
            del sys.modules[module]


def versions(tmp_path, stream: str) -> list[tuple]:
    """The stream's inbox: (key, seq, state, attempts, next_attempt_at - received_at, payload,
    received_at) per version, in arrival order."""
    with sqlite3.connect(tmp_path / "engine.db") as conn:
        return list(conn.execute(
            "SELECT record_key, id, state, attempts, next_attempt_at - received_at, payload, "
            "received_at FROM inbox_state WHERE stream = ? ORDER BY id", (stream,)))
