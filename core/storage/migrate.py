"""Schema migrations of the engine database, with Alembic used as a library (no alembic.ini).

The engine's own tables are the branch ``engine`` (core/storage/migrations); each plugin that
owns tables brings its versions folder as a branch of its own through the
``register_migrations`` hook. ``upgrade`` brings every branch to its head in one transaction
that processes starting together take in turn (SQLite's write lock; on PostgreSQL an advisory
lock taken in that transaction), so the schema is upgraded once. ``require`` refuses a schema
that is not at the heads.

The database may hold a revision that no loaded branch knows: a plugin that is not loaded
(S360BRIDGE_LOAD_PLUGINS) wrote it, and it is left alone. If a loaded branch then has no
revision in the database, that revision may be this branch's, written by a newer s360bridge,
and nothing goes ahead.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

from s360bridge.core.errors import OutdatedSchema, UnknownSchema
from s360bridge.core.storage import deadline, migrations
from s360bridge.core.storage.db import write

ENGINE_BRANCH = Path(migrations.__file__).parent
UPGRADE_LOCK = 0x7333_3630_6D69_6772  # "s360migr": the PostgreSQL advisory lock of upgrades

# Alembic says which dialect it found at every start (and that it "will assume non-transactional
# DDL" on SQLite, where the upgrade is one transaction all the same): callers log what applied
logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)


@dataclass(frozen=True)
class Branch:
    """One branch of the schema: the revision the database is at, and its head."""

    label: str
    applied: str | None
    head: str

    @property
    def outdated(self) -> bool:
        return self.applied != self.head


def scripts(locations: Sequence[Path]) -> ScriptDirectory:
    """The migrations of the engine's branch and of the plugins' versions folders."""
    return ScriptDirectory(ENGINE_BRANCH, version_locations=[ENGINE_BRANCH, *locations])


def branches(engine: Engine, locations: Sequence[Path]) -> list[Branch]:
    """Where each branch is in the database and where this version needs it; reads only."""
    return _branches(scripts(locations), _in_database(engine))


def require(engine: Engine, locations: Sequence[Path], upgrade_command: str) -> None:
    """Raise OutdatedSchema, which says to run ``upgrade_command``, unless every branch is at
    its head."""
    found = branches(engine, locations)
    if not any(b.outdated for b in found):
        return
    at = ", ".join(b.applied for b in found if b.applied)
    needs = ", ".join(b.head for b in found)
    where = f"'s schema is at {at}" if at else " has no schema revision yet"
    raise OutdatedSchema(f"the engine database{where}, this version needs {needs}: "
                         f"run `{upgrade_command}`")


def upgrade(engine: Engine, locations: Sequence[Path]) -> list[str]:
    """Bring every branch to its head; answer the revisions applied, in order."""
    script = scripts(locations)
    applied: list[str] = []
    # a migration may take long on a large table, and waits for another process's upgrade
    with deadline.within(math.inf), write(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL statement_timeout = 0"))
            conn.execute(text("SET LOCAL lock_timeout = 0"))
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": UPGRADE_LOCK})
        at = tuple(b.applied for b in _branches(script, _heads(conn)) if b.applied)
        config = Config()  # what a migration may ask: had the database an inbox before?
        config.attributes["inbox_before"] = inspect(conn).has_table("inbox")

        def steps(_heads, _context):
            # as alembic's upgrade command does, from the revisions of the loaded branches only
            found = script._upgrade_revs("heads", at)
            applied.extend(step.revision.revision for step in found)
            return found

        with EnvironmentContext(config, script, fn=steps) as env:
            env.configure(connection=conn)
            env.run_migrations()
    return applied


def _in_database(engine: Engine) -> tuple[str, ...]:
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database not in (None, "", ":memory:") \
            and not Path(database).exists():
        return ()  # reading would create the file
    with engine.connect() as conn:
        return _heads(conn)


def _heads(conn) -> tuple[str, ...]:
    return MigrationContext.configure(conn).get_current_heads()


def _branches(script: ScriptDirectory, in_database: Sequence[str]) -> list[Branch]:
    known = {s.revision for s in script.walk_revisions()}
    applied = {_base(script, r): r for r in in_database if r in known}
    found = []
    for head in script.get_heads():
        base = _base(script, head)
        label = next(iter(script.get_revision(base).branch_labels), base)
        found.append(Branch(label, applied.get(base), head))
    found.sort(key=lambda b: b.label != "engine")  # the engine's own branch first
    unknown = sorted(set(in_database) - known)
    missing = [b.label for b in found if b.applied is None]
    if unknown and missing:
        raise UnknownSchema(
            f"the engine database holds the revision {', '.join(unknown)}, which this "
            f"installation does not know, and none of {', '.join(missing)}: a newer s360bridge "
            "upgraded it, or a plugin that is not loaded did (see S360BRIDGE_LOAD_PLUGINS)")
    return found


def _base(script: ScriptDirectory, revision: str) -> str:
    return next(s.revision for s in script.iterate_revisions(revision, "base")
                if not s.down_revision)
