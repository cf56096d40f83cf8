"""The attempt history: a row per attempt to deliver a record to a target (its time, what came
of it, the target's answer), written with the attempt's outcome, in the same transaction.

An attempt is one claim's push of a record to one target: a batch the worker halves to isolate
a failing record still counts once per record, with its final outcome. A push cut off by a
crash before its completion committed is not recorded; its push again is. The answer is the
target's error, redacted (core/redact.py) and cut short; a delivery has none.
"""

from __future__ import annotations

from functools import cache

from sqlalchemy import bindparam, insert

from s360bridge.core.redact import redact
from s360bridge.core.storage.rawsql import copy_insert, executemany
from s360bridge.core.storage.tables import ATTEMPT

COLUMNS = ("inbox_id", "target", "at", "outcome", "answer")
DELIVERED, FAILED, REFUSED = "delivered", "failed", "refused"
ANSWER_CHARS = 500


def row(seq: int, target: str, at: float, error: str | None = None,
        refused: bool = False) -> tuple:
    """One attempt, in ``COLUMNS`` order: delivered without ``error``, else failed (tried
    again later) or ``refused`` (for good)."""
    if error is None:
        return (seq, target, at, DELIVERED, None)
    return (seq, target, at, REFUSED if refused else FAILED, redact(error)[:ANSWER_CHARS])


def rows(seqs: list[int], target: str, at: float, failures: dict | None = None) -> list[tuple]:
    """The attempts of one push to ``target``: ``failures`` maps a seq to what failed it
    (``.error``, ``.rejected``); the others were delivered."""
    if not failures:
        return [(seq, target, at, DELIVERED, None) for seq in seqs]
    return [row(seq, target, at, f.error, f.rejected) if (f := failures.get(seq)) is not None
            else (seq, target, at, DELIVERED, None) for seq in seqs]


@cache
def _insert():
    return insert(ATTEMPT).values({c: bindparam(c) for c in COLUMNS})


def record(conn, rows: list[tuple]) -> None:
    """Add attempts (``row``) in the connection's transaction: one COPY on PostgreSQL, one
    executemany on the driver on SQLite."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        copy_insert(conn, "attempt", COLUMNS, rows, "")
    else:
        executemany(conn, _insert(), COLUMNS, rows, "attempt-insert")
