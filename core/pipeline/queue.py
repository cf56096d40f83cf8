"""Recording what a delivery attempt did, and keeping or giving back a claim's lease.

Only the holder of a claim's token (claims.py) completes its records, so two workers never
deliver the same claim, and a dead worker's batch is taken over when its lease ends. A
delivered record leaves the queue, and that is all it costs.

A target an operator paused gets nothing: its records are delivered to the stream's other
targets and held for it, out of the queue (a delivery row ``held``), until the resume queues
them again (core/operations/pause.py). Every attempt is kept in the attempt history
(attempts.py), written in the transaction that records its outcome.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from sqlalchemy import bindparam, update

from s360bridge.core.pipeline import attempts as history
from s360bridge.core.pipeline.claims import DEQUEUE, PAUSED
from s360bridge.core.redact import redact
from s360bridge.core.storage.db import write
from s360bridge.core.storage.rawsql import index_plans, index_plans_only, run, run_all
from s360bridge.core.storage.tables import DELIVERY, INBOX, QUEUE, dialect_insert

_DONE = "DELETE FROM queue WHERE id IN ?ints AND lease_owner = ?"
_DUE_NOW = """UPDATE queue SET next_attempt_at = ?, lease_owner = NULL, lease_until = NULL
    WHERE id IN ?ints AND lease_owner = ?"""
_STILL_HELD = "SELECT id FROM queue WHERE id IN ?ints AND lease_owner = ?"


def tidy(engine) -> None:
    """PostgreSQL: vacuum the queue, whose head is the dead entries of the records completed
    since the last vacuum; every claim walks over them until one runs. Autovacuum looks at a
    database once a minute at most, while a worker completes thousands of records a second:
    workers do it themselves, every TIDY_EVERY records (a few milliseconds on a queue of
    100,000 rows; skipped when another vacuum is under way)."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM (SKIP_LOCKED) queue")


TIDY_EVERY = 20_000


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
    rejected: bool = False  # a target refused it for good: a dead letter now
    institution: str = ""
    held: frozenset[str] = frozenset()  # paused targets it was not pushed to


def complete(engine, claim_token: str, delivered: list[int], outcomes: list[Outcome],
             max_attempts: int, base: float, cap: float, now: float | None = None,
             attempts: list[history.Group] = (), again: bool = False) -> None:
    """Take the ``delivered`` records out of the queue; record deliveries per target of the
    others (a target failed for them, they were held for a paused target, or they have
    delivery rows already) and take each out (done, held or dead) or queue it for a later
    retry; add the ``attempts`` to the history. Records whose lease this claim no longer
    holds (superseded meanwhile, or taken over after the lease ended: a push that outlasted
    it) are left as they are, their delivery rows too: the worker that took them over records
    its own outcome, which a late one must not overwrite. Their attempts are history, kept.
    Reading what the claim holds costs a statement when a record failed, was held, or has
    delivery rows (a claim pushed to several targets records its progress: every record).

    A record delivered everywhere at its first attempt needs no delivery rows: that it left
    the queue says it for every target. Rows are kept once a target has failed for it.

    ``again``: a completion tried before failed, and its commit may have gone through all the
    same (the answer lost). It is made only if the claim still holds one of its records,
    read under a lock: on PostgreSQL that waits for the earlier transaction, should it still
    be committing. Made, it holds none of them any more."""
    now = time.time() if now is None else now
    deliveries, held, done_ids, failed = [], [], list(delivered), {}
    for o in outcomes:
        errors = {t: e for t, e in o.results.items() if e is not None}
        dead = bool(errors) and (o.rejected or o.attempts + 1 >= max_attempts)
        for target, error in o.results.items() if errors or o.tracked or o.held else ():
            state = "done" if error is None else ("dead" if dead else "failed")
            deliveries.append({"inbox_id": o.seq, "target": target, "state": state,
                               "attempts": 1, "last_error": error and redact(error),
                               "updated_at": now})
        held += [{"inbox_id": o.seq, "target": t, "state": "held", "attempts": 0,
                  "last_error": None, "updated_at": now} for t in o.held]
        if not errors:
            done_ids.append(o.seq)
            continue
        last = redact("; ".join(f"{t}: {e}" for t, e in sorted(errors.items())))
        delay = max(backoff(o.attempts + 1, base, cap), o.retry_after)
        failed[o.seq] = {"sid": o.seq, "st": "dead" if dead else "accepted",
                         "att": o.attempts + 1, "nxt": now + delay, "err": last[:4000]}
    with write(engine) as conn:
        statements, tried = index_plans(conn), history.statements(conn, attempts)
        if again or deliveries or held:
            # every record of the claim locked first, in one statement and in id order (as
            # another claim's DEQUEUE of older versions takes them), so that no two
            # transactions wait for each other; what it answers is what the claim still holds.
            # The attempts go with it, unless this completion may already have been made.
            seqs = [*delivered, *(o.seq for o in outcomes)]
            first = [*statements, *([] if again else tried), _holds(conn, claim_token, seqs)]
            mine = {r[0] for r in run_all(conn, first)[-1]}
            if again and not mine:
                return
            statements = tried if again else []
            deliveries = [d for d in deliveries if d["inbox_id"] in mine]
            held = [h for h in held if h["inbox_id"] in mine]
            failed = {seq: f for seq, f in failed.items() if seq in mine}
        else:
            statements += tried
        due = []
        if held:
            run_all(conn, statements)
            statements, due = [], _resumed_meanwhile(conn, outcomes, held, done_ids)
        if deliveries or held:
            run_all(conn, statements)
            statements = []
        if deliveries:
            ins = dialect_insert(conn, DELIVERY)
            conn.execute(ins.on_conflict_do_update(
                index_elements=[DELIVERY.c.inbox_id, DELIVERY.c.target],
                set_={"state": ins.excluded.state, "attempts": DELIVERY.c.attempts + 1,
                      "last_error": ins.excluded.last_error,
                      "updated_at": ins.excluded.updated_at}), deliveries)
        if held:  # neither an attempt nor a failure: its count and last error stay
            ins = dialect_insert(conn, DELIVERY)
            conn.execute(ins.on_conflict_do_update(
                index_elements=[DELIVERY.c.inbox_id, DELIVERY.c.target],
                set_={"state": ins.excluded.state, "updated_at": ins.excluded.updated_at}),
                held)
        if done_ids:
            statements.append((_DONE, (done_ids, claim_token)))
        if due:
            statements.append((_DUE_NOW, (now, due, claim_token)))
        run_all(conn, statements)  # a batch delivered everywhere: all in one round trip
        if failed:
            _failed(conn, list(failed.values()))


