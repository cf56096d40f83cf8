"""The built-in ``jsonl`` target: a journal that appends every push as JSON lines to a file.

It keeps every delivery, re-deliveries included, which makes it the tool to rehearse and audit
a flow (and to count pushes in tests); every line carries the delivery's ``idempotency_key``, and
with ``dedupe: true`` a key already in the journal is not written again. Use the ``sql`` target
for data that must be upserted.
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
    Target,
    TargetUnavailable,
    hookimpl,
    target_hooks,
)


class JsonlTarget(Target):
    kind = "jsonl"
    records_progress = False  # a journal takes repeats by design; dedupe drops them by key

    def __init__(self, name, options, ctx):
        super().__init__(name, options, ctx)
        if "path" not in options or set(options) - {"path", "dedupe"}:
            raise ConfigError("a jsonl target takes the options path (required) and dedupe")
        if not isinstance(options.get("dedupe", False), bool):
            raise ConfigError("dedupe: expected true or false")
        self.path = Path(options["path"])
        self.dedupe = options.get("dedupe", False)
        self._lock = threading.Lock()
        self._written: set[str] = set()  # with dedupe: the idempotency keys in the journal
        self._read_up_to = 0  # ... as read up to this offset (other processes append too)
        self._tail = b""  # ... where the last line read ends it: is it still there?

    def describe(self) -> str:
        return f"jsonl {self.path}"

    def append(self, items: list[dict]) -> None:
        """One locked O_APPEND write per push: processes never interleave their lines. With
        ``dedupe``, items whose idempotency key the journal holds already are left out."""
        try:
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    _cut_torn_tail(fd)
                    if self.dedupe:
                        items = self._unwritten(fd, items)
                    data = b"".join(orjson.dumps(i) + b"\n" for i in items)
                    _write_all(fd, data)
                    if self.dedupe and data:  # in the journal now, not before
                        self._written.update(i["idempotency_key"] for i in items)
                        self._tail = data[data.rfind(b"\n", 0, -1) + 1:]
                    self._read_up_to = os.lseek(fd, 0, os.SEEK_END)
                finally:
                    os.close(fd)
        except OSError as exc:
            raise TargetUnavailable(f"cannot append to {self.path}: {exc}") from exc

    def deliver(self, institution, stream, items):
        self.append(items)

    def _unwritten(self, fd: int, items: list[dict]) -> list[dict]:
        """The items not in the journal yet, after reading what others appended since."""
        end = os.lseek(fd, 0, os.SEEK_END)
        if not self._read_still_there(fd, end):  # rewritten by forget: read it all again
            self._written.clear()
            self._read_up_to, self._tail = 0, b""
        new = os.pread(fd, end - self._read_up_to, self._read_up_to)
        self._written.update(orjson.loads(line).get("idempotency_key")
                             for line in new.splitlines() if line)
        if new:
            self._tail = new[new.rfind(b"\n", 0, -1) + 1:]
        self._read_up_to = end
        fresh, keys = [], set()
        for i in items:  # a key twice in one push is written once
            if i["idempotency_key"] not in self._written and i["idempotency_key"] not in keys:
                keys.add(i["idempotency_key"])
                fresh.append(i)
        return fresh

    def _read_still_there(self, fd: int, end: int) -> bool:
        """Whether the journal still holds what this process read of it where it was. `forget`
        (``drop``), in any process, rewrites it without some lines: everything after the first
        line it drops moves up, so the last line read, unique by its key, is no longer where
        it ended, or is gone."""
        start = self._read_up_to - len(self._tail)
        return end >= self._read_up_to and os.pread(fd, len(self._tail), start) == self._tail

    def drop(self, matches) -> int:
        """Rewrite the journal without the lines ``matches`` selects; answer how many went."""
        with self._lock, open(self.path, "r+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            lines = f.read().splitlines(keepends=True)
            if lines and not lines[-1].endswith(b"\n"):  # torn: no delivery (_cut_torn_tail)
                lines.pop()
            kept = [line for line in lines if not matches(orjson.loads(line))]
            f.seek(0)
            f.writelines(kept)
            f.truncate()
            f.flush()
            os.fsync(f.fileno())
        return len(lines) - len(kept)


def _write_all(fd: int, data: bytes) -> None:
    """Write ``data`` whole and sync it, or leave the journal as it was and raise: a write cut
    short (the disk full, a quota) must not count as a delivery, and a fragment left at the
    end would be cut off by the next append (``_cut_torn_tail``) without a word."""
    start = os.lseek(fd, 0, os.SEEK_END)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError:
        os.ftruncate(fd, start)
        raise


def _cut_torn_tail(fd: int) -> None:
    """A journal that does not end with a newline was cut mid-append (its process killed in
    the write of a push): the torn line is no delivery (that push never returned, so its
    records go out again) and would garble the next line appended to it. Cut it off."""
    end = os.lseek(fd, 0, os.SEEK_END)
    if end == 0 or os.pread(fd, 1, end - 1) == b"\n":
        return
    start = max(0, end - (1 << 16))
    while True:  # the last newline, read back from the end a block at a time
        block = os.pread(fd, end - start, start)
        newline = block.rfind(b"\n")
        if newline >= 0 or start == 0:
            break
        end, start = start, max(0, start - (1 << 16))
    os.ftruncate(fd, start + newline + 1 if newline >= 0 else 0)


register_targets, push = target_hooks(JsonlTarget)


@hookimpl
def register_transforms(register):
    register(ANY_STREAM, JsonlTarget.kind)  # any record, as it is


@hookimpl
def transform(institution, stream, target, records):
    return [{"institution": institution.code, "stream": stream.name, "key": r.key, "seq": r.seq,
             "idempotency_key": r.idempotency_key, "record": r.record} for r in records]


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
