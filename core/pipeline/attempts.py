"""The attempt history: a row per attempt to deliver a record to a target (its time, what came
of it, the target's answer), written with the attempt's outcome, in the same transaction.

An attempt is one claim's push of a record to one target: a batch the worker halves to isolate
a failing record still counts once per record, with its final outcome. A push cut off by a
crash before its completion committed is not recorded; its push again is. The answer is the
target's error, redacted (core/redact.py) and cut short; a delivery has none.

The rows of one push that share an outcome and an answer (all of them, when it went well) are
one group, inserted by one statement that unnests their records' ids: 0.5 µs a row on SQLite,
against 2.7 for an executemany of the rows (bench/README.md).
"""

from __future__ import annotations

from s360bridge.core.redact import redact
from s360bridge.core.storage.rawsql import run_all

DELIVERED, FAILED, REFUSED = "delivered", "failed", "refused"
ANSWER_CHARS = 500
_COLUMNS = "INSERT INTO attempt (inbox_id, target, at, outcome, answer) SELECT"
_INSERT = {
    "sqlite": f"{_COLUMNS} value, ?, ?, ?, ? FROM json_each(?)",
    "postgresql": f"{_COLUMNS} s, ?, ?, ?, ? FROM unnest(?::bigint[]) AS s",
}

Group = tuple[str, float, str, str | None, list[int]]  # target, at, outcome, answer, seqs


def pushed(target: str, at: float, seqs: list[int], failures: dict | None = None) -> list[Group]:
    """The attempts of one push to ``target``, grouped: ``failures`` maps a seq to what failed
    it (``.error``, ``.rejected``); the others were delivered."""
    if not failures:
        return [(target, at, DELIVERED, None, seqs)] if seqs else []
    groups: dict[tuple[str, str | None], list[int]] = {}
    for seq in seqs:
        f = failures.get(seq)
        how = (DELIVERED, None) if f is None else (REFUSED if f.rejected else FAILED, f.error)
        groups.setdefault(how, []).append(seq)
    return [(target, at, outcome, answer and redact(answer)[:ANSWER_CHARS], ids)
            for (outcome, answer), ids in groups.items()]


def record(conn, groups: list[Group]) -> None:
    """Add the attempts of these groups, in the connection's transaction."""
    run_all(conn, statements(conn, groups))


def statements(conn, groups: list[Group]) -> list[tuple[str, tuple]]:
    """What ``record`` runs, to go in a ``run_all`` with other statements."""
    sql = _INSERT[conn.dialect.name]
    return [(sql, (target, at, outcome, answer, seqs))
            for target, at, outcome, answer, seqs in groups]