def _holds(conn, claim_token: str, seqs: list[int]) -> tuple[str, tuple]:
    lock = " FOR UPDATE" if conn.dialect.name == "postgresql" else ""
    return _STILL_HELD + lock, (seqs, claim_token)


def _resumed_meanwhile(conn, outcomes: list[Outcome], held: list[dict],
                       done_ids: list[int]) -> list[int]:
    """A target resumed between the claim and now must not have records held for it: the
    resume has queued those held before it, not these. Their held rows are dropped (from
    ``held``) and the records stay queued, due now (answered; out of ``done_ids``). On
    PostgreSQL the pauses read are locked until the commit, so a resume waits for this
    completion and then finds its held rows, or went first and is seen here."""
    lock = " FOR SHARE" if conn.dialect.name == "postgresql" else ""
    paused = set(map(tuple, run(conn, PAUSED + lock)))
    institution = {o.seq: o.institution for o in outcomes if o.held}
    resumed = {h["inbox_id"] for h in held
               if (institution[h["inbox_id"]], h["target"]) not in paused}
    if not resumed:
        return []
    held[:] = [h for h in held if (institution[h["inbox_id"]], h["target"]) in paused]
    due = [seq for seq in done_ids if seq in resumed]
    done_ids[:] = [seq for seq in done_ids if seq not in resumed]
    return due


def _failed(conn, mine: list[dict]) -> None:
    """The inbox rows of records a target failed for, which the claim holds (locked), get the
    attempt and its error; the dead ones leave the queue, the others wait there for their
    retry time."""
    dead = [f["sid"] for f in mine if f["st"] == "dead"]
    if dead:
        run(conn, DEQUEUE, (dead,))
    retry = [f for f in mine if f["st"] != "dead"]
    if retry:
        conn.execute(update(QUEUE).where(QUEUE.c.id == bindparam("sid")).values(
            next_attempt_at=bindparam("nxt"), lease_owner=None, lease_until=None), retry)
    conn.execute(update(INBOX).where(INBOX.c.id == bindparam("sid")).values(
        state=bindparam("st"), attempts=bindparam("att"), last_error=bindparam("err")), mine)


def record_progress(engine, target: str, seqs: list[int], now: float | None = None,
                    attempts: list[history.Group] = ()) -> None:
    """Remember that ``target`` took these records, with their ``attempts``, before the
    claim's next push: a crash after this point pushes them again to the targets they have not
    reached only."""
    if not seqs:
        return
    now = time.time() if now is None else now
    with write(engine) as conn:
        history.record(conn, attempts)
        ins = dialect_insert(conn, DELIVERY)
        conn.execute(ins.on_conflict_do_update(
            index_elements=[DELIVERY.c.inbox_id, DELIVERY.c.target],
            set_={"state": ins.excluded.state, "last_error": None,
                  "updated_at": ins.excluded.updated_at}),
            [{"inbox_id": s, "target": target, "state": "done", "attempts": 1,
              "last_error": None, "updated_at": now} for s in seqs])


def extend(engine, claim_token: str, seqs: list[int], lease_seconds: float,
           now: float | None = None) -> int:
    """Keep a claim's lease while its holder is still working on it (slow, rate-limited
    targets), so that no other worker takes the records over; answer how many of them the
    claim still holds."""
    now = time.time() if now is None else now
    with write(engine) as conn:
        index_plans_only(conn)
        return len(run(conn, "UPDATE queue SET lease_until = ? WHERE id IN ?ints "
                             "AND lease_owner = ? RETURNING id",
                       (now + lease_seconds, seqs, claim_token)))


def release(engine, claim_token: str, seqs: list[int]) -> None:
    """Give claimed records back untouched (on shutdown), so another worker takes them now."""
    if seqs:
        with write(engine) as conn:
            index_plans_only(conn)
            run(conn, "UPDATE queue SET lease_owner = NULL, lease_until = NULL "
                      "WHERE id IN ?ints AND lease_owner = ?", (seqs, claim_token))
