"""Which versions a claim supersedes: of each key, only one version is delivered (the newest,
or for streams that rank their versions, the highest rank first: versions.py). The others are
taken out of the queue and marked superseded, whether they are in the claim, in the batch its
worker still has in hand, or queued elsewhere (waiting for a retry, or leased by another
worker)."""

from __future__ import annotations

import orjson

from s360bridge.core.pipeline import versions
from s360bridge.core.pipeline.versions import Ranker
from s360bridge.core.plugin.streams import StoredRecord
from s360bridge.core.storage.rawsql import run

Groups = dict[tuple[str, str], list[StoredRecord]]  # (institution, stream) -> records

# Is anything queued before the claim's newest record that is neither the claim's nor the
# batch its worker still has in hand? If not, no older version of a claimed key can be waiting
# elsewhere (the usual case of one worker on a backlog), and the versions need not be looked up.
# (SQLite; PostgreSQL's claim answers which of those rows may be versions of its keys:
# claims.py.)
_OTHERS_BEFORE = """SELECT id FROM queue WHERE id < ?
    AND (lease_owner IS NULL OR NOT (lease_owner IN ?texts)) LIMIT 1"""
# Every version of the listed keys: one probe of the (institution, stream, record_key) index per
# key. On PostgreSQL a LATERAL subquery that cannot be flattened (OFFSET 0) makes the key part
# of each probe: as a plain list, an unanalyzed table lets the planner scan every key of the
# stream and filter them, a cost that grows with the inbox.
_VERSIONS = {
    "sqlite": """SELECT id, record_key{payload} FROM inbox
        WHERE institution = ? AND stream = ? AND record_key IN (SELECT value FROM json_each(?))""",
    "postgresql": """SELECT v.* FROM (SELECT ?::text AS inst, ?::text AS stream) AS p,
        unnest(?::text[]) AS k(key), LATERAL (SELECT id, record_key{payload}
            FROM inbox WHERE institution = p.inst AND stream = p.stream AND record_key = k.key
            OFFSET 0) AS v""",
}
# the queued records that may be versions of the claim's keys, by their ids
_LISTED = "SELECT id, institution, stream, record_key{payload} FROM inbox WHERE id IN ?ints"
_QUEUED = "SELECT id FROM queue WHERE id IN ?ints"


def others_before(rows: list[tuple], tokens: list[str]) -> tuple[str, tuple]:
    """The statement that answers a row when something is queued before the claimed ``rows``
    (in arrival order) outside the leases of ``tokens``: only then is ``losers`` to look
    further than the claim and the batch in hand (its ``others``)."""
    return _OTHERS_BEFORE, (rows[-1][0], tokens)


def losers(conn, rows: list[tuple], decoded: dict[int, dict], in_hand: Groups | None,
           others: list[int] | None, ranker: Ranker | None) -> tuple[dict, set[int]]:
    """For the claimed ``rows`` (inbox rows in arrival order) and their ``decoded`` payloads:
    the version to deliver per (institution, stream, key), and the ids of the versions it
    supersedes, in the claim, in ``in_hand``, or queued outside the claim's leases: among
    ``others``, the ids of the records queued before the claim that may be versions of its keys
    (their key's hash is one of the claim's: claims.py), or, when those are not known
    (``None``: on SQLite, or on PostgreSQL with a claimed row that has no hash or more rows
    queued before the claim than it reads), among every version of its keys."""
    best, ranks = versions.newest(rows, decoded, ranker)
    older = [r[0] for r in rows if best[r[1:4]] != r[0]]
    if in_hand is not None:
        older += _outranked_in_hand(in_hand, best, ranks, ranker)
    if others is None or others:
        older += _queued_versions(conn, best, ranks, {r[0] for r in rows}, ranker, others)
    if ranks:
        older += versions.outranked_by_marks(conn, best, ranks)
    return best, set(older)


def _outranked_in_hand(in_hand: Groups, best: dict, ranks: dict[int, int],
                       ranker: Ranker | None) -> list[int]:
    """The versions of the batch in hand that a version of this claim outranks."""
    lost = []
    for (inst, stream), records in in_hand.items():
        rank = ranker(inst, stream) if ranker else None
        for r in records:
            seq = best.get((inst, stream, r.key))
            if seq is not None and versions.outranks(
                    (ranks.get(seq, 0), seq), (rank(r.record) if rank else 0, r.seq)):
                lost.append(r.seq)
    return lost


def _queued_versions(conn, best: dict, ranks: dict[int, int], claimed: set[int],
                     ranker: Ranker | None, listed: list[int] | None) -> list[int]:
    """Of the queued versions outside the claim (rare: keys with versions waiting for a retry
    or leased elsewhere), found among the ``listed`` ids or, without them, by an indexed
    look-up of the keys per (institution, stream), those that the claim's version of their
    key outranks; and the claim's versions that one of them outranks (a final version waiting
    for its retry)."""
    by_stream: dict[tuple[str, str], dict[str, int]] = {}
    for (inst, stream, key), seq in best.items():
        by_stream.setdefault((inst, stream), {})[key] = seq
    rankers = {s: ranker(*s) if ranker else None for s in by_stream}
    candidates: dict[int, tuple[int, int]] = {}  # seq -> (its rank, the claim's seq of its key)
    for seq, inst, stream, key, *payload in _versions(conn, by_stream, rankers, listed):
        mine = by_stream.get((inst, stream), {}).get(key)
        rank = rankers.get((inst, stream))
        if mine is not None and seq not in claimed and (rank or seq < mine):
            candidates[seq] = (rank(orjson.loads(payload[0])) if rank else 0, mine)
    if not candidates:
        return []
    lost = []
    for (seq,) in run(conn, _QUEUED, (list(candidates),)):
        rank, mine = candidates[seq]
        lost.append(mine if versions.outranks((rank, seq), (ranks.get(mine, 0), mine))
                    else seq)
    return lost


def _versions(conn, by_stream: dict[tuple[str, str], dict[str, int]], rankers: dict,
              listed: list[int] | None):
    """Rows (id, institution, stream, record key[, payload when its stream is ranked]) of the
    ``listed`` inbox ids, or of every version of the keys of ``by_stream``."""
    if listed is not None:
        payload = ", payload" if any(rankers.values()) else ""
        yield from run(conn, _LISTED.format(payload=payload), (listed,))
        return
    for (inst, stream), keys in by_stream.items():
        payload = ", payload" if rankers[(inst, stream)] else ""
        sql = _VERSIONS[conn.dialect.name].format(payload=payload)
        for seq, key, *rest in run(conn, sql, (inst, stream, list(keys))):
            yield (seq, inst, stream, key, *rest)
