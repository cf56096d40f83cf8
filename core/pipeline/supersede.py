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
_QUEUED = "SELECT id FROM queue WHERE id IN ?ints"


def others_before(rows: list[tuple], tokens: list[str]) -> tuple[str, tuple]:
    """The statement that answers a row when something is queued before the claimed ``rows``
    (in arrival order) outside the leases of ``tokens``: only then is ``losers`` to look
    further than the claim and the batch in hand (its ``others``)."""
    return _OTHERS_BEFORE, (rows[-1][0], tokens)


def losers(conn, rows: list[tuple], decoded: dict[int, dict], in_hand: Groups | None,
           others: bool, ranker: Ranker | None) -> tuple[dict, set[int]]:
    """For the claimed ``rows`` (inbox rows in arrival order) and their ``decoded`` payloads:
    the version to deliver per (institution, stream, key), and the ids of the versions it
    supersedes, in the claim, in ``in_hand``, or, when ``others`` are queued before them
    (``others_before``), queued outside the claim's leases."""
    best, ranks = versions.newest(rows, decoded, ranker)
    older = [r[0] for r in rows if best[r[1:4]] != r[0]]
    if in_hand is not None:
        older += _outranked_in_hand(in_hand, best, ranks, ranker)
    if others:
        older += _queued_versions(conn, best, ranks, {r[0] for r in rows}, ranker)
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
                     ranker: Ranker | None) -> list[int]:
    """Of the queued versions outside the claim (rare: keys with versions waiting for a retry
    or leased elsewhere), found by an indexed look-up per (institution, stream), those that
    the claim's version of their key outranks; and the claim's versions that one of them
    outranks (a final version waiting for its retry)."""
    by_stream: dict[tuple[str, str], dict[str, int]] = {}
    for (inst, stream, key), seq in best.items():
        by_stream.setdefault((inst, stream), {})[key] = seq
    candidates: dict[int, tuple[int, int]] = {}  # seq -> (its rank, the claim's seq of its key)
    for (inst, stream), keys in by_stream.items():
        rank = ranker(inst, stream) if ranker else None
        sql = _VERSIONS[conn.dialect.name].format(payload=", payload" if rank else "")
        for seq, key, *payload in run(conn, sql, (inst, stream, list(keys))):
            if seq not in claimed and (rank or seq < keys[key]):
                candidates[seq] = (rank(orjson.loads(payload[0])) if rank else 0, keys[key])
    if not candidates:
        return []
    lost = []
    for (seq,) in run(conn, _QUEUED, (list(candidates),)):
        rank, mine = candidates[seq]
        lost.append(mine if versions.outranks((rank, seq), (ranks.get(mine, 0), mine))
                    else seq)
    return lost
