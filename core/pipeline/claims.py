"""Claims with expiring leases: what is still to deliver is in the queue, one narrow row per
inbox record (the inbox row itself is written at arrival and only touched again when something
unusual happens). A claim leases the queued records of some institutions whose retry time has
come and whose lease is free or expired, with a token of its own, and reads their inbox rows;
of each key it keeps one version to deliver (supersede.py). Completing them is queue.py's.
"""

from __future__ import annotations

import logging
import time
import uuid
import weakref
from dataclasses import dataclass, field

import orjson

from s360bridge.core.errors import StoreUnavailable
from s360bridge.core.pipeline import supersede
from s360bridge.core.pipeline.versions import Ranker
from s360bridge.core.plugin.streams import StoredRecord
from s360bridge.core.storage.db import write
from s360bridge.core.storage.rawsql import index_plans, run, run_all

log = logging.getLogger("s360bridge.worker")
Others = list[int] | None  # supersede.losers's others


@dataclass
class Claim:
    token: str
    groups: dict[tuple[str, str], list[StoredRecord]]  # (institution, stream) -> records
    attempts: dict[int, int] = field(default_factory=dict)  # seq -> tries so far, when any
    done_targets: dict[int, set[str]] = field(default_factory=dict)  # seq -> delivered targets
    tracked: set[int] = field(default_factory=set)  # seqs that already have delivery rows
    paused: frozenset[tuple[str, str]] = frozenset()  # (institution, target) paused at the claim

    @property
    def seqs(self) -> list[int]:
        return [r.seq for records in self.groups.values() for r in records]

    def __len__(self) -> int:
        return sum(map(len, self.groups.values()))


# The oldest due records in arrival order, read through the queue's primary key and leased in
# the same statement; then their inbox rows, one primary-key probe each. On PostgreSQL the rows
# locked are updated by their address (a TID scan, not a second probe of the primary key per
# row), and a LATERAL that is not flattened makes each inbox read a probe, whatever the
# statistics.
_DUE = """SELECT {what} FROM queue WHERE next_attempt_at <= ?
    AND (lease_until IS NULL OR lease_until < ?) AND institution IN ?texts
    ORDER BY id LIMIT ?"""
_LEASE = "UPDATE queue SET lease_owner = ?, lease_until = ? WHERE {which} RETURNING {returned}"
_INBOX_COLUMNS = "id, institution, stream, record_key, payload, received_at, attempts"
_READ = f"SELECT {_INBOX_COLUMNS} FROM inbox WHERE id IN ?ints"
PAUSED = "SELECT institution, target FROM paused_target"
_DELIVERED = "SELECT inbox_id, target, state FROM delivery WHERE inbox_id IN ?ints"
# On PostgreSQL the claim is one statement that also answers the paused targets, the delivery
# rows of its records, and which records are queued before them outside the leases of the
# tokens given, up to a limit (supersede.py's "others": the rows it leases still look unleased
# within the statement, so they are left out by id): how many, whether a leased row has no
# key hash, and the ids of those whose key hash is one of the claim's or unknown (NULL), the
# only ones that may be other versions of its keys. It answers one row of arrays, a column
# each, in the binary format: a worker claims in a thread of its own, which waits for the
# interpreter lock each time the driver waits for the network, and the rows of 2,000 records,
# read 16 KiB at a time, were 30 such waits; one large value is read at once.
_CLAIMED = f"""WITH leased AS ({_LEASE.format(
    which=f"ctid = ANY(ARRAY({_DUE.format(what='ctid')} FOR UPDATE SKIP LOCKED))",
    returned="id, key_hash")}),
claimed AS (SELECT i.* FROM leased,
    LATERAL (SELECT {_INBOX_COLUMNS} FROM inbox WHERE id = leased.id OFFSET 0) AS i),
paused AS ({PAUSED}),
delivered AS ({_DELIVERED.replace("IN ?ints", "= ANY(ARRAY(SELECT id FROM leased))")}),
others AS (SELECT id, key_hash FROM queue WHERE id < (SELECT max(id) FROM leased)
    AND (lease_owner IS NULL OR NOT (lease_owner IN ?texts))
    AND id NOT IN (SELECT id FROM leased) LIMIT ?)
SELECT c.*, p.*, d.*, (SELECT count(*) FROM others),
        EXISTS (SELECT FROM leased WHERE key_hash IS NULL),
        ARRAY(SELECT id FROM others WHERE key_hash IS NULL
              OR key_hash IN (SELECT key_hash FROM leased))
    FROM (SELECT {", ".join(f"array_agg({c})" for c in _INBOX_COLUMNS.split(", "))}
          FROM claimed) AS c,
        (SELECT array_agg(institution), array_agg(target) FROM paused) AS p,
        (SELECT array_agg(inbox_id), array_agg(target), array_agg(state) FROM delivered) AS d"""
