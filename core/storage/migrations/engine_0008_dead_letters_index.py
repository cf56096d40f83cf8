"""An index of the dead letters, by institution and stream: ``/metrics`` counts them at every
scrape (core/operator/gauges.py), and ``status`` and ``replay`` look for them, without reading
the whole inbox. Partial, it holds the dead versions only, a handful beside millions."""

import sqlalchemy as sa
from alembic import op

revision = "engine_0008"
down_revision = "engine_0007"
branch_labels = None


def upgrade() -> None:
    op.create_index("ix_inbox_dead", "inbox", ["institution", "stream"],
                    sqlite_where=sa.text("state = 'dead'"),
                    postgresql_where=sa.text("state = 'dead'"))


def downgrade() -> None:
    op.drop_index("ix_inbox_dead", "inbox")
