"""What a Python file imports, read from its syntax tree (for the tests of plugin imports)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path


def absolute_imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every absolute import in the file; relative ones are its own."""
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names)
