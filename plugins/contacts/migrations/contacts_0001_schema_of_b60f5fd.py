"""CRM watermarks as s360bridge made them before it had migrations (b60f5fd).

The table was then created when the CRM was first polled: a database of that time that holds
it keeps it as it is.
"""

import sqlalchemy as sa
from alembic import op

revision = "contacts_0001"
down_revision = None
branch_labels = ("contacts",)


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("crm_watermark"):
        return
    op.create_table(
        "crm_watermark",
        sa.Column("institution", sa.String(40), primary_key=True),
        sa.Column("stream", sa.String(40), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
