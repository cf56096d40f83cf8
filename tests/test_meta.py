"""Meta: every hook is documented in docs/plugins.md and exercised by at least one test."""

from __future__ import annotations

from pathlib import Path

import pytest

from s360bridge.core.plugin import hookspecs
from s360bridge.core.plugin.manager import hook_names

ROOT = Path(__file__).resolve().parent.parent
TEST_SOURCES = {p.name: p.read_text("utf-8") for p in (ROOT / "tests").rglob("test_*.py")
                if p.name != Path(__file__).name}


def test_there_are_hooks():
    assert {"receive", "transform", "push", "register_streams"} <= set(hook_names())


@pytest.mark.parametrize("name", hook_names())
def test_hook_is_documented(name):
    assert getattr(hookspecs, name).__doc__, f"hookspec {name} has no docstring"
    assert f"### `{name}(" in (ROOT / "docs" / "plugins.md").read_text("utf-8"), \
        f"hook {name} is not documented in docs/plugins.md"


@pytest.mark.parametrize("name", hook_names())
def test_hook_is_tested(name):
    assert any(name in text for text in TEST_SOURCES.values()), f"no test mentions hook {name}"
