"""The catalog cache holds one catalog, point of sales and availability per sales channel (a
reseller with its own S-360 operator sees its channel's products): the entry's name carries the
operator, so it gets longer."""

import sqlalchemy as sa
from alembic import op

revision = "offers_0003"
down_revision = "offers_0002"
branch_labels = None


def upgrade() -> None:
    with op.batch_alter_table("offer_cache") as batch:
        batch.alter_column("what", type_=sa.String(100), existing_type=sa.String(20),
                           existing_nullable=False)


def downgrade() -> None:
    op.execute("DELETE FROM offer_cache WHERE what LIKE '%@%'")
    with op.batch_alter_table("offer_cache") as batch:
        batch.alter_column("what", type_=sa.String(20), existing_type=sa.String(100),
                           existing_nullable=False)
