"""Shared fixtures: a real SQLite engine and warehouse in a temporary folder, the Flask app and
test client, the CLI runner, and a journal (jsonl) target that counts every push."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from s360bridge.core.bridge import Bridge
from s360bridge.core.cli.main import cli
from s360bridge.core.config import load_settings
from s360bridge.core.pipeline.receiver import create_app
from s360bridge.core.pipeline.worker import Worker
from s360bridge.core.plugin.manager import plugin_manager

from .helpers.examples import install
from .helpers.postgres import needs_pg, schemas

FIXTURES = Path(__file__).parent / "fixtures"
HOOKS_CALLED: set[str] = set()  # hooks the suite called on at least one real plugin
FULL_RUN = pytest.StashKey[bool]()


def pytest_configure(config):
    """Watch every hook call of the process-wide plugin manager (tests/test_meta.py checks
    that each hook was called through a plugin by some test)."""
    plugin_manager().add_hookcall_monitoring(
        lambda name, impls, kwargs: impls and HOOKS_CALLED.add(name), lambda *args: None)


def pytest_collection_modifyitems(session, config, items):
    """Tests marked ``last`` run after all others; they know whether the whole suite runs."""
    config.stash[FULL_RUN] = (config.args_source == pytest.Config.ArgsSource.TESTPATHS
                              and not config.option.keyword and not config.option.markexpr)
    items.sort(key=lambda item: item.get_closest_marker("last") is not None)
PASSWORD = "s3cr3t-basic-pa55"
API_KEY = "k3y-0f-the-export-hook"
SECRETS_ENV = {"TEST_WEBHOOK_PASSWORD": PASSWORD, "TEST_EXPORT_KEY": API_KEY}


def fixture(name: str):
    return json.loads((FIXTURES / name).read_text("utf-8"))


def base_config(tmp_path: Path) -> dict:
    """An institution ``testvenue`` with every stream, a warehouse and a journal target."""
    return {
        "institution": "testvenue",
        "timezone": "Europe/Zurich",
        "history_cutoff": "2019-01-01",
        "targets": {
            "datx": {"type": "sql", "url": f"sqlite:///{tmp_path}/warehouse.db"},
            "journal": {"type": "jsonl", "path": str(tmp_path / "journal.jsonl")},
        },
        "streams": {
            "contacts": {"auth": {"type": "basic", "username": "s360",
                                  "password": {"$env": "TEST_WEBHOOK_PASSWORD"}},
                         "targets": ["datx", "journal"]},
            "orders": {"auth": {"type": "none"}, "targets": ["datx", "journal"]},
            "ticketchecks": {"auth": {"type": "api_key", "header": "x-api-key",
                                      "key": {"$env": "TEST_EXPORT_KEY"}},
                             "targets": ["datx", "journal"]},
        },
        "engine": {"database_url": f"sqlite:///{tmp_path}/engine.db",
                   # a failed record waits a minute: no retry sneaks into a test's drain
                   "sqlite_synchronous": "NORMAL", "backoff_base_seconds": 60,
                   "backoff_max_seconds": 600, "max_attempts": 3},
    }


def write_config(tmp_path: Path, data: dict, name: str = "testvenue.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data), "utf-8")
    return path


def bridge_of(path: Path) -> Bridge:
    """The Bridge of one configuration file, its engine database upgraded to the heads of the
    migrations (as `s360bridge run` does)."""
    return Bridge(load_settings([path]), schema="upgrade")


@pytest.fixture
def secrets_env(monkeypatch):
    for k, v in SECRETS_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("S360BRIDGE_DATABASE_URL", raising=False)


@pytest.fixture
def config_path(tmp_path, secrets_env) -> Path:
    """The test configuration, its engine database upgraded (as `s360bridge db upgrade`)."""
    path = write_config(tmp_path, base_config(tmp_path))
    bridge_of(path).close()
    return path


@pytest.fixture
def bridge(config_path):
    b = bridge_of(config_path)
    yield b
    b.close()


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test():
    """A test that fails before stopping an `s360bridge` it started leaves none behind."""
    yield
    from .helpers.processes import kill_leftovers

    kill_leftovers()


@pytest.fixture
def crm():
    """The simulator's reference CRM, served on loopback (``crm.url``)."""
    from s360bridge.simulator.crm import ReferenceCrm
    from s360bridge.simulator.serving import Served

    c = ReferenceCrm()
    with Served(c.app()) as served:
        c.url = served.url
        yield c


