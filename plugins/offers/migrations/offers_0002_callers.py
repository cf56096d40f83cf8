"""Offers belong to a caller: the service's own credentials (the CRM operator, ``''``) or one
of its ``callers`` (a reseller); idempotency keys are unique per caller, so two resellers
using the same key never meet."""

import sqlalchemy as sa
from alembic import op

revision = "offers_0002"
down_revision = "offers_0001"
branch_labels = None


def upgrade() -> None:
    with op.batch_alter_table("offer") as batch:
        batch.add_column(sa.Column("caller", sa.String(40), nullable=False, server_default=""))
        batch.drop_constraint("uq_offer_key", type_="unique")
        batch.create_unique_constraint("uq_offer_key", ["institution", "caller",
                                                        "idempotency_key"])


def downgrade() -> None:
    with op.batch_alter_table("offer") as batch:
        batch.drop_constraint("uq_offer_key", type_="unique")
        batch.create_unique_constraint("uq_offer_key", ["institution", "idempotency_key"])
        batch.drop_column("caller")
