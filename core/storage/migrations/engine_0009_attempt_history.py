"""The attempt history: every attempt to deliver a record to a target, with its time, outcome
and the target's answer, for an operator's search by key (core/operations/search.py).

Until now only the last error of a record, and per target its state and number of attempts,
were kept. One narrow row per attempt, no primary key (append-only, read by record), one index
by record; the worker writes them in the transaction that completes its batch, and they go with
the record: the retention purge and the erasure of a contact delete them.
"""

import sqlalchemy as sa
from alembic import op

revision = "engine_0009"
down_revision = "engine_0008"
branch_labels = None


def upgrade() -> None:
    op.create_table(
        "attempt",
        sa.Column("inbox_id", sa.BigInteger(), nullable=False),
        sa.Column("target", sa.String(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("answer", sa.Text()),
    )
    op.create_index("ix_attempt_record", "attempt", ["inbox_id"])


def downgrade() -> None:
    op.drop_index("ix_attempt_record", "attempt")
    op.drop_table("attempt")
