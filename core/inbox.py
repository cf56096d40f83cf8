"""Ingest: validate a batch, drop versions already seen, store the rest durably in one commit."""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass
from functools import cache

import orjson
from sqlalchemy import and_, bindparam, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite

from .config import Institution
from .db import INBOX, QUARANTINE, executemany, write
from .streams import Stream

_CHUNK = 400  # rows per duplicate look-up, well under every database's parameter limit
_DIALECTS = {"sqlite": sqlite, "postgresql": postgresql}
_COLUMNS = ("institution", "stream", "record_key", "content_hash", "payload", "received_at",
            "state", "attempts", "next_attempt_at")


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    quarantined: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def canonical(record: dict, envelope: frozenset[str]) -> bytes:
    """The record without its envelope fields, as sorted JSON: what is stored and hashed."""
    if not envelope.isdisjoint(record):
        record = {k: v for k, v in record.items() if k not in envelope}
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


@cache
def _insert_statement(dialect: str):
    return _DIALECTS[dialect].insert(INBOX).values(
        {c: bindparam(c) for c in _COLUMNS}).on_conflict_do_nothing()


def _insert_new(conn, rows: list[dict]) -> int:
    """Insert the versions not stored yet; answer how many were new. Where the driver counts
    the rows of a multi-row insert, one statement does it; elsewhere a look-up comes first."""
    if not rows:
        return 0
    stmt = _insert_statement(conn.dialect.name)
    if conn.dialect.supports_sane_multi_rowcount:
        return executemany(conn, stmt, rows, "inbox-insert")
    known = _known_versions(conn, rows[0]["institution"], rows[0]["stream"], rows)
    new = [r for r in rows if (r["record_key"], r["content_hash"]) not in known]
    if new:
        conn.execute(stmt, new)
    return len(new)


def ingest(bridge, institution: Institution, stream: Stream, records: list) -> IngestResult:
    """Store every new version of the batch's records; quarantine the invalid ones.

    A version is a record's content (envelope excluded) under its key: one already in the inbox,
    whatever its state, is a duplicate and is not processed again.
    """
    batch = bridge.hooks.receive(institution, stream, records)
    result = IngestResult()
    now = time.time()
    rows, seen = [], set()
    for key, record in batch.accepted:
        payload = canonical(record, stream.envelope_fields)
        digest = hashlib.blake2b(payload, digest_size=16).hexdigest()
        if (key, digest) in seen:
            result.duplicates += 1
            continue
        seen.add((key, digest))
        rows.append({"institution": institution.code, "stream": stream.name, "record_key": key,
                     "content_hash": digest, "payload": payload.decode(), "received_at": now,
                     "state": "pending", "attempts": 0, "next_attempt_at": now})
    held = [{"institution": institution.code, "stream": stream.name,
             "payload": orjson.dumps(record).decode(), "reason": reason, "received_at": now,
             "state": "held"} for record, reason in batch.rejected]
    with write(bridge.engine) as conn:
        result.accepted = _insert_new(conn, rows)
        if held:
            conn.execute(QUARANTINE.insert(), held)
    result.duplicates += len(rows) - result.accepted
    result.quarantined = len(held)
    return result


def _known_versions(conn, institution: str, stream: str, rows: list[dict]) -> set:
    known: set = set()
    pairs = [(r["record_key"], r["content_hash"]) for r in rows]
    for i in range(0, len(pairs), _CHUNK):
        chunk = pairs[i:i + _CHUNK]
        query = select(INBOX.c.record_key, INBOX.c.content_hash).where(and_(
            INBOX.c.institution == institution, INBOX.c.stream == stream,
            tuple_(INBOX.c.record_key, INBOX.c.content_hash).in_(chunk)))
        known.update(map(tuple, conn.execute(query)))
    return known
