"""CRM links as s360bridge made them before it had migrations (b60f5fd).

The table was then created with the first http_crm or s360_contacts target: a database of that
time that holds it keeps it as it is.
"""

import sqlalchemy as sa
from alembic import op

revision = "crm_0001"
down_revision = None
branch_labels = ("crm",)


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("crm_link"):
        return
    op.create_table(
        "crm_link",
        sa.Column("institution", sa.String(40), primary_key=True),
        sa.Column("contact_number", sa.String(20), primary_key=True),
        sa.Column("crm_id", sa.String(100)),
        sa.Column("view", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_crm_link_crm_id", "crm_link", ["institution", "crm_id"])
