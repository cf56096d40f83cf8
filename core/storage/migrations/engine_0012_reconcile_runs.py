"""Reconcile runs, for the operator console: what each ``s360bridge reconcile`` found (counts,
and the first differences; the report file holds them all), kept like the audit trail."""

import sqlalchemy as sa
from alembic import op

revision = "engine_0012"
down_revision = "engine_0011"
branch_labels = None


def upgrade() -> None:
    op.create_table(
        "reconcile_run",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("institution", sa.String(), nullable=False),
        sa.Column("stream", sa.String(), nullable=False),
        sa.Column("target", sa.String(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("report", sa.Text(), nullable=False),
        sa.Column("differences", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("reconcile_run")
