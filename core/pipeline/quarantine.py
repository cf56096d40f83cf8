"""The quarantine's writes: an invalid record is held once per institution, stream and content
(its text as received), and each arrival counts on that row."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

import orjson

from s360bridge.core.storage.tables import QUARANTINE, dialect_insert


def content_hash(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def encoded(record) -> str:
    """The text of a record that came without one (a CRM's answer, a CSV row): its JSON,
    escaped to ASCII where orjson cannot encode it (a lone surrogate, nesting deeper than 254
    levels)."""
    try:
        return orjson.dumps(record).decode()
    except orjson.JSONEncodeError:
        return json.dumps(record)


def hold(conn, institution: str, stream: str, held: Iterable[tuple[str, str]],
         now: float) -> int:
    """Hold each ``(text, reason)``: a new row for a content not held yet, else one more
    sighting on its row (held again, with this reason). Answers how many records were held."""
    rows: dict[str, dict] = {}
    for text, reason in held:
        digest = content_hash(text)
        row = rows.get(digest)
        if row is None:
            rows[digest] = {"institution": institution, "stream": stream,
                            "content_hash": digest, "payload": text, "reason": reason,
                            "received_at": now, "last_seen_at": now, "count": 1,
                            "state": "held"}
        else:
            row["count"] += 1
    if not rows:
        return 0
    ins = dialect_insert(conn, QUARANTINE)
    conn.execute(ins.on_conflict_do_update(
        index_elements=["institution", "stream", "content_hash"],
        set_={"count": QUARANTINE.c.count + ins.excluded.count,
              "last_seen_at": ins.excluded.last_seen_at, "reason": ins.excluded.reason,
              "state": "held"}), list(rows.values()))
    return sum(r["count"] for r in rows.values())
