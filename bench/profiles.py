"""A py-spy profile in its raw format (``py-spy record -f raw``: one line per stack, frames
separated by ``;``, then the sample count) as the functions that took the time: their own
samples, and the samples they were on the stack for."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def _name(frame: str) -> str:
    """``function (file)``, the file from the package or site-packages on, without lines."""
    found = _FRAME.match(frame.strip())
    if not found:
        return frame.strip()
    path = found["file"]
    for mark in ("site-packages/", "s360bridge/", "/lib/python3"):
        if mark in path:
            path = path.split(mark, 1)[1]
            break
    return f"{found['func']} ({path})"


def summary(path: Path) -> tuple[int, Counter, Counter]:
    """Total samples, own samples per function, samples on the stack per function."""
    own, inclusive, total = Counter(), Counter(), 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_name(f) for f in stack.split(";")]
        total += n
        own[frames[-1]] += n
        for name in set(frames):
            inclusive[name] += n
    return total, own, inclusive


def print_profile(path: Path, top: int) -> None:
    total, own, inclusive = summary(path)
    if not total:
        print(f"  profile {path}: no samples")
        return
    print(f"  profile ({total:,} samples, {path}): own time")
    for name, n in own.most_common(top):
        print(f"    {n / total:6.1%}  {name}")
    print("  on the stack")
    for name, n in inclusive.most_common(top * 2):
        print(f"    {n / total:6.1%}  {name}")
