"""The engine database's schema as the commands see it: `db check`/`upgrade`/`current`, the
one-line refusal of an outdated or unknown schema, and plugins' migration branches
(the migrations themselves: tests/test_migrations.py)."""


from __future__ import annotations

from pathlib import Path

import pytest

from s360bridge.core.bridge import Bridge
from s360bridge.core.cli.main import cli
from s360bridge.core.config import load_settings
from s360bridge.core.errors import OutdatedSchema, PluginError, UnknownSchema
from s360bridge.core.plugin.hookspecs import hookimpl
from s360bridge.core.plugin.manager import Hooks
from s360bridge.core.storage import migrate
from s360bridge.core.wsgi import app_from_env

from .conftest import base_config, bridge_of, write_config
from .helpers.plugins import registered
from .helpers.schema import EVERY_REVISION, HEADS, engine_of


@pytest.fixture
def fresh_config(tmp_path, secrets_env) -> Path:
    """The test configuration, its engine database not created yet."""
    return write_config(tmp_path, base_config(tmp_path))


def test_db_commands_say_check_and_upgrade(fresh_config, runner):
    def db(*args):
        return runner.invoke(cli, ["db", *args, "-c", str(fresh_config)])

    check = db("check")
    assert check.exit_code == 1
    assert f"engine: at none, needs {HEADS[0]}" in check.output
    assert f"run `s360bridge db upgrade -c {fresh_config}`" in check.output
    assert not (fresh_config.parent / "engine.db").exists()  # reading it created nothing
    assert db("current").output.splitlines()[0].split() == [
        "engine", "none", "(this", "version", "needs", f"{HEADS[0]})"]
    upgrade = db("upgrade")
    assert upgrade.exit_code == 0 and upgrade.output.startswith("applied ")
    assert sorted(upgrade.output.strip().removeprefix("applied ").split(", ")) == \
        sorted(EVERY_REVISION)
    assert db("check").output == "the schema is up to date\n"
    assert db("upgrade").output == "the schema is up to date\n"
    current = db("current").output.splitlines()
    assert [line.split() for line in current] == [[r.split("_")[0], r] for r in HEADS]


@pytest.mark.parametrize("command", ["serve", "worker", "status"])
def test_other_commands_refuse_an_outdated_schema_in_one_line(fresh_config, runner, command):
    result = runner.invoke(cli, [command, "-c", str(fresh_config)])
    assert result.exit_code == 2
    assert result.output == (
        "error: the engine database has no schema revision yet, this version needs "
        f"{', '.join(HEADS)}: run `s360bridge db upgrade -c {fresh_config}`\n")


def test_the_wsgi_receiver_refuses_an_outdated_schema(fresh_config, monkeypatch):
    monkeypatch.setenv("S360BRIDGE_CONFIG", str(fresh_config))
    with pytest.raises(OutdatedSchema, match="run `s360bridge db upgrade"):
        app_from_env()


def test_check_config_writes_nothing(tmp_path, secrets_env, runner, monkeypatch):
    cfg = base_config(tmp_path)
    del cfg["engine"]["database_url"]  # the default, sqlite:///var/s360bridge.db
    cfg["targets"]["datx"]["url"] = "sqlite:///var/warehouse.db"
    path = write_config(tmp_path, cfg)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli, ["check-config", "-c", str(path)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["testvenue.yaml"]


SURVEY_REVISION = '''
import sqlalchemy as sa
from alembic import op

revision = "surveys_0001"
down_revision = None
branch_labels = ("surveys",)


def upgrade():
    op.create_table("survey_answer", sa.Column("survey_id", sa.Integer, primary_key=True))
'''


class SurveyTables:
    """A third-party plugin that keeps a table in the engine database."""

    def __init__(self, folder: Path):
        self.folder = folder

    @hookimpl
    def register_migrations(self, register):
        register(self.folder)


def test_a_plugin_brings_its_branch_and_is_left_alone_when_not_loaded(tmp_path, fresh_config):
    folder = tmp_path / "survey_migrations"
    folder.mkdir()
    (folder / "surveys_0001_answers.py").write_text(SURVEY_REVISION, "utf-8")
    with registered(SurveyTables(folder), "survey-tables"):
        bridge_of(fresh_config).close()
        labels = [b.label for b in migrate.branches(engine_of(fresh_config),
                                                    Hooks().migrations())]
    assert sorted(labels) == ["contacts", "crm", "engine", "offers", "surveys"]
    with engine_of(fresh_config).connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM survey_answer").scalar() == 0
    # the plugin no longer loaded: its revision stays in the database, the others start
    Bridge(load_settings([fresh_config])).close()


def test_a_revision_newer_than_this_version_stops_everything(fresh_config):
    bridge_of(fresh_config).close()
    with engine_of(fresh_config).begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'engine_0099' "
                             f"WHERE version_num = '{HEADS[0]}'")
    for schema in ("require", "upgrade"):
        with pytest.raises(UnknownSchema, match="holds the revision engine_0099, which this "
                                                "installation does not know, and none of engine"):
            Bridge(load_settings([fresh_config]), schema=schema)


def test_a_plugin_registers_a_folder(tmp_path):
    with registered(SurveyTables(tmp_path / "missing"), "survey-tables"), \
            pytest.raises(PluginError, match="is not a folder of migrations"):
        Hooks().migrations()
