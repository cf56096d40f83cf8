"""The engine's own tables: inbox, queue, per-target deliveries and their attempts, paused
targets, quarantine, skipped counts and the heartbeat, and the two statements every writer of
them shares.

The tables are made by migrations (migrate.py; the branch ``engine`` in migrations/), which
the models here must match: tests/test_migrations.py compares them.

Timestamps used by the queue (arrival, retry time, lease expiry) are epoch seconds, so that claims
compare plain numbers on every database.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    literal,
    literal_column,
    null,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlmodel import Field, SQLModel


class InboxRecord(SQLModel, table=True):
    """One version of one S-360 record, stored before S-360 is answered 200, and written again
    only when something unusual happens to it: a failed delivery, superseded, dead. What is
    still to deliver is in the queue (QueueEntry); the view ``inbox_state`` joins the two."""

    __tablename__ = "inbox"
    __table_args__ = (
        UniqueConstraint("institution", "stream", "record_key", "content_hash",
                         name="uq_inbox_version"),
        Index("ix_inbox_dead", "institution", "stream", sqlite_where=text("state = 'dead'"),
              postgresql_where=text("state = 'dead'")),
        # an id is never given again, also once the newest rows are deleted
        # (migrations/engine_0013_inbox_ids_never_reused.py)
        {"sqlite_autoincrement": True},
    )
    id: int | None = Field(default=None, sa_column=Column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True))
    institution: str
    stream: str
    record_key: str
    content_hash: str
    payload: str = Field(sa_column=Column(Text, nullable=False))
    received_at: float
    state: str = "accepted"  # accepted (pending while queued, else done) | superseded | dead
    attempts: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(Text))


class QueueEntry(SQLModel, table=True):
    """An inbox record still to deliver: claims lease these narrow rows, completion deletes
    them (migrations/engine_0002_queue_beside_the_inbox.py says why)."""

    __tablename__ = "queue"
    __table_args__ = ({"postgresql_with": {"fillfactor": 50}},)
    id: int = Field(sa_column=Column(BigInteger().with_variant(Integer, "sqlite"),
                                     primary_key=True, autoincrement=False))
    institution: str
    next_attempt_at: float = 0.0
    lease_owner: str | None = None
    lease_until: float | None = None
    # PostgreSQL: ``key_hash`` of the record's key (NULL on SQLite, and on rows queued before
    # migrations/engine_0014_queued_key_hashes.py)
    key_hash: int | None = Field(default=None, sa_column=Column(BigInteger))


class Delivery(SQLModel, table=True):
    """The state of one inbox record towards one target. ``held``: the target is paused, and
    the record waits out of the queue for its resume (migrations/engine_0010_paused_targets.py)."""

    __tablename__ = "delivery"
    __table_args__ = (
        # the few held rows: the view's probe per record, the resume's list per target
        Index("ix_delivery_held", "inbox_id", "target", sqlite_where=text("state = 'held'"),
              postgresql_where=text("state = 'held'")),
    )
    inbox_id: int = Field(sa_column=Column(BigInteger, primary_key=True))
    target: str = Field(primary_key=True)
    state: str  # done | failed | dead | held
    attempts: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    updated_at: float


# Every attempt to deliver a record to a target: when, what came of it (delivered, failed,
# refused) and the target's answer (an error, redacted and cut short); written by the worker in
# the transaction that records the outcome, and deleted with the record (retention, erasure).
# Append-only and read by record: no primary key, one index (core/pipeline/attempts.py).
ATTEMPT = Table(
    "attempt", SQLModel.metadata,
    Column("inbox_id", BigInteger, nullable=False),
    Column("target", String, nullable=False),
    Column("at", Float, nullable=False),
    Column("outcome", String, nullable=False),
    Column("answer", Text),
    Index("ix_attempt_record", "inbox_id"),
)


class PausedTarget(SQLModel, table=True):
    """A target an operator paused: the worker delivers nothing to it until it is resumed
    (core/operations/pause.py)."""

    __tablename__ = "paused_target"
    institution: str = Field(primary_key=True)
    target: str = Field(primary_key=True)
    paused_at: float
    paused_by: str


class Quarantined(SQLModel, table=True):
    """A record that failed validation, kept as received (its text exactly) with the reason
    until it is fixed and re-processed: one row per distinct content, which counts how often
    it came (migrations/engine_0006_quarantine_once_as_received.py)."""

    __tablename__ = "quarantine"
    __table_args__ = (
        Index("ix_quarantine_where", "institution", "stream", "state"),
        UniqueConstraint("institution", "stream", "content_hash", name="uq_quarantine_content"),
    )
    id: int | None = Field(default=None, primary_key=True)
    institution: str
    stream: str
    content_hash: str  # of the text as received (blake2b, 16 bytes, hex)
    payload: str = Field(sa_column=Column(Text, nullable=False))  # the text as received
    reason: str = Field(sa_column=Column(Text, nullable=False))
    received_at: float  # first seen
    last_seen_at: float
    count: int = 1  # how many times it came
    state: str = "held"  # held | reprocessed


class SkippedCount(SQLModel, table=True):
    """Records left out on purpose and counted, e.g. older than the history cut-off."""

    __tablename__ = "skipped"
    institution: str = Field(primary_key=True)
    stream: str = Field(primary_key=True)
    reason: str = Field(primary_key=True)
    count: int = 0


class Heartbeat(SQLModel, table=True):
    """One row, written by ``/health/ready`` when nothing else committed lately
    (core/pipeline/health.py)."""

    __tablename__ = "heartbeat"
    id: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    beat_at: float


INBOX = InboxRecord.__table__
QUEUE = QueueEntry.__table__
# every inbox version with the state an operator knows and its queue columns: a view made by
# the migration engine_0002, read here as a table
STATES = Table("inbox_state", MetaData(), Column("id", BigInteger), Column("institution", String),
               Column("stream", String), Column("record_key", String), Column("payload", Text),
               Column("received_at", Float), Column("state", String),
               Column("attempts", Integer), Column("last_error", Text),
               Column("next_attempt_at", Float), Column("lease_owner", String),
               Column("lease_until", Float))
DELIVERY = Delivery.__table__
PAUSED = PausedTarget.__table__
QUARANTINE = Quarantined.__table__
SKIPPED = SkippedCount.__table__
HEARTBEAT = Heartbeat.__table__


def dialect_insert(conn: Connection | str, table):
    """An INSERT of the connection's dialect (or of the dialect named), which knows ON CONFLICT
    (SQLite, PostgreSQL)."""
    name = conn if isinstance(conn, str) else conn.dialect.name
    return (postgresql if name == "postgresql" else sqlite).insert(table)


def key_hash(institution: str, stream: str, key: str) -> str:
    """PostgreSQL: the SQL of a record key's 64-bit hash, of the three SQL expressions given.
    Each queue row carries its record's, written by the server wherever the row is made, so
    that a claim tells which records queued before it may be other versions of its keys by
    comparing numbers, not by looking up every key in the inbox (core/pipeline/supersede.py).
    Two keys may share a hash: a match is only a candidate, read again."""
    return f"hashtextextended(concat_ws(chr(31), {institution}, {stream}, {key}), 0)"


def requeue(conn: Connection, seqs: list[int]):
    """The INSERT that queues these inbox versions, due now (the caller adds its ON CONFLICT)."""
    hashed = (literal_column(key_hash("institution", "stream", "record_key"))
              if conn.dialect.name == "postgresql" else null())
    rows = select(INBOX.c.id, INBOX.c.institution, literal(0.0), hashed).where(
        INBOX.c.id.in_(seqs))
    return dialect_insert(conn, QUEUE).from_select(
        ["id", "institution", "next_attempt_at", "key_hash"], rows)


def enqueue(conn: Connection, seqs: list[int]) -> None:
    """Queue these inbox versions for delivery now, whatever their state was (replay,
    reconcile's repair): accepted again, attempts from zero, any lease dropped."""
    conn.execute(update(INBOX).where(INBOX.c.id.in_(seqs)).values(state="accepted", attempts=0))
    ins = requeue(conn, seqs)
    conn.execute(ins.on_conflict_do_update(index_elements=[QUEUE.c.id], set_={
        "next_attempt_at": 0.0, "lease_owner": None, "lease_until": None,
        "key_hash": ins.excluded.key_hash}))
