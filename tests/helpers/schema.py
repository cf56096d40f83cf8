"""The engine database's schema revisions this version has, for the migration and schema
command tests."""

from __future__ import annotations

from pathlib import Path

from s360bridge.core.config import load_settings
from s360bridge.core.storage.db import make_engine

FIRST_REVISIONS = ("engine_0001", "crm_0001", "offers_0001", "contacts_0001")
HEADS = ("engine_0013", "crm_0001", "offers_0004", "contacts_0001")
EVERY_REVISION = (*FIRST_REVISIONS, "engine_0002", "engine_0004", "engine_0005", "engine_0006",
                  "engine_0007", "engine_0008", "engine_0009", "engine_0010", "engine_0011",
                  "engine_0012", "engine_0013",
                  "offers_0002", "offers_0003", "offers_0004")


def engine_of(config: Path):
    return make_engine(load_settings([config]).engine.database_url)
