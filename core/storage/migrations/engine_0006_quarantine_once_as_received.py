"""The quarantine holds each invalid record once, as received.

Until now every arrival of an invalid record added a row, and the row held orjson's re-encoding
of the record (``1.10`` became ``1.1``). From now on the payload is the record's text exactly as
S-360 sent it, ``content_hash`` is the hash of that text, and a record that comes again (S-360
resends) counts on its row (``count``, ``last_seen_at``): one row per institution, stream and
content.

Existing rows get the hash of the payload they hold; rows of the same content are merged into
the first one, which takes their number as its count, the latest arrival as its last sighting
and reason, and is held if any of them still was.
"""

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "engine_0006"
down_revision = "engine_0005"
branch_labels = None


def content_hash(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def upgrade() -> None:
    with op.batch_alter_table("quarantine") as batch:
        batch.add_column(sa.Column("content_hash", sa.String()))
        batch.add_column(sa.Column("last_seen_at", sa.Float()))
        batch.add_column(sa.Column("count", sa.Integer()))
    conn = op.get_bind()
    groups: dict[tuple, list] = {}
    for row in conn.execute(sa.text("SELECT id, institution, stream, payload, reason, "
                                    "received_at, state FROM quarantine ORDER BY id")):
        groups.setdefault((row.institution, row.stream, content_hash(row.payload)),
                          []).append(row)
    merged = []
    for (_, _, digest), rows in groups.items():
        last = max(rows, key=lambda r: (r.received_at, r.id))
        held = any(r.state == "held" for r in rows)
        conn.execute(sa.text(
            "UPDATE quarantine SET content_hash = :digest, count = :n, last_seen_at = :seen, "
            "reason = :reason, state = :state WHERE id = :id"),
            {"digest": digest, "n": len(rows), "seen": last.received_at, "reason": last.reason,
             "state": "held" if held else rows[0].state, "id": rows[0].id})
        merged.extend(r.id for r in rows[1:])
    for i in range(0, len(merged), 500):
        conn.execute(sa.text("DELETE FROM quarantine WHERE id IN :ids").bindparams(
            sa.bindparam("ids", expanding=True)), {"ids": merged[i:i + 500]})
    with op.batch_alter_table("quarantine") as batch:
        for name, kind in (("content_hash", sa.String()), ("last_seen_at", sa.Float()),
                           ("count", sa.Integer())):
            batch.alter_column(name, existing_type=kind, nullable=False)
        batch.create_unique_constraint("uq_quarantine_content",
                                       ["institution", "stream", "content_hash"])
