"""Configuration: the example loads; every mistake names the file, the key and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from s360bridge.core.cli.main import cli
from s360bridge.core.config import EngineSettings, load_settings
from s360bridge.core.errors import ConfigError

from .conftest import base_config, bridge_of, write_config

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "myvenue.yaml"
API = {"base_url": "https://testvenue.pp-ws.secutix.com", "operator": "TEST_B2C",
       "partner": "tests", "secret": {"$env": "TEST_WEBHOOK_PASSWORD"}}
EXAMPLE_ENV = {"MYVENUE_WEBHOOK_PASSWORD": "p", "MYVENUE_EXPORT_API_KEY": "k",
               "MYVENUE_S360_API_URL": "https://myvenue.pp-ws.secutix.com",
               "MYVENUE_S360_API_SECRET": "s", "MYVENUE_CRM_URL": "https://crm.example",
               "MYVENUE_CRM_API_KEY": "c", "MYVENUE_CRM_PUSH_KEY": "c2"}


def test_worked_example_loads():
    settings = load_settings([EXAMPLE], environ=EXAMPLE_ENV)
    inst = settings.institutions["myvenue"]
    assert inst.timezone.key == "Europe/Zurich"
    assert str(inst.history_cutoff) == "2019-01-01"
    assert set(inst.streams) == {"contacts", "orders", "ticketchecks", "crm_contacts"}
    assert set(inst.services) == {"offers"}
    assert inst.s360_api.base_url == "https://myvenue.pp-ws.secutix.com"
    assert str(inst.s360_api.secret) == "<secret $MYVENUE_S360_API_SECRET>"
    assert inst.streams["ticketchecks"].auth.header == "x-api-key"
    assert settings.engine.database_url == "sqlite:///var/s360bridge.db"


def test_database_url_env_overrides(tmp_path):
    env = {**EXAMPLE_ENV, "S360BRIDGE_DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}
    assert load_settings([EXAMPLE], environ=env).engine.database_url.endswith("/x.db")


def test_unsupported_engine_database_is_named(tmp_path, secrets_env):
    cfg = base_config(tmp_path)
    cfg["engine"]["database_url"] = "mysql://root:hunter2@db/s360"
    with pytest.raises(ConfigError) as err:
        bridge_of(write_config(tmp_path, cfg))
    assert "engine.database_url: mysql://root:***@db/s360 is not supported" in str(err.value)
    assert "hunter2" not in str(err.value)


def test_a_folder_serves_several_institutions(tmp_path, secrets_env):
    folder = tmp_path / "conf"
    folder.mkdir()
    for code in ("venue-a", "venue-b"):
        cfg = base_config(tmp_path)
        cfg["institution"] = code
        write_config(folder, cfg, f"{code}.yaml")
    assert sorted(load_settings([folder]).institutions) == ["venue-a", "venue-b"]


def mutate(cfg: dict, change) -> dict:
    change(cfg)
    return cfg


BROKEN = [
    (lambda c: c.update(colour="blue"), "(top level)",
     "Additional properties are not allowed ('colour' was unexpected)"),
    (lambda c: c.pop("timezone"), "(top level)", "'timezone' is a required property"),
    (lambda c: c.update(timezone="Mars/Olympus"), "timezone", "unknown time zone"),
    (lambda c: c.update(history_cutoff="yesterday"), "history_cutoff", "is not a 'date'"),
    (lambda c: c["streams"]["orders"].update(targets=["nowhere"]), "streams.orders.targets",
     "unknown target 'nowhere'"),
    (lambda c: c["streams"]["orders"].update(auth={"type": "basic", "username": "u",
                                                   "password": "plain-text"}),
     "streams.orders.auth.password", "a secret is written as {$env: VARIABLE_NAME}"),
    (lambda c: c["streams"]["orders"].update(auth={"type": "token"}),
     "streams.orders.auth.type", "is not one of"),
    (lambda c: c["engine"].update(retention_hours=1), "engine.retention_hours",
     "shorter than S-360's retry horizon"),
    (lambda c: c.update(allowed_sources=["not-an-ip"]), "allowed_sources.0",
     "is not an address"),
    (lambda c: c["streams"].update(coupons={}), "streams.coupons",
     "no loaded plugin provides this stream"),
    (lambda c: c["targets"].update(dwh={"type": "oracle"}), "targets.dwh.type",
     "unknown target type 'oracle'"),
    (lambda c: c["targets"]["datx"].update(colour=1), "targets.datx", "unknown option(s) colour"),
    (lambda c: c["targets"]["datx"].update(url="mysql://x/y"), "targets.datx",
     "url: mysql://x/y is not supported"),
    (lambda c: c["targets"]["datx"].update(url="postgresql+psycopg2://u:pw@h/db"),
     "targets.datx", "postgresql+psycopg2://u:***@h/db is not supported: use sqlite:///… or "
     "postgresql+psycopg://…"),
    (lambda c: c["streams"]["ticketchecks"].update(options={"columns": {"gate": "g"}}),
     "streams.ticketchecks.options", "unknown column(s) gate"),
    (lambda c: c.update(s360_api={**API, "secret": "plain-text"}), "s360_api.secret",
     "a secret is written as {$env: VARIABLE_NAME}"),
    (lambda c: c.update(s360_api={k: v for k, v in API.items() if k != "operator"}),
     "s360_api", "'operator' is a required property"),
    (lambda c: c.update(s360_api={**API, "iat_unit": "minutes"}), "s360_api.iat_unit",
     "is not one of"),
    (lambda c: c["targets"].update(crm={"type": "http_crm", "contacts": {}}), "targets.crm",
     "contacts: 'url' is a required property"),
    (lambda c: c["targets"].update(crm={"type": "http_crm", "auth": {
        "type": "bearer", "token": "plain-text"}, "orders": {"url": "http://crm"}}),
     "targets.crm.auth.token", "a secret is written as {$env: VARIABLE_NAME}"),
    (lambda c: c["targets"].update(crm={"type": "http_crm", "orders": {
        "url": "http://crm", "mapping": {"total": {"path": "x", "convert": "float"}}}}),
     "targets.crm", "orders.mapping.total: unknown conversion 'float'"),
    (lambda c: c["targets"].update(s360={"type": "s360_contacts"}), "targets.s360",
     "calls the S-360 APIs: add an s360_api section"),
    (lambda c: c["streams"].update(crm_contacts={"options": {"mapping": {"a": "b"}}}),
     "streams.crm_contacts.options", "mapping: contactNumber is required"),
    (lambda c: c["streams"].update(crm_contacts={"options": {"poll": {"every": 1}}}),
     "streams.crm_contacts.options", "poll: 'url' is a required property"),
]


@pytest.mark.parametrize("change,where,what", BROKEN)
def test_invalid_file_names_file_key_and_problem(tmp_path, secrets_env, change, where, what):
    path = write_config(tmp_path, mutate(base_config(tmp_path), change))
    with pytest.raises(ConfigError) as err:
        bridge_of(path).close()
    message = str(err.value)
    assert "plain-text" not in message  # a secret written by mistake is not echoed
    assert str(path) in message
    assert f": {where}: " in message
    assert what in message


def test_missing_secret_names_the_variable(tmp_path, secrets_env, monkeypatch):
    monkeypatch.delenv("TEST_EXPORT_KEY")
    path = write_config(tmp_path, base_config(tmp_path))
    with pytest.raises(ConfigError, match="streams.ticketchecks.auth.key: environment variable "
                                          "TEST_EXPORT_KEY is not set"):
        load_settings([path])
    # commands that never receive webhooks run without the receiver's credentials
    assert load_settings([path], receiver_secrets=False).institutions["testvenue"]


def test_same_institution_twice_and_conflicting_engine_settings(tmp_path, secrets_env):
    first = base_config(tmp_path)
    first["engine"]["batch_size"] = 500
    a = write_config(tmp_path, first, "a.yaml")
    b = write_config(tmp_path, base_config(tmp_path), "b.yaml")
    with pytest.raises(ConfigError, match="'testvenue' is already configured in"):
        load_settings([a, b])
    other = base_config(tmp_path)
    other["institution"] = "other"
    other["engine"]["batch_size"] = 7
    c = write_config(tmp_path, other, "c.yaml")
    with pytest.raises(ConfigError, match=r"c.yaml: engine.batch_size: 7 conflicts with 500 set "
                                          r"in .*a.yaml"):
        load_settings([a, c])


def test_check_config_exits_2_with_the_message(tmp_path, secrets_env, runner):
    path = write_config(tmp_path, mutate(base_config(tmp_path),
                                         lambda c: c.update(timezone="Nowhere/Land")))
    result = runner.invoke(cli, ["check-config", "-c", str(path)])
    assert result.exit_code == 2
    assert f"error: {path}: timezone: unknown time zone 'Nowhere/Land'" in result.output


def test_claims_are_sized_for_the_backend_unless_set():
    """500 records per claim on SQLite, 2,000 on PostgreSQL (docs/configuration.md), unless
    ``engine.batch_size`` says otherwise."""
    assert EngineSettings().claim_size("sqlite") == 500
    assert EngineSettings().claim_size("postgresql") == 2000
    assert EngineSettings(batch_size=7).claim_size("postgresql") == 7
