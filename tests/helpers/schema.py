"""The engine database's schema revisions this version has, for the migration and schema
command tests."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext

from s360bridge.core.config import load_settings
from s360bridge.core.plugin.manager import Hooks
from s360bridge.core.storage import migrate
from s360bridge.core.storage.db import make_engine

FIRST_REVISIONS = ("engine_0001", "crm_0001", "offers_0001", "contacts_0001")
HEADS = ("engine_0015", "crm_0001", "offers_0004", "contacts_0001")
EVERY_REVISION = (*FIRST_REVISIONS, "engine_0002", "engine_0004", "engine_0005", "engine_0006",
                  "engine_0007", "engine_0008", "engine_0009", "engine_0010", "engine_0011",
                  "engine_0012", "engine_0013", "engine_0014", "engine_0015",
                  "offers_0002", "offers_0003", "offers_0004")


def engine_of(config: Path):
    return make_engine(load_settings([config]).engine.database_url)


def plugin_locations() -> list[Path]:
    """The migrations' folders of the built-in plugins."""
    return Hooks().migrations()


def upgrade_to(engine, revisions) -> None:
    """Apply the migrations up to ``revisions`` only: the schema as it was at those."""
    script = migrate.scripts(plugin_locations())
    with engine.begin() as conn, EnvironmentContext(
            Config(), script,
            fn=lambda heads, _ctx: [s for r in revisions for s in script._upgrade_revs(r, heads)]
    ) as env:
        env.configure(connection=conn)
        env.run_migrations()
