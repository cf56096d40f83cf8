"""Inbox ids are never given twice, on SQLite too.

An inbox id is a version's number: targets keep it (the warehouse's ``source_seq``, which an
older version never overwrites) and it is part of every idempotency key. SQLite gave a new row
the largest id in the table plus one, so once the retention purge (or ``forget``) had deleted
the newest rows, ids were given again: a warehouse then refused the next versions of keys it
held as older than what it had, and a target deduping by idempotency key dropped them.
PostgreSQL's sequence never goes back; there this revision changes nothing.

SQLite's ``AUTOINCREMENT`` keeps the largest id ever given (in ``sqlite_sequence``) and never
goes below it; a table takes it only when made, so the inbox is made again and its rows copied:
about 15 s per GB of inbox, once. Every view and trigger is made again after it as the database
had it (SQLite checks them all when a table is renamed), and the inbox's indexes.

Which ids a purge deleted before is not known here, and targets may hold larger ones than the
inbox does now: the count goes on a billion past its largest id (a jump harms nothing; ids are
64-bit), unless this upgrade made the inbox (a new database), which starts at 1.
"""

import sqlalchemy as sa
from alembic import op

revision = "engine_0013"
down_revision = "engine_0012"
branch_labels = None

COLUMNS = ("id, institution, stream, record_key, content_hash, payload, received_at, state, "
           "attempts, last_error")
AHEAD = 1_000_000_000


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "sqlite":
        return
    again = conn.exec_driver_sql(
        "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL AND (type IN "
        "('view', 'trigger') OR (type = 'index' AND tbl_name = 'inbox'))").all()
    config = op.get_context().config  # migrate.upgrade says whether an inbox was there
    new = config is not None and config.attributes.get("inbox_before") is False
    for kind, name, _ in again:
        if kind != "index":
            op.execute(f'DROP {kind.upper()} "{name}"')
    op.create_table(
        "inbox_copy",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("institution", sa.String(), nullable=False),
        sa.Column("stream", sa.String(), nullable=False),
        sa.Column("record_key", sa.String(), nullable=False),
        sa.Column("content_hash", sa.String(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text()),
        sa.UniqueConstraint("institution", "stream", "record_key", "content_hash",
                            name="uq_inbox_version"),
        sqlite_autoincrement=True,
    )
    op.execute(f"INSERT INTO inbox_copy ({COLUMNS}) SELECT {COLUMNS} FROM inbox ORDER BY id")
    op.execute("DROP TABLE inbox")
    op.execute("ALTER TABLE inbox_copy RENAME TO inbox")
    if not new:
        op.execute("DELETE FROM sqlite_sequence WHERE name = 'inbox'")
        op.execute(f"INSERT INTO sqlite_sequence (name, seq) "
                   f"SELECT 'inbox', coalesce(max(id), 0) + {AHEAD} FROM inbox")
    for _, _, sql in sorted(again, key=lambda found: found[0] == "trigger"):
        conn.exec_driver_sql(sql)  # indexes and views first: a trigger may use a view