# how many records queued before a claim it reads, per record it claims: more (a backlog
# waiting for its retry) and its keys are looked up instead. Reading that many costs half of
# what the look-up does, so the next BACKLOG_CLAIMS claims of the engine read one, only to
# know whether to look up, until one finds nothing before it; then one reads them all again.
OTHERS_READ = 8
BACKLOG_CLAIMS = 20
_BACKLOG: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # engine -> claims left
_CLAIM = {
    "sqlite": _LEASE.format(which=f"id IN ({_DUE.format(what='id')})", returned="id"),
    "postgresql": _CLAIMED,
}
DEQUEUE = "DELETE FROM queue WHERE id IN ?ints"
_SUPERSEDE = "UPDATE inbox SET state = 'superseded' WHERE id IN ?ints"


def claim_statement(dialect: str) -> str:
    """The claim: parameters token, lease end, now, now, institutions, batch size, and on
    PostgreSQL the tokens whose leases are not "others" and how many others to read at most
    (``_CLAIMED``). It answers the ids of the records leased on SQLite (their inbox rows are
    read by ``_READ``: SQLite has no UPDATE in a WITH)."""
    return _CLAIM[dialect]


def claim(engine, institutions: list[str], batch_size: int, lease_seconds: float,
          now: float | None = None, in_hand: Claim | None = None,
          ranker: Ranker | None = None) -> Claim:
    """Lease up to ``batch_size`` due records of the given institutions (a process only takes
    what its configuration can deliver). Only one version of a key is delivered (the newest,
    or for streams that ``ranker`` knows, the highest rank first: versions.py); the others
    queued are marked superseded: those of ``in_hand`` too, the batch the caller is delivering
    meanwhile (a version of it that fails is not retried after the newer one went out).

    On PostgreSQL the claim's payloads travel as one value, of 1 GB at most: a batch whose
    payloads are larger (2,000 records of 500 KB) is claimed again at half the size, as many
    times as it takes, and the next claims start from the size that passed, doubling back to
    ``batch_size`` one claim at a time."""
    size = min(batch_size, _FITS.get(engine, batch_size))
    while True:
        try:
            made = _claim(engine, institutions, size, lease_seconds, now, in_hand, ranker)
        except StoreUnavailable as exc:
            if size == 1 or not _too_large(exc):
                raise
            log.warning("a claim of %d records is too large for one value of PostgreSQL's; "
                        "claiming %d", size, size // 2)
            size = _FITS[engine] = size // 2
            continue
        if size < batch_size:
            _FITS[engine] = min(batch_size, 2 * size)
        return made


_FITS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # engine -> claim size to try


def _too_large(exc: BaseException | None) -> bool:
    """Did PostgreSQL refuse a value over its size limit (SQLSTATE 54000)?"""
    while exc is not None:
        if getattr(getattr(exc, "orig", exc), "sqlstate", None) == "54000":
            return True
        exc = exc.__cause__
    return False


def _claim(engine, institutions: list[str], batch_size: int, lease_seconds: float,
           now: float | None, in_hand: Claim | None, ranker: Ranker | None) -> Claim:
    now = time.time() if now is None else now
    token = uuid.uuid4().hex
    mine = [token] if in_hand is None else [token, in_hand.token]
    params = (token, now + lease_seconds, now, now, institutions, batch_size)
    with write(engine) as conn:
        read = _claimed if conn.dialect.name == "postgresql" else _claimed_apart
        rows, paused, others, delivered = read(conn, params, mine)
        if not rows:
            return Claim(token, {})
        loads = orjson.loads
        decoded = {r[0]: loads(r[4]) for r in rows}
        best, gone = supersede.losers(conn, rows, decoded, in_hand and in_hand.groups,
                                      others, ranker)
        if gone:
            run_all(conn, [(DEQUEUE, (sorted(gone),)), (_SUPERSEDE, (sorted(gone),))])
        kept = [r for r in rows if best[r[1:4]] == r[0] and r[0] not in gone]
        done: dict[int, set[str]] = {}
        tracked: set[int] = set()
        if delivered:
            ids = {r[0] for r in kept}
            for seq, target, state in delivered:
                if seq in ids:
                    tracked.add(seq)
                    if state == "done":
                        done.setdefault(seq, set()).add(target)
    groups: dict[tuple[str, str], list[StoredRecord]] = {}
    attempts: dict[int, int] = {}
    for seq, inst, stream, key, payload, received_at, tries in kept:
        group = groups.get((inst, stream))
        if group is None:
            group = groups[(inst, stream)] = []
        group.append(StoredRecord(seq, key, decoded[seq], payload, received_at, inst, stream))
        if tries:
            attempts[seq] = tries
    return Claim(token, groups, attempts, done, tracked, paused)


def _claimed(conn, params: tuple, mine: list[str]) -> tuple[list, frozenset, Others, list]:
    """PostgreSQL: the claimed inbox rows in arrival order, the paused targets, the records
    queued before them that may be versions of their keys (``supersede.losers``'s ``others``)
    and their delivery rows, from the one statement of ``_CLAIMED``."""
    left = _BACKLOG.get(conn.engine, 0)
    most = 1 if left else OTHERS_READ * params[-1]
    (row,) = run_all(conn, [*index_plans(conn), (_CLAIMED, (*params, mine, most))],
                     binary=True)[-1]
    ids, *columns = row[:7]  # an inbox column each
    if ids is None:
        return [], frozenset(), [], []
    paused_institutions, paused_targets, delivered_ids, targets, states = row[7:12]
    before, unhashed, alike = row[12:]
    rows = sorted(zip(ids, *columns, strict=True))  # arrival order
    paused = frozenset(zip(paused_institutions or (), paused_targets or (), strict=True))
    delivered = list(zip(delivered_ids or (), targets or (), states or (), strict=True))
    others = [] if not before else None if unhashed or before >= most else alike
    if left:  # one that finds nothing before it ends the backlog's claims
        _BACKLOG[conn.engine] = left - 1 if before else 0
    elif before >= most > 1:
        _BACKLOG[conn.engine] = BACKLOG_CLAIMS
    return rows, paused, others, delivered


def _claimed_apart(conn, params: tuple, mine: list[str]) -> tuple[list, frozenset, Others, list]:
    """SQLite: ``_claimed``'s answers, by a statement each; the others are not known (SQLite
    keeps no key hashes: its one writer at a time gains nothing by them), only whether any
    is queued before the claim."""
    rows = run(conn, _CLAIM["sqlite"], params)
    if not rows:
        return [], frozenset(), [], []
    rows = sorted(run(conn, _READ, ([r[0] for r in rows],)))  # arrival order
    if not rows:
        return [], frozenset(), [], []
    paused, others, delivered = run_all(conn, [
        (PAUSED, ()), supersede.others_before(rows, mine),
        (_DELIVERED, ([r[0] for r in rows],))])
    return rows, frozenset(map(tuple, paused)), None if others else [], delivered
