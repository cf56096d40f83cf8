"""The engine's tables as s360bridge made them before it had migrations (commit b60f5fd).

Tables were then created when first used (the call log with the first S-360 call, import
progress with the first import), so a database of that time may hold any of them: those it
holds are adopted as they are, the others are created.
"""

import sqlalchemy as sa
from alembic import op

revision = "engine_0001"
down_revision = None
branch_labels = ("engine",)


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "inbox" not in existing:
        op.create_table(
            "inbox",
            sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                      primary_key=True),
            sa.Column("institution", sa.String(), nullable=False),
            sa.Column("stream", sa.String(), nullable=False),
            sa.Column("record_key", sa.String(), nullable=False),
            sa.Column("content_hash", sa.String(), nullable=False),
            sa.Column("payload", sa.Text(), nullable=False),
            sa.Column("received_at", sa.Float(), nullable=False),
            sa.Column("state", sa.String(), nullable=False),
            sa.Column("attempts", sa.Integer(), nullable=False),
            sa.Column("next_attempt_at", sa.Float(), nullable=False),
            sa.Column("lease_owner", sa.String()),
            sa.Column("lease_until", sa.Float()),
            sa.Column("last_error", sa.Text()),
            sa.UniqueConstraint("institution", "stream", "record_key", "content_hash",
                                name="uq_inbox_version"),
            # PostgreSQL keeps room in each page for the lease update of every row it holds,
            # so that update is HOT (see InboxRecord)
            postgresql_with={"fillfactor": 50},
        )
        op.create_index("ix_inbox_pending", "inbox", ["id"],
                        sqlite_where=sa.text("state = 'pending'"),
                        postgresql_where=sa.text("state = 'pending'"))
    if "delivery" not in existing:
        op.create_table(
            "delivery",
            sa.Column("inbox_id", sa.BigInteger(), primary_key=True),
            sa.Column("target", sa.String(), primary_key=True),
            sa.Column("state", sa.String(), nullable=False),
            sa.Column("attempts", sa.Integer(), nullable=False),
            sa.Column("last_error", sa.Text()),
            sa.Column("updated_at", sa.Float(), nullable=False),
        )
    if "quarantine" not in existing:
        op.create_table(
            "quarantine",
            sa.Column("id", sa.Integer(), primary_key=True),
            sa.Column("institution", sa.String(), nullable=False),
            sa.Column("stream", sa.String(), nullable=False),
            sa.Column("payload", sa.Text(), nullable=False),
            sa.Column("reason", sa.Text(), nullable=False),
            sa.Column("received_at", sa.Float(), nullable=False),
            sa.Column("state", sa.String(), nullable=False),
        )
        op.create_index("ix_quarantine_where", "quarantine", ["institution", "stream", "state"])
    if "skipped" not in existing:
        op.create_table(
            "skipped",
            sa.Column("institution", sa.String(), primary_key=True),
            sa.Column("stream", sa.String(), primary_key=True),
            sa.Column("reason", sa.String(), primary_key=True),
            sa.Column("count", sa.Integer(), nullable=False),
        )
    if "s360_call_log" not in existing:
        op.create_table(
            "s360_call_log",
            sa.Column("bucket", sa.String(200), nullable=False),
            sa.Column("at_ms", sa.BigInteger(), nullable=False),
        )
        op.create_index("ix_s360_call_log", "s360_call_log", ["bucket", "at_ms"])
    if "import_progress" not in existing:
        op.create_table(
            "import_progress",
            sa.Column("institution", sa.String(40), primary_key=True),
            sa.Column("stream", sa.String(40), primary_key=True),
            sa.Column("file_id", sa.String(64), primary_key=True),
            sa.Column("lines", sa.Integer(), nullable=False),
            sa.Column("done", sa.Integer(), nullable=False),
            sa.Column("updated_at", sa.Float(), nullable=False),
        )
