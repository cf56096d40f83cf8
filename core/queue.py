"""Claims with expiring leases, and recording what a delivery attempt did.

A claim takes pending inbox records whose retry time has come and whose lease is free or expired,
and marks them with a token of its own. Only the holder of the token completes them, so two
workers never deliver the same claim, and a dead worker's batch is taken over when its lease ends.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass, field

import orjson
from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from .db import DELIVERY, INBOX, write
from .streams import StoredRecord

_DIALECTS = {"sqlite": sqlite, "postgresql": postgresql}


@dataclass
class Claim:
    token: str
    records: list[tuple[str, str, StoredRecord, int]]  # (institution, stream, record, attempts)
    done_targets: dict[int, set[str]] = field(default_factory=dict)  # seq -> delivered targets
    tracked: set[int] = field(default_factory=set)  # seqs that already have delivery rows


def claim(engine, institutions: list[str], batch_size: int, lease_seconds: float,
          now: float | None = None) -> Claim:
    """Lease up to ``batch_size`` due records of the given institutions (a process only takes
    what its configuration can deliver); older pending versions of their keys are marked
    superseded, so only the newest version of a key is delivered."""
    now = time.time() if now is None else now
    token = uuid.uuid4().hex
    with write(engine) as conn:
        due = due_query(institutions, batch_size, now)
        if conn.dialect.name != "sqlite":
            due = due.with_for_update(skip_locked=True)
        ids = [row[0] for row in conn.execute(due)]
        if not ids:
            return Claim(token, [])
        conn.execute(update(INBOX).where(INBOX.c.id.in_(ids))
                     .values(lease_owner=token, lease_until=now + lease_seconds))
        rows = conn.execute(select(INBOX.c.id, INBOX.c.institution, INBOX.c.stream,
                                   INBOX.c.record_key, INBOX.c.payload, INBOX.c.received_at,
                                   INBOX.c.attempts)
                            .where(INBOX.c.id.in_(ids)).order_by(INBOX.c.id)).all()
        newest: dict[tuple, int] = {}
        for r in rows:
            newest[(r.institution, r.stream, r.record_key)] = r.id
        kept = [r for r in rows if newest[(r.institution, r.stream, r.record_key)] == r.id]
        _supersede(conn, newest, token, sorted(set(ids) - {r.id for r in kept}))
        done: dict[int, set[str]] = {}
        tracked: set[int] = set()
        for inbox_id, target, state in conn.execute(
                select(DELIVERY.c.inbox_id, DELIVERY.c.target, DELIVERY.c.state).where(
                    DELIVERY.c.inbox_id.in_([r.id for r in kept]))):
            tracked.add(inbox_id)
            if state == "done":
                done.setdefault(inbox_id, set()).add(target)
    records = [(r.institution, r.stream,
                StoredRecord(r.id, r.record_key, orjson.loads(r.payload), r.payload,
                             r.received_at), r.attempts) for r in kept]
    return Claim(token, records, done, tracked)


def due_query(institutions: list[str], batch_size: int, now: float):
    """The oldest due records, read through the index of pending rows in arrival order. The
    institution is compared as an expression (``institution || ''``) so that no planner takes
    the key index for it and sorts every row of the institution: on a million-row inbox that
    made each claim take seconds."""
    return (select(INBOX.c.id)
            .where(INBOX.c.state == "pending", INBOX.c.next_attempt_at <= now,
                   or_(INBOX.c.lease_until.is_(None), INBOX.c.lease_until < now),
                   INBOX.c.institution.concat("").in_(institutions))
            .order_by(INBOX.c.id).limit(batch_size))


def _supersede(conn, newest: dict[tuple, int], token: str, older: list[int]) -> None:
    """Mark pending versions older than the claimed newest version of their key superseded:
    ``older`` ones of this claim, and those an indexed look-up per (institution, stream) finds
    outside it (rare: keys with versions waiting for a retry or leased elsewhere)."""
    by_stream: dict[tuple[str, str], dict[str, int]] = {}
    for (inst, stream, key), seq in newest.items():
        by_stream.setdefault((inst, stream), {})[key] = seq
    for (inst, stream), keys in by_stream.items():
        # state and lease are checked here, not in SQL, so that the planner always takes the
        # (institution, stream, record_key, …) index, even when a backlog makes most rows pending
        for row in conn.execute(select(INBOX.c.id, INBOX.c.record_key, INBOX.c.state,
                                       INBOX.c.lease_owner).where(
                INBOX.c.institution == inst, INBOX.c.stream == stream,
                INBOX.c.record_key.in_(list(keys)))):
            if (row.state == "pending" and row.lease_owner != token
                    and row.id < keys[row.record_key]):
                older.append(row.id)
    if older:
        conn.execute(update(INBOX).where(INBOX.c.id.in_(older))
                     .values(state="superseded", lease_owner=None, lease_until=None))


def backoff(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter: half of the delay fixed, half random."""
    delay = min(cap, base * 2 ** (attempt - 1))
    return delay / 2 + random.uniform(0, delay / 2)


