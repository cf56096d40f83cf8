"""Targets an operator pauses, and the records held for them.

A paused target gets nothing: the worker delivers a record to the stream's other targets and
marks its delivery to the paused one ``held`` (a delivery row), and the record leaves the
queue (kept there, a long pause would leave every claim walking past its held records). The
resume queues the held records again. A partial index holds only the held rows: the resume's
list, and the view's probe per record, cost nothing while no target is paused.

The view ``inbox_state`` counts a held record as pending: it is not delivered everywhere yet.
"""

import sqlalchemy as sa
from alembic import op

revision = "engine_0010"
down_revision = "engine_0009"
branch_labels = None

HELD = "state = 'held'"
VIEW = """CREATE VIEW inbox_state AS
SELECT i.id, i.institution, i.stream, i.record_key, i.payload, i.received_at,
       CASE WHEN q.id IS NOT NULL THEN 'pending'{held}
            WHEN i.state = 'accepted' THEN 'done' ELSE i.state END AS state,
       i.attempts, i.last_error, q.next_attempt_at, q.lease_owner, q.lease_until
FROM inbox i LEFT JOIN queue q ON q.id = i.id"""
HELD_PENDING = """
            WHEN i.state = 'accepted' AND EXISTS (SELECT 1 FROM delivery d
                WHERE d.inbox_id = i.id AND d.state = 'held') THEN 'pending'"""


def upgrade() -> None:
    op.create_table(
        "paused_target",
        sa.Column("institution", sa.String(), primary_key=True),
        sa.Column("target", sa.String(), primary_key=True),
        sa.Column("paused_at", sa.Float(), nullable=False),
        sa.Column("paused_by", sa.String(), nullable=False),
    )
    op.create_index("ix_delivery_held", "delivery", ["inbox_id", "target"],
                    sqlite_where=sa.text(HELD), postgresql_where=sa.text(HELD))
    op.execute("DROP VIEW inbox_state")
    op.execute(VIEW.format(held=HELD_PENDING))


def downgrade() -> None:
    op.execute("DROP VIEW inbox_state")
    op.execute(VIEW.format(held=""))  # as engine_0002 made it
    op.drop_index("ix_delivery_held", "delivery")
    op.drop_table("paused_target")
