"""Offers and their catalog cache as s360bridge made them before it had migrations (b60f5fd).

Both tables were then created together when the offers stream was first used: a database of
that time that holds them keeps them as they are.
"""

import sqlalchemy as sa
from alembic import op

revision = "offers_0001"
down_revision = None
branch_labels = ("offers",)


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("offer"):
        return
    op.create_table(
        "offer",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("institution", sa.String(40), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("request", sa.Text(), nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("order_id", sa.BigInteger()),
        sa.Column("file_id", sa.BigInteger()),
        sa.Column("expires_at", sa.String(40)),
        sa.Column("result", sa.Text()),
        sa.Column("error", sa.Text()),
        sa.Column("http_status", sa.Integer()),
        sa.Column("lease_owner", sa.String(40)),
        sa.Column("lease_until", sa.Float()),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.UniqueConstraint("institution", "idempotency_key", name="uq_offer_key"),
    )
    op.create_table(
        "offer_cache",
        sa.Column("institution", sa.String(40), primary_key=True),
        sa.Column("what", sa.String(20), primary_key=True),
        sa.Column("fetched_at", sa.Float(), nullable=False),
        sa.Column("marker", sa.Text()),
        sa.Column("data", sa.Text(), nullable=False),
    )
