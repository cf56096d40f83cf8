"""The built-in ``jsonl`` target: a journal that appends every push as JSON lines to a file.

It keeps every delivery, re-deliveries included, which makes it the tool to rehearse and audit
a flow (and to count pushes in tests); every line carries the delivery's ``idempotency_key``, and
with ``dedupe: true`` a key already in the journal is not written again. Use the ``sql`` target
for data that must be upserted.
"""

from __future__ import annotations

import fcntl
import os
import stat
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
        self._journal: tuple[int, int] | None = None  # ... of this file (a rewrite replaces it)

    def describe(self) -> str:
        return f"jsonl {self.path}"

    def append(self, items: list[dict]) -> None:
        """One locked O_APPEND write per push: processes never interleave their lines. With
        ``dedupe``, items whose idempotency key the journal holds already are left out."""
        try:
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = _locked(self.path)
                try:
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
        end, journal = os.lseek(fd, 0, os.SEEK_END), _identity(os.fstat(fd))
        if journal != self._journal or end < self._read_up_to:  # rewritten (forget), emptied
            self._written.clear()
            self._read_up_to, self._journal = 0, journal
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
        """Write the journal again without the lines ``matches`` selects, into a new file that
        then takes its place: a crash or a full disk leaves the old one whole, and the other
        processes' appends and dedupe reads move to the new one (``_locked``, ``_unwritten``).
        Answer how many lines went."""
        with self._lock:
            fd = _locked(self.path)
            try:
                lines = self.path.read_bytes().splitlines(keepends=True)
                if lines and not lines[-1].endswith(b"\n"):  # torn: no delivery
                    lines.pop()
                kept = [line for line in lines if not matches(orjson.loads(line))]
                _replace(self.path, b"".join(kept), stat.S_IMODE(os.fstat(fd).st_mode))
            finally:
                os.close(fd)
        return len(lines) - len(kept)


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _locked(path: Path) -> int:
    """The journal, opened to append and locked. A rewrite (``drop``) that replaced the file
    while this waited for the lock leaves it holding the old one, gone from the folder: then
    the new one is opened and locked instead."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _identity(os.fstat(fd)) == _identity(os.stat(path)):
                return fd
        except FileNotFoundError:  # removed meanwhile: made again by the next open
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _replace(path: Path, data: bytes, mode: int) -> None:
    """``path``'s content becomes ``data`` whole, or stays as it was."""
    tmp = path.with_name(f".{path.name}.rewrite")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        _write_all(fd, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the new name survives a power cut
    finally:
        os.close(folder)


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
