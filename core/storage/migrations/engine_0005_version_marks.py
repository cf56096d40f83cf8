"""The highest rank claimed for delivery of each key of a stream that ranks its versions (an
order CLOSED ranks above its other versions), kept through the retention purge: a late version
of a lower rank is superseded even once the final one is gone from the inbox
(core/pipeline/versions.py)."""

import sqlalchemy as sa
from alembic import op

revision = "engine_0005"
down_revision = "engine_0004"
branch_labels = None


def upgrade() -> None:
    op.create_table(
        "version_mark",
        sa.Column("institution", sa.String(), primary_key=True),
        sa.Column("stream", sa.String(), primary_key=True),
        sa.Column("record_key", sa.String(), primary_key=True),
        sa.Column("rank", sa.BigInteger(), nullable=False),
    )
