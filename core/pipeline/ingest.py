"""Ingest: validate a batch, drop versions already seen, store the rest durably in one commit;
quarantine, as received, each record that cannot be validated or stored, not its neighbours."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cache

import orjson
from sqlalchemy import bindparam

from s360bridge.core.config import Institution
from s360bridge.core.errors import PluginError
from s360bridge.core.pipeline.quarantine import encoded, hold
from s360bridge.core.plugin.streams import ReceivedBatch, Stream
from s360bridge.core.s360.times import utc_or_none
from s360bridge.core.storage.copies import copy_alone, copy_insert, copy_new
from s360bridge.core.storage.db import alone, write
from s360bridge.core.storage.rawsql import executemany, run
from s360bridge.core.storage.tables import INBOX, SKIPPED, dialect_insert, key_hash

_COLUMNS = ("institution", "stream", "record_key", "content_hash", "payload", "received_at",
            "state", "attempts")
# each new version is queued for delivery in the same transaction (SQLite: the rows after the
# largest id before the insert) or statement (PostgreSQL, with its key's hash: tables.key_hash)
_QUEUE_AFTER = """INSERT INTO queue (id, institution, next_attempt_at)
    SELECT id, institution, 0 FROM inbox WHERE id > ?"""
_QUEUE_RETURNED = """INSERT INTO queue (id, institution, next_attempt_at, key_hash)
    SELECT id, institution, 0, key_hash FROM new"""
# PostgreSQL: the ids of a batch of new versions (of one institution and stream, their keys
# given in order as one JSON array: a fortieth of the client's CPU of a text[] parameter),
# queued as they are drawn (the sequence looked up once, in a sub-select, rather than for
# every row). The n-th key's hash goes with the n-th id drawn, which copy_new gives the n-th
# row: the ids are drawn in the array's order, increasing (one scan of the array, one
# session); tests/test_superseded_elsewhere.py checks every row's hash.
_NUMBERED_AND_QUEUED = f"""INSERT INTO queue (id, institution, next_attempt_at, key_hash)
    SELECT nextval((SELECT pg_get_serial_sequence('inbox', 'id'))), p.inst, 0,
        {key_hash("p.inst", "p.stream", "k.key")}
    FROM (SELECT ?::text AS inst, ?::text AS stream) AS p,
        json_array_elements_text(?::json) AS k(key)
    RETURNING id"""
# a version there already is skipped; any other conflict (an id the sequence gave twice, after
# a restore that did not set it) fails the batch, which S-360 sends again, rather than passing
# for a duplicate
_SKIP_KNOWN = f"""ON CONFLICT ON CONSTRAINT uq_inbox_version DO NOTHING
    RETURNING id, institution, {key_hash("institution", "stream", "record_key")} AS key_hash"""


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    before_cutoff: int = 0  # older than the institution's history cut-off: left out, counted

    def as_dict(self) -> dict:
        return asdict(self)

    def add(self, other: IngestResult) -> None:
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)


def canonical(record: dict, envelope: frozenset[str]) -> bytes:
    """The record without its envelope fields, as sorted JSON: what is stored and hashed."""
    if not envelope.isdisjoint(record):
        record = {k: v for k, v in record.items() if k not in envelope}
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


@cache
def _insert_statement(dialect: str):
    return dialect_insert(dialect, INBOX).values(
        {c: bindparam(c) for c in _COLUMNS}).on_conflict_do_nothing()


def _insert_new(conn, rows: list[tuple], known: bool = False) -> int:
    """Insert the versions not stored yet, in one statement that skips those already there,
    and queue them; the driver's row count says how many were new. On SQLite, which has the
    database to itself for the transaction (``BEGIN IMMEDIATE``), the new rows are those after
    the largest id before the insert. On PostgreSQL a batch of new versions is copied straight
    into the inbox, numbered from its sequence by the statement that queues them
    (``copy_new``); a batch with a version there already goes through COPY, a temporary table
    and an insert that skips those: through gunicorn, 0.76 and 0.82 of SQLite's ingest in two
    runs, against 0.63 and 0.72 for psycopg's pipelined executemany, interleaved (one thread
    alone favours the pipeline, 43 against 52 µs a record: its fewer round trips, while COPY
    leaves the server less work per row). ``known``: the batch's copy was refused already
    (``store``), so it goes to the temporary table without a second try."""
    if not rows:
        return 0
    if conn.dialect.name == "postgresql":
        numbering = (rows[0][0], rows[0][1], orjson.dumps([r[2] for r in rows]).decode())
        ids = None if known else copy_new(conn, "inbox", _COLUMNS, rows,
                                          numbered=("id", _NUMBERED_AND_QUEUED, numbering))
        if ids is None:  # a version of the batch is there already: the ones that are not
            return copy_insert(conn, "inbox", _COLUMNS, rows, _SKIP_KNOWN, _QUEUE_RETURNED)[0]
        return len(ids)
    before = run(conn, "SELECT coalesce(max(id), 0) FROM inbox")[0][0]
    new = executemany(conn, _insert_statement(conn.dialect.name), _COLUMNS, rows,
                      "inbox-insert")
    if new:
        run(conn, _QUEUE_AFTER, (before,))
    return new


def _recent(institution: Institution, stream: Stream, accepted: list) -> list:
    """The accepted records not older than the institution's history cut-off. This runs for
    every record the receiver takes, so the date is parsed only when its day is within a day
    of the cut-off day: no offset moves a time further than that."""
    limit = institution.cutoff_utc
    if limit is None or stream.dated is None:
        return accepted
    day = institution.history_cutoff
    early, late = str(day - dt.timedelta(days=1)), str(day + dt.timedelta(days=1))
    kept = []
    for key, record in accepted:
        text = stream.dated(institution, record)
        if isinstance(text, str) and len(text) >= 10:
            if text[:10] < early:
                continue
            if text[:10] <= late:
                when = utc_or_none(text, institution.timezone)
                if when is not None and when < limit:
                    continue
        kept.append((key, record))
    return kept


def _count_skipped(conn, institution: Institution, stream: Stream, reason: str,
                   n: int) -> None:
    ins = dialect_insert(conn, SKIPPED).values(
        institution=institution.code, stream=stream.name, reason=reason, count=n)
    conn.execute(ins.on_conflict_do_update(
        index_elements=["institution", "stream", "reason"],
        set_={"count": SKIPPED.c.count + ins.excluded.count}))


@dataclass
class Prepared:
    """A batch ready to store: the inbox rows of its new versions (in ``_COLUMNS`` order), the
    ``(text, reason)`` of each record to quarantine, and how many were before the cut-off."""

    rows: list[tuple]
    held: list[tuple[str, str]]
    before_cutoff: int


def _receive(bridge, institution: Institution, stream: Stream, records: list) -> ReceivedBatch:
    """The stream plugin's split of the batch; when its hook fails on the batch, it is asked
    record by record, and a record it fails on is rejected with what went wrong."""
    try:
        return bridge.hooks.receive(institution, stream, records)
    except PluginError:
        raise  # the plugin answers nothing at all: its fault, not a record's
    except Exception:  # one record may be the cause: asked one by one
        return _receive_each(bridge, institution, stream, records)


def _receive_each(bridge, institution: Institution, stream: Stream,
                  records: list) -> ReceivedBatch:
    batch = ReceivedBatch()
    for record in records:
        try:
            one = bridge.hooks.receive(institution, stream, [record])
        except PluginError:
            raise
        except Exception as exc:  # a record the plugin cannot validate: quarantined
            batch.rejected.append((record, f"the stream's plugin failed on it: "
                                           f"{type(exc).__name__}: {exc}"))
        else:
            batch.accepted += one.accepted
            batch.rejected += one.rejected
    return batch


def prepare(bridge, institution: Institution, stream: Stream, records: list,
            originals: Callable[[], list[str]] | None = None,
            unreadable: list[tuple[str, str]] = ()) -> Prepared:
    """Validate, key and encode the batch's records; touches no database. A record is held
    when its stream rejects it or it cannot be stored (nesting deeper than orjson encodes, a
    key the database cannot hold), with its text as received: ``originals()`` gives the text
    of each record, in order, and is called only then (else the record is re-encoded).
    ``unreadable`` are the ``(text, reason)`` of records that could not even be parsed."""
    batch = _receive(bridge, institution, stream, records)
    recent = _recent(institution, stream, batch.accepted)
    now = time.time()
    rows = []  # a version twice in one batch conflicts like any duplicate
    bad = list(batch.rejected)
    for key, record in recent:
        try:
            payload = canonical(record, stream.envelope_fields)
        except orjson.JSONEncodeError as exc:  # e.g. nested deeper than orjson's 254 levels
            bad.append((record, f"cannot be stored as JSON: {exc} (at most 254 levels of "
                                "nesting)"))
            continue
        if "\x00" in key:
            bad.append((record, "cannot be stored: its key holds a NUL character"))
            continue
        digest = hashlib.blake2b(payload, digest_size=16).hexdigest()
        rows.append((institution.code, stream.name, key, digest, payload.decode(), now,
                     "accepted", 0))
    held = list(unreadable)
    if bad:
        texts = originals() if originals is not None else []
        where = {id(r): i for i, r in enumerate(records)} if len(texts) == len(records) else {}
        for record, reason in bad:
            i = where.get(id(record))
            held.append((texts[i] if i is not None else encoded(record), reason))
    return Prepared(rows, held, len(batch.accepted) - len(recent))


def _alone_fits(bridge, prepared: Prepared) -> bool:
    """PostgreSQL, and a batch of new versions with nothing to quarantine or count."""
    return bridge.engine.dialect.name == "postgresql" and bool(prepared.rows) \
        and not prepared.held and not prepared.before_cutoff


def _alone(bridge, prepared: Prepared) -> int | None:
    """The batch copied into the inbox as a transaction of its own, which the server commits
    before it answers and whose rows its trigger queues (migrations/engine_0015): two round
    trips instead of a transaction's four. Answers how many were stored; None when the copy
    was refused (a version there already) or skipped after one that was (``copy_alone``)."""
    with alone(bridge.engine) as conn:
        return copy_alone(conn, "inbox", _COLUMNS, prepared.rows)


def store(bridge, institution: Institution, stream: Stream, prepared: Prepared,
          also=None) -> IngestResult:
    """Store a prepared batch in one commit; ``also(conn)`` runs in the same transaction. On
    PostgreSQL a batch of new versions and nothing else (the webhooks' usual batch) is copied
    alone, the server queueing it (``_alone``)."""
    result = IngestResult(before_cutoff=prepared.before_cutoff)
    tried = also is None and _alone_fits(bridge, prepared)
    stored = _alone(bridge, prepared) if tried else None
    if stored is not None:
        result.accepted, result.duplicates = stored, len(prepared.rows) - stored
        return result
    with write(bridge.engine) as conn:  # refused alone: a version is there, no second try
        result.accepted = _insert_new(conn, prepared.rows, known=tried)
        result.quarantined = hold(conn, institution.code, stream.name, prepared.held,
                                  time.time())
        if result.before_cutoff:
            _count_skipped(conn, institution, stream, "before_cutoff", result.before_cutoff)
        if also is not None:
            also(conn)
    result.duplicates = len(prepared.rows) - result.accepted
    return result


def ingest(bridge, institution: Institution, stream: Stream, records: list, also=None,
           originals: Callable[[], list[str]] | None = None,
           unreadable: list[tuple[str, str]] = ()) -> IngestResult:
    """Store every new version of the batch's records; quarantine the invalid ones, and the
    ``unreadable``, as received (``prepare``); leave out (and count) those older than the
    history cut-off. ``also(conn)`` runs in the same transaction (an import's checkpoint).

    A version is a record's content (envelope excluded) under its key: one already in the inbox,
    whatever its state, is a duplicate and is not processed again.
    """
    return store(bridge, institution, stream,
                 prepare(bridge, institution, stream, records, originals, unreadable), also)
