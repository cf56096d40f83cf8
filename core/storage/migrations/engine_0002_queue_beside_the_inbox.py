"""A narrow queue table beside the inbox: what is still to deliver, and its lease.

Until now every record was updated twice on the inbox itself, its whole row rewritten: once when
a worker leased it, once when it was done (on PostgreSQL that second update could never be HOT,
the index of pending rows naming ``state``, so it added entries to the wide indexes too). The
queue holds one small row per record still to deliver (Solid Queue's table of ready work beside
its jobs): claims lease those rows and completion deletes them, and the inbox row is written
once at arrival and again only when something unusual happens (a failure, superseded, dead).

Inbox states become what is final or accepted: ``accepted`` (pending while queued, done once
not), ``superseded``, ``dead``. The view ``inbox_state`` gives every version with the state the
operator knows (pending, done, superseded, dead) and its queue columns.

On SQLite, dropping the inbox's queue columns rewrites the table: about a second per 100,000
rows, once.
"""

import sqlalchemy as sa
from alembic import op

revision = "engine_0002"
down_revision = "engine_0001"
branch_labels = None

INBOX_STATE = """CREATE VIEW inbox_state AS
SELECT i.id, i.institution, i.stream, i.record_key, i.payload, i.received_at,
       CASE WHEN q.id IS NOT NULL THEN 'pending'
            WHEN i.state = 'accepted' THEN 'done' ELSE i.state END AS state,
       i.attempts, i.last_error, q.next_attempt_at, q.lease_owner, q.lease_until
FROM inbox i LEFT JOIN queue q ON q.id = i.id"""


def upgrade() -> None:
    op.create_table(
        "queue",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=False),
        sa.Column("institution", sa.String(), nullable=False),
        sa.Column("next_attempt_at", sa.Float(), nullable=False),
        sa.Column("lease_owner", sa.String()),
        sa.Column("lease_until", sa.Float()),
        # room in every page for the lease update of each row it holds, so that update is
        # HOT (no column of it is indexed); the deleted rows' dead entries at the head of the
        # primary key are cleaned by autovacuum every minute it finds a thousand of them
        postgresql_with={"fillfactor": 50, "autovacuum_vacuum_scale_factor": 0,
                         "autovacuum_vacuum_threshold": 1000},
    )
    op.execute("INSERT INTO queue (id, institution, next_attempt_at, lease_owner, lease_until) "
               "SELECT id, institution, next_attempt_at, lease_owner, lease_until FROM inbox "
               "WHERE state = 'pending'")
    op.execute("UPDATE inbox SET state = 'accepted' WHERE state IN ('pending', 'done')")
    op.drop_index("ix_inbox_pending", "inbox")
    with op.batch_alter_table("inbox") as batch:
        for column in ("next_attempt_at", "lease_owner", "lease_until"):
            batch.drop_column(column)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE inbox RESET (fillfactor)")  # written once now, not updated
    op.execute(INBOX_STATE)
