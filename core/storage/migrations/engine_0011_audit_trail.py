"""The audit trail of operator actions: who replayed, reprocessed, paused, resumed or forgot
what, and when (core/operations/audit.py). Kept until someone deletes it: no retention."""

import sqlalchemy as sa
from alembic import op

revision = "engine_0011"
down_revision = "engine_0010"
branch_labels = None


def upgrade() -> None:
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("via", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("institution", sa.String()),
        sa.Column("detail", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit")
