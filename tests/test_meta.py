"""Meta: every hook is documented in docs/plugins.md with the signature of its spec, and is
called through a real plugin by some test of the suite."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from s360bridge.core.plugin import hookspecs
from s360bridge.core.plugin.manager import hook_names

from .conftest import FULL_RUN, HOOKS_CALLED

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTED = dict(re.findall(r"^### `(\w+)\(([^)]*)\)`", (ROOT / "docs" / "plugins.md")
                             .read_text("utf-8"), flags=re.M))


def test_there_are_hooks():
    assert {"receive", "transform", "push", "register_streams"} <= set(hook_names())


@pytest.mark.parametrize("name", hook_names())
def test_hook_is_documented_with_the_signature_of_its_spec(name):
    spec = getattr(hookspecs, name)
    assert spec.__doc__, f"hookspec {name} has no docstring"
    assert name in DOCUMENTED, f"hook {name} is not documented in docs/plugins.md"
    documented = [p.strip() for p in DOCUMENTED[name].split(",") if p.strip()]
    assert documented == list(inspect.signature(spec).parameters), \
        f"docs/plugins.md documents {name}({DOCUMENTED[name]}), the spec differs"


def test_no_documented_hook_is_gone():
    assert set(DOCUMENTED) <= set(hook_names())


@pytest.mark.last
def test_every_hook_was_called_through_a_plugin_by_some_test(request):
    if not request.config.stash.get(FULL_RUN, False):
        pytest.skip("only meaningful when the whole suite runs")
    assert sorted(set(hook_names()) - HOOKS_CALLED) == []
