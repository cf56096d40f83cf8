"""The built-in ``jsonl`` target: a journal that appends every push as JSON lines to a file.

It keeps every delivery, re-deliveries included, which makes it the tool to rehearse and audit
a flow (and to count pushes in tests); use the ``sql`` target for data that must be upserted.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

import orjson

from s360bridge.core.api import (
    ANY_STREAM,
    ConfigError,
    PushResult,
    Target,
    TargetUnavailable,
    hookimpl,
)


class JsonlTarget(Target):
    kind = "jsonl"

    def __init__(self, name, options, ctx):
        super().__init__(name, options, ctx)
        if set(options) != {"path"}:
            raise ConfigError("a jsonl target takes exactly one option: path")
        self.path = Path(options["path"])
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"jsonl {self.path}"

    def append(self, lines: list[bytes]) -> None:
        data = b"".join(line + b"\n" for line in lines)
        try:
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # one locked O_APPEND write per push: processes never interleave their lines
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    os.write(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as exc:
            raise TargetUnavailable(f"cannot append to {self.path}: {exc}") from exc

    def drop(self, matches) -> int:
        """Rewrite the journal without the lines ``matches`` selects; answer how many went."""
        with self._lock, open(self.path, "r+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            lines = f.read().splitlines(keepends=True)
            kept = [line for line in lines if not matches(orjson.loads(line))]
            f.seek(0)
            f.writelines(kept)
            f.truncate()
            f.flush()
            os.fsync(f.fileno())
        return len(lines) - len(kept)


@hookimpl
def register_targets(register):
    register("jsonl", JsonlTarget)


@hookimpl
def register_transforms(register):
    register(ANY_STREAM, JsonlTarget.kind)  # any record, as it is


@hookimpl
def transform(institution, stream, target, records):
    return [{"institution": institution.code, "stream": stream.name, "key": r.key, "seq": r.seq,
             "record": r.record} for r in records]


@hookimpl
def push(institution, stream, target, items):
    target.append([orjson.dumps(item) for item in items])
    return PushResult()


@hookimpl
def forget(bridge, institution, contact_number):
    """Rewrite the journals of the institution without the contact's records."""
    personal = {name for name, s in bridge.hooks.streams.items() if s.personal_data}
    said = []
    for target in bridge.targets_of(institution, JsonlTarget.kind):
        if target.path.exists():
            n = target.drop(lambda line: line["institution"] == institution.code
                            and line["stream"] in personal and line["key"] == contact_number)
            said.append(f"target {target.name}: {n} journal line(s)")
    return said
