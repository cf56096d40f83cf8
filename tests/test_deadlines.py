"""A database that stops answering hangs nothing: PostgreSQL behind a proxy that stops
forwarding (tests/helpers/proxy.py) while a real `s360bridge run` receives; an engine database
that cannot be reached at start-up is one line.

The configuration's limits are short so that each test takes a few seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import make_url

from .conftest import API_KEY, PASSWORD, SECRETS_ENV, Journal, base_config, write_config
from .helpers.postgres import PG, needs_pg
from .helpers.processes import S360BRIDGE, checks, free_port, healthy, start, wait_until
from .helpers.proxy import HangingProxy

GUNICORN = str(Path(S360BRIDGE).with_name("gunicorn"))

LIMITS = {"request_timeout_seconds": 1, "postgres_connect_timeout_seconds": 2,
          "postgres_statement_timeout_seconds": 2, "pool_timeout_seconds": 1,
          "ready_within_seconds": 1}


@pytest.fixture
def schema(pg_schemas):
    """The URL of a PostgreSQL schema of the test's own."""
    return pg_schemas.new("hang")


@pytest.fixture
def proxy():
    url = make_url(PG)
    hanging = HangingProxy((url.host or "127.0.0.1", url.port or 5432))
    yield hanging
    hanging.close()


def config_through(tmp_path, database_url: str):
    cfg = base_config(tmp_path)
    cfg["engine"].update(database_url=database_url, **LIMITS)
    return write_config(tmp_path, cfg)


def proxied_url(proxy: HangingProxy, schema: str, password: str | None = None) -> str:
    """The schema's URL through the proxy."""
    url = make_url(schema).set(host="127.0.0.1", port=proxy.port)
    if password is not None:
        url = url.set(password=password)
    return url.render_as_string(hide_password=False)


def send(url: str, first_id: int, n: int = 10) -> requests.Response:
    return requests.post(f"{url}/s360/ticketchecks/testvenue", json=checks(first_id, n),
                         headers={"x-api-key": API_KEY}, timeout=30)


@needs_pg
def test_a_hung_database_gets_503_in_time_and_200_again_once_it_answers(tmp_path, schema,
                                                                        proxy):
    config = config_through(tmp_path, proxied_url(proxy, schema))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(["run", "-c", str(config), "--port", str(port)], tmp_path / "run.log")
    try:
        wait_until(lambda: healthy(url), 30, "the receiver to be ready", proc)
        assert send(url, 1).status_code == 200
        proxy.hang()
        started = time.monotonic()
        refused = send(url, 11)
        took = time.monotonic() - started
        print(f"hung database: {refused.status_code} after {took:.2f}s")
        assert refused.status_code == 503 and took < 6  # request 1 s (+ a reconnect's 2 s)
        assert refused.headers["Retry-After"] == "60"
        assert "nothing was stored" in refused.json()["error"]
        assert requests.get(f"{url}/health/live", timeout=2).status_code == 200
        started = time.monotonic()
        ready = requests.get(f"{url}/health/ready", timeout=10)
        assert ready.status_code == 503 and time.monotonic() - started < 6
        assert "cannot commit" in ready.json()["reason"]

        proxy.forward()  # S-360 sends the refused payload again: now it is stored
        wait_until(lambda: send(url, 11).status_code == 200, 20, "a 200 again", proc)
        expected = {str(i) for i in range(1, 21)}
        journal = Journal(tmp_path / "journal.jsonl")
        wait_until(lambda: expected <= set(journal.pushes()), 30,
                   "the worker to resume and deliver everything", proc)
        assert requests.get(f"{url}/health/ready", timeout=5).status_code == 200
        assert proc.poll() is None
    finally:
        proxy.forward()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0


def start_up(tmp_path, database_url: str, *extra: str) -> subprocess.CompletedProcess:
    """`s360bridge worker` on a configuration whose engine database cannot be opened."""
    config = config_through(tmp_path, database_url)
    return subprocess.run([S360BRIDGE, *extra, "worker", "-c", str(config)], timeout=30,
                          env={**os.environ, **SECRETS_ENV}, capture_output=True, text=True)


def one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: cannot open the engine database ")
    assert "check engine.database_url or S360BRIDGE_DATABASE_URL" in lines[0]
    return lines[0]


def test_an_unreachable_database_at_start_is_one_line(tmp_path):
    port = free_port()  # nothing listens there
    line = one_line(start_up(tmp_path, f"postgresql+psycopg://s360:{PASSWORD}@127.0.0.1:{port}"
                                       "/nowhere"))
    assert f"port {port} failed: Connection refused" in line
    assert PASSWORD not in line
    debug = start_up(tmp_path, f"postgresql+psycopg://s360:x@127.0.0.1:{port}/nowhere",
                     "--debug")
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_an_unreachable_database_under_gunicorn_is_one_line_and_gunicorn_stops(tmp_path):
    """The production receiver (core.wsgi under gunicorn) says the same line, once per worker
    that tried, and gunicorn stops instead of restarting workers that cannot start."""
    port = free_port()
    config = config_through(tmp_path, f"postgresql+psycopg://s360:{PASSWORD}@127.0.0.1:{port}"
                                      "/nowhere")
    done = subprocess.run(
        [GUNICORN, "-w", "2", "-b", f"127.0.0.1:{free_port()}",
         "s360bridge.core.wsgi:app_from_env()"], timeout=60, capture_output=True, text=True,
        env={**os.environ, **SECRETS_ENV, "S360BRIDGE_CONFIG": str(config)})
    assert done.returncode != 0, done.stderr
    # none of our code in a traceback; gunicorn (27) prints its own when two workers fail
    # together (its arbiter raises HaltServer again while it halts, from its package and its
    # `bin/gunicorn` script): not ours to hide
    frames = [line for line in done.stderr.splitlines() if line.startswith('  File "')]
    assert all("/gunicorn/" in line or line.startswith(f'  File "{GUNICORN}"')
               for line in frames), done.stderr
    ours = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert ours and all(line.startswith("error: cannot open the engine database ")
                        and f"port {port} failed: Connection refused" in line for line in ours)
    assert PASSWORD not in done.stderr


@needs_pg
def test_a_hung_database_at_start_is_one_line_after_the_connect_timeout(tmp_path, schema,
                                                                        proxy):
    proxy.hang()
    started = time.monotonic()
    line = one_line(start_up(tmp_path, proxied_url(proxy, schema)))
    assert "timeout expired" in line and time.monotonic() - started < 10


@needs_pg
def test_a_wrong_password_at_start_is_one_line(tmp_path, schema, proxy):
    line = one_line(start_up(tmp_path, proxied_url(proxy, schema, "Wr0ng-passw0rd")))
    assert "password authentication failed" in line and "Wr0ng-passw0rd" not in line
