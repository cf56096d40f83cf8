"""The calls made to S-360 per institution and month, against a plan's monthly quota
(core/s360/quota.py)."""

import sqlalchemy as sa
from alembic import op

revision = "engine_0007"
down_revision = "engine_0006"
branch_labels = None


def upgrade() -> None:
    op.create_table(
        "s360_month_calls",
        sa.Column("institution", sa.String(40), primary_key=True),
        sa.Column("month", sa.String(7), primary_key=True),
        sa.Column("calls", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("s360_month_calls")
