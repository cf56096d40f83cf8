"""Which version of a record's key is delivered: the newest by arrival, or, for a stream that
ranks its versions (``Stream.rank``), the highest rank first and the newest of that rank.

A final state ranks above the others (an order CLOSED): a version of a lower rank that arrives
later is kept as superseded, never delivered. The highest rank claimed for delivery of each key
is marked in ``version_mark``, which the retention purge leaves alone, so a late version is
outranked even after the final one is gone from the inbox.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from sqlalchemy import BigInteger, Column, MetaData, String, Table, bindparam

from s360bridge.core.storage.rawsql import executemany, run
from s360bridge.core.storage.tables import dialect_insert

MARKS = Table(
    "version_mark", MetaData(),
    Column("institution", String, primary_key=True),
    Column("stream", String, primary_key=True),
    Column("record_key", String, primary_key=True),
    Column("rank", BigInteger, nullable=False),
)

# (institution, stream) -> the rank of one of its records, or None: versions in arrival order
Ranker = Callable[[str, str], Callable[[dict], int] | None]
Key = tuple[str, str, str]  # institution, stream, record key

_MARKED = "SELECT record_key, rank FROM version_mark WHERE institution = ? AND stream = ? " \
          "AND record_key IN ?texts"


def newest(rows: list[tuple], decoded: dict[int, dict], ranker: Ranker | None
           ) -> tuple[dict[Key, int], dict[int, int]]:
    """The version to deliver of each key among claimed ``rows`` (seq, institution, stream,
    key, …) in arrival order, and the rank of each version of a ranked stream."""
    best: dict[Key, int] = {}
    ranks: dict[int, int] = {}
    rank_of: dict[tuple[str, str], Callable[[dict], int] | None] = {}
    for seq, inst, stream, key, *_ in rows:
        group = (inst, stream)
        if group not in rank_of:
            rank_of[group] = ranker(inst, stream) if ranker else None
        rank = rank_of[group]
        if rank is None:
            best[(inst, stream, key)] = seq
            continue
        ranks[seq] = rank(decoded[seq])
        before = best.get((inst, stream, key))
        if before is None or ranks[before] <= ranks[seq]:
            best[(inst, stream, key)] = seq
    return best, ranks


_MARK_COLUMNS = ("institution", "stream", "record_key", "rank")


@cache
def _raise_marks(dialect: str):
    ins = dialect_insert(dialect, MARKS).values({c: bindparam(c) for c in _MARK_COLUMNS})
    return ins.on_conflict_do_update(index_elements=["institution", "stream", "record_key"],
                                     set_={"rank": ins.excluded.rank},
                                     where=MARKS.c.rank < ins.excluded.rank)


def outranks(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether version ``a`` (rank, seq) is to be delivered rather than ``b``."""
    return a > b


def outranked_by_marks(conn, best: dict[Key, int], ranks: dict[int, int]) -> list[int]:
    """The versions of ``best`` (ranked streams only) that a higher rank claimed before
    outranks; the marks of the others are raised to their rank."""
    by_stream: dict[tuple[str, str], dict[str, int]] = {}
    for (inst, stream, key), seq in best.items():
        if seq in ranks:
            by_stream.setdefault((inst, stream), {})[key] = seq
    lost: list[int] = []
    raised = []
    for (inst, stream), keys in by_stream.items():
        marked = dict(run(conn, _MARKED, (inst, stream, list(keys))))
        for key, seq in keys.items():
            if marked.get(key, 0) > ranks[seq]:
                lost.append(seq)
            elif ranks[seq] > marked.get(key, 0):
                raised.append((inst, stream, key, ranks[seq]))
    if raised:  # on the driver, plain tuples: one mark per record of a ranked stream
        executemany(conn, _raise_marks(conn.dialect.name), _MARK_COLUMNS, raised,
                    "version-marks")
    return lost
