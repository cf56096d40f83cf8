"""Inbox ids are never given twice, on SQLite too.

An inbox id is a version's number: targets keep it (the warehouse's ``source_seq``, which an
older version never overwrites) and it is part of every idempotency key. SQLite gave a new row
the largest id in the table plus one, so once the retention purge (or ``forget``) had deleted
the newest rows, ids were given again: a warehouse then refused the next versions of keys it
held as older than what it had, and a target deduping by idempotency key dropped them.
PostgreSQL's sequence never goes back; there this revision changes nothing.

SQLite's ``AUTOINCREMENT`` keeps the largest id ever given (in ``sqlite_sequence``) and never
goes below it; a table takes it only when made, so the inbox is made again and its rows copied:
about 15 s per GB of inbox, once, with room on disk for a second copy of the table until the
upgrade commits. The copy starts the count at the largest id in the inbox: ids a purge
deleted before this revision are not known here (docs/operations.md says how to check a
warehouse for them).
"""

import sqlalchemy as sa
from alembic import op

revision = "engine_0013"
down_revision = "engine_0012"
branch_labels = None

COLUMNS = ("id, institution, stream, record_key, content_hash, payload, received_at, state, "
           "attempts, last_error")


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "sqlite":
        return
    # the view and the indexes on the inbox, as the earlier revisions left them, made again
    # after the copy (which counts from its largest id: sqlite_sequence)
    again = [sql for (sql,) in conn.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND (name = 'inbox_state' OR "
        "(type = 'index' AND tbl_name = 'inbox')) ORDER BY type = 'view'")]
    op.execute("DROP VIEW inbox_state")
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
    for sql in again:
        conn.exec_driver_sql(sql)