@pytest.fixture
def sim():
    """S-360's simulated sales API for one institution, ``venue`` (tests/helpers/sales_api.py)."""
    from .helpers.sales_api import served_sim

    with served_sim() as s:
        yield s


@pytest.fixture
def shop(tmp_path, monkeypatch, secrets_env):
    """A venue selling through the offers service (tests/helpers/shop.py)."""
    from .helpers.shop import Shop  # it builds on this module's helpers

    s = Shop(tmp_path, monkeypatch)
    yield s
    s.close()


@pytest.fixture
def pg_schemas():
    """PostgreSQL schemas of the test's own (tests/helpers/postgres.py); skipped without one."""
    with schemas() as made:
        yield made


@pytest.fixture
def pg_bridge(tmp_path, secrets_env, pg_schemas):
    """The test configuration with its engine database and warehouse on PostgreSQL."""
    cfg = base_config(tmp_path)
    cfg["engine"]["database_url"] = pg_schemas.new("engine")
    cfg["targets"]["datx"]["url"] = pg_schemas.new("dwh")
    b = bridge_of(write_config(tmp_path, cfg))
    yield b
    b.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=needs_pg)])
def new_database(request, tmp_path):
    """A function that answers the URL of a new, empty database of the parameter's kind."""
    if request.param == "sqlite":
        yield lambda: f"sqlite:///{tmp_path}/{uuid.uuid4().hex[:8]}.db"
        return
    with schemas() as made:
        yield lambda: made.new("migrations")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=needs_pg)])
def any_bridge(request):
    """The test configuration's bridge on SQLite, then on PostgreSQL."""
    return request.getfixturevalue("bridge" if request.param == "sqlite" else "pg_bridge")


@pytest.fixture
def app(bridge):
    return create_app(bridge)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def invoke(runner, config_path):
    """Run an ``s360bridge`` command against the test configuration."""
    def _invoke(*args):
        return runner.invoke(cli, [*args, "-c", str(config_path)])
    return _invoke


class Journal:
    """Reads the jsonl target: every push of every record, re-deliveries included."""

    def __init__(self, path: Path):
        self.path = path

    def lines(self) -> list[dict]:
        """The lines pushed, but those `forget` blanked."""
        if not self.path.exists():
            return []
        complete = self.path.read_text("utf-8").split("\n")[:-1]  # a line being written waits
        return [r for r in map(json.loads, complete) if r.keys() - {"forgotten"}]

    def pushes(self, stream: str | None = None) -> Counter:
        return Counter(line["key"] for line in self.lines()
                       if stream is None or line["stream"] == stream)


@pytest.fixture
def journal(tmp_path) -> Journal:
    return Journal(tmp_path / "journal.jsonl")


def drain(bridge, rounds: int = 50) -> int:
    """Run the worker until a batch finds nothing to do; answer how many records it handled."""
    worker, total = Worker(bridge), 0
    for _ in range(rounds):
        n = worker.run_once()
        if n == 0:
            return total
        total += n
    raise AssertionError(f"the worker still had work after {rounds} batches")


AUTH = {"contacts": {"auth": ("s360", PASSWORD)}, "orders": {},
        "ticketchecks": {"headers": {"x-api-key": API_KEY}}}


def post(client, stream: str, body, institution: str = "testvenue", **kwargs):
    """POST a body (JSON-encoded unless bytes) with the stream's credentials."""
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    opts = {**AUTH[stream], **kwargs}
    return client.post(f"/s360/{stream}/{institution}", data=data, **opts)


@pytest.fixture(scope="session")
def examples_site(tmp_path_factory):
    """The plugins of examples/, installed once into a folder outside the virtualenv."""
    return install(tmp_path_factory.mktemp("examples"))


@pytest.fixture
def private_cluster():
    """A PostgreSQL cluster of the test's own (bench/pgcluster.py), never the shared one: for
    the faults that stop it or end its connections."""
    from bench.pgcluster import PrivateCluster, binaries

    if binaries() is None:
        pytest.skip("PostgreSQL's server binaries are not installed")
    with PrivateCluster() as pg:
        yield pg