@dataclass
class Outcome:
    """What happened to one claimed record: per target, None (delivered) or the error."""

    seq: int
    attempts: int
    results: dict[str, str | None]
    retry_after: float = 0.0
    tracked: bool = False  # the record already has delivery rows to keep up to date


def complete(engine, claim_token: str, outcomes: list[Outcome], max_attempts: int,
             base: float, cap: float, now: float | None = None) -> None:
    """Record deliveries per target and move each record to done, a later retry, or dead.

    A record delivered everywhere at its first attempt needs no delivery rows: its inbox state
    ``done`` says it for every target. Rows are kept once a target has failed for it."""
    now = time.time() if now is None else now
    deliveries, done_ids, updates = [], [], []
    for o in outcomes:
        errors = {t: e for t, e in o.results.items() if e is not None}
        dead = bool(errors) and o.attempts + 1 >= max_attempts
        for target, error in o.results.items() if errors or o.tracked else ():
            state = "done" if error is None else ("dead" if dead else "failed")
            deliveries.append({"inbox_id": o.seq, "target": target, "state": state,
                               "attempts": 1, "last_error": error, "updated_at": now})
        if not errors:
            done_ids.append(o.seq)
            continue
        last = "; ".join(f"{t}: {e}" for t, e in sorted(errors.items()))
        delay = max(backoff(o.attempts + 1, base, cap), o.retry_after)
        updates.append({"sid": o.seq, "st": "dead" if dead else "pending",
                        "att": o.attempts + 1, "nxt": now + delay, "err": last[:4000]})
    with write(engine) as conn:
        if deliveries:
            ins = _DIALECTS[conn.dialect.name].insert(DELIVERY)
            conn.execute(ins.on_conflict_do_update(
                index_elements=[DELIVERY.c.inbox_id, DELIVERY.c.target],
                set_={"state": ins.excluded.state, "attempts": DELIVERY.c.attempts + 1,
                      "last_error": ins.excluded.last_error,
                      "updated_at": ins.excluded.updated_at}), deliveries)
        mine = INBOX.c.lease_owner == claim_token
        if done_ids:
            conn.execute(update(INBOX).where(INBOX.c.id.in_(done_ids), mine).values(
                state="done", lease_owner=None, lease_until=None, last_error=None))
        if updates:
            conn.execute(update(INBOX).where(INBOX.c.id == bindparam("sid"), mine).values(
                state=bindparam("st"), attempts=bindparam("att"),
                next_attempt_at=bindparam("nxt"), last_error=bindparam("err"),
                lease_owner=None, lease_until=None), updates)


def extend(engine, claim_token: str, seqs: list[int], lease_seconds: float,
           now: float | None = None) -> None:
    """Keep a claim's lease while its holder is still working on it (slow, rate-limited
    targets), so that no other worker takes the records over."""
    now = time.time() if now is None else now
    with write(engine) as conn:
        conn.execute(update(INBOX).where(INBOX.c.id.in_(seqs),
                                         INBOX.c.lease_owner == claim_token)
                     .values(lease_until=now + lease_seconds))


def release(engine, claim_token: str, seqs: list[int]) -> None:
    """Give claimed records back untouched (on shutdown), so another worker takes them now."""
    if seqs:
        with write(engine) as conn:
            conn.execute(update(INBOX).where(INBOX.c.id.in_(seqs),
                                             INBOX.c.lease_owner == claim_token)
                         .values(lease_owner=None, lease_until=None))
