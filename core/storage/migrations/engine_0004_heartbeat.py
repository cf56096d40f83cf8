"""A one-row table that ``/health/ready`` writes when nothing else committed lately: readiness
means the database can commit, which only a commit shows (a read answers while the disk is
full or the file immutable). At most one write per ``engine.ready_within_seconds``."""

import sqlalchemy as sa
from alembic import op

revision = "engine_0004"
down_revision = "engine_0002"
branch_labels = None


def upgrade() -> None:
    op.create_table(
        "heartbeat",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("beat_at", sa.Float(), nullable=False),
    )
