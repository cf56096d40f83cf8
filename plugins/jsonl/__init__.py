"""The built-in ``jsonl`` target: a journal that appends every push as JSON lines to a file.

It keeps every delivery, re-deliveries included, which makes it the tool to rehearse and audit
a flow (and to count pushes in tests); every line carries the delivery's ``idempotency_key``, and
with ``dedupe: true`` a key already in the journal is not written again. Use the ``sql`` target
for data that must be upserted. `forget` blanks a contact's lines where they are: each becomes
``{"forgotten":true}`` and spaces, at its length, so that the journal only ever grows.
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

FORGOTTEN = b'{"forgotten":true}'  # what `forget` leaves of a line, padded to its length


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
                    _write_all(fd, b"".join(orjson.dumps(i) + b"\n" for i in items))
                    if self.dedupe:  # in the journal now, not before
                        self._written.update(i["idempotency_key"] for i in items)
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
        if end < self._read_up_to:  # emptied or replaced by hand: read it all again
            self._written.clear()
            self._read_up_to = 0
        new = os.pread(fd, end - self._read_up_to, self._read_up_to)
        self._written.update(orjson.loads(line).get("idempotency_key")
                             for line in new.splitlines() if line)
        self._read_up_to = end
        fresh, keys = [], set()
        for i in items:  # a key twice in one push is written once
            if i["idempotency_key"] not in self._written and i["idempotency_key"] not in keys:
                keys.add(i["idempotency_key"])
                fresh.append(i)
        return fresh

    def drop(self, matches) -> int:
        """Blank the lines ``matches`` selects where they are, at their length (``FORGOTTEN``
        and spaces): nothing else in the journal moves, so what other processes have read of
        it stays true, and a killed `forget` leaves every line whole. A torn last line is cut
        off first, as by the next append. Answer how many lines went."""
        with self._lock:
            fd = os.open(self.path, os.O_RDWR)  # not O_APPEND: each line is written in place
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                _cut_torn_tail(fd)
                gone, at = 0, os.lseek(fd, 0, os.SEEK_SET)
                with open(fd, "rb", closefd=False) as lines:  # read on, whatever the size
                    for line in lines:
                        record = orjson.loads(line) if line.strip() else None
                        if isinstance(record, dict) and record.keys() - {"forgotten"} \
                                and matches(record):
                            _write_at(fd, _blank(len(line)), at)
                            gone += 1
                        at += len(line)
                os.fsync(fd)
            finally:
                os.close(fd)
        return gone


def _blank(size: int) -> bytes:
    """A line of ``size`` bytes that says a record was there: JSON, then spaces."""
    text = FORGOTTEN if size > len(FORGOTTEN) else b"{}"
    return text.ljust(size - 1) + b"\n"


def _write_at(fd: int, data: bytes, offset: int) -> None:
    """Write ``data`` whole at ``offset`` (a write may stop short: it goes on from there)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _write_all(fd: int, data: bytes) -> None:
    """Write ``data`` whole and sync it, or leave the journal as it was and raise: a write cut
    short (the disk full, a quota) must not count as a delivery, and a fragment left at the
    end would be cut off by the next append (``_cut_torn_tail``) without a word."""
    start = os.lseek(fd, 0, os.SEEK_END)
    try:
        _write_at(fd, data, start)  # the end: nobody else writes under the lock
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
    """Blank the contact's lines in the journals of the institution."""
    personal = {name for name, s in bridge.hooks.streams.items() if s.personal_data}
    said = []
    for target in bridge.targets_of(institution, JsonlTarget.kind):
        if target.path.exists():
            n = target.drop(lambda line: line.get("institution") == institution.code
                            and line.get("stream") in personal
                            and line.get("key") == contact_number)
            said.append(f"target {target.name}: {n} journal line(s)")
    return said
