"""Initial import: history from an S-360 export, through the same path as the webhooks.

A file is JSON lines (one record per line, in the webhook's record shape, for every stream) or
CSV (for flat streams, whose plugin turns a row into a record). Records go through the stream's
validation, the history cut-off, the inbox and the targets, like webhook records. Progress is a
checkpoint (how many lines of this file are stored), written in the same transaction as the
records, so an import stopped anywhere, even by ``kill -9``, resumes where it stopped and never
stores a record twice.
"""

from __future__ import annotations

import csv
import hashlib
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from sqlalchemy import Column, Float, Integer, MetaData, String, Table, select

from s360bridge.core.errors import S360BridgeError
from s360bridge.core.operations.import_delivery import commits_unflushed
from s360bridge.core.pipeline import rawjson
from s360bridge.core.pipeline.ingest import IngestResult, ingest
from s360bridge.core.storage.db import write
from s360bridge.core.storage.tables import dialect_insert

# the table is made by core/storage/migrations: change both
PROGRESS = Table("import_progress", MetaData(),
                 Column("institution", String(40), primary_key=True),
                 Column("stream", String(40), primary_key=True),
                 Column("file_id", String(64), primary_key=True),
                 Column("lines", Integer, nullable=False),
                 Column("done", Integer, nullable=False),
                 Column("updated_at", Float, nullable=False))


class ImportRefused(S360BridgeError):
    """The file cannot be imported as asked."""


@dataclass
class ImportReport:
    lines: int = 0  # lines of the file handled, earlier runs included
    resumed_at: int = 0
    totals: IngestResult = field(default_factory=IngestResult)


def file_id(path: Path) -> str:
    """The file's identity: its size and a digest of its first MiB."""
    with path.open("rb") as f:
        head = f.read(1 << 20)
    return hashlib.sha256(str(path.stat().st_size).encode() + b":" + head).hexdigest()


def _checkpoint(engine, inst: str, stream: str, fid: str) -> tuple[int, bool]:
    with engine.connect() as conn:
        row = conn.execute(select(PROGRESS.c.lines, PROGRESS.c.done).where(
            PROGRESS.c.institution == inst, PROGRESS.c.stream == stream,
            PROGRESS.c.file_id == fid)).first()
    return (row.lines, bool(row.done)) if row else (0, False)


def _save_checkpoint(inst: str, stream: str, fid: str, lines: int, done: bool):
    def save(conn):
        if conn.dialect.name == "postgresql":  # this transaction's commit: see the module
            conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
        ins = dialect_insert(conn, PROGRESS).values(
            institution=inst, stream=stream, file_id=fid, lines=lines, done=int(done),
            updated_at=time.time())
        conn.execute(ins.on_conflict_do_update(
            index_elements=["institution", "stream", "file_id"],
            set_={"lines": ins.excluded.lines, "done": ins.excluded.done,
                  "updated_at": ins.excluded.updated_at}))
    return save


def _lines(path: Path, fmt: str) -> Iterator[tuple[int, bytes | dict]]:
    """(bytes read, raw line or CSV row) for every non-blank line or row of the file."""
    with path.open("rb") as f:
        if fmt == "jsonl":
            for line in f:
                yield len(line), line
            return
        text = io.TextIOWrapper(f, encoding="utf-8-sig", newline="")
        rows = csv.DictReader(text)
        before = 0
        for row in rows:
            now = f.tell()  # the reader reads ahead: progress moves by buffer, which is fine
            yield now - before, row
            before = now


def run_import(bridge, inst, stream, path: Path, fmt: str, batch: int = 500,
               again: bool = False, progress=lambda n: None) -> ImportReport:
    """Import ``path`` into ``stream`` of ``inst``; resumes an earlier interrupted run."""
    if fmt == "csv" and stream.from_csv is None:
        raise ImportRefused(f"stream {stream.name} takes JSON lines only (CSV is for flat "
                           "streams such as ticketchecks)")
    fid = file_id(path)
    report = ImportReport()
    start, done = _checkpoint(bridge.engine, inst.code, stream.name, fid)
    if done and not again:
        report.lines = report.resumed_at = start
        return report
    start = 0 if again else start
    report.resumed_at = start
    records, raw, unreadable, n, read = [], [], [], 0, [0]

    def flush():
        """Store the records read so far, the unreadable lines and the checkpoint, at once."""
        progress(read[0])  # the progress bar moves by batch: per line it cost more than a parse
        read[0] = 0
        save = _save_checkpoint(inst.code, stream.name, fid, n, False)
        lines = list(raw)  # decoded only for a record to quarantine
        report.totals.add(ingest(bridge, inst, stream, records, also=save,
                                 originals=(lambda: [line.decode().strip() for line in lines])
                                 if fmt == "jsonl" else None,
                                 unreadable=unreadable))
        records.clear()
        raw.clear()
        unreadable.clear()

    with commits_unflushed(bridge.engine):
        for size, item in _lines(path, fmt):
            n += 1
            read[0] += size
            if n <= start:
                continue
            if fmt == "csv":
                records.append(stream.from_csv(inst, item))
            elif item.strip():
                try:
                    record = orjson.loads(item)
                except orjson.JSONDecodeError as exc:
                    unreadable.append((rawjson.storable(item), f"line {n}: not JSON: {exc}"))
                else:
                    if isinstance(record, dict):
                        records.append(record)
                        raw.append(item)
                    else:
                        unreadable.append((rawjson.storable(item),
                                           f"line {n}: not a JSON object"))
            if len(records) + len(unreadable) >= batch:
                flush()
        flush()
    with write(bridge.engine) as conn:
        _save_checkpoint(inst.code, stream.name, fid, n, True)(conn)
    report.lines = n
    return report
