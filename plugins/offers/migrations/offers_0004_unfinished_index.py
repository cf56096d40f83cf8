"""A partial index of the offers not finished yet: the recovery job (every 10 s) and the
``/metrics`` gauges of offers by state find them without reading every offer ever made."""

import sqlalchemy as sa
from alembic import op

revision = "offers_0004"
down_revision = "offers_0003"
branch_labels = None

UNFINISHED = sa.text("state NOT IN ('done', 'failed')")


def upgrade() -> None:
    op.create_index("ix_offer_unfinished", "offer", ["institution", "state"],
                    sqlite_where=UNFINISHED, postgresql_where=UNFINISHED)


def downgrade() -> None:
    op.drop_index("ix_offer_unfinished", "offer")
