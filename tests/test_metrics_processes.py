"""/metrics over real HTTP from real processes: `s360bridge run` with its operator listener, fed
by the receiver and scraped once the worker has delivered, to the exact count; and gunicorn's
web workers (restarted every few requests), two `s360bridge worker` and an
`s360bridge operator` sharing one PROMETHEUS_MULTIPROC_DIR: the counters add up across every
process, dead ones included, and no gauge is added up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from s360bridge.core.instruments import MULTIPROC_ENV

from .conftest import API_KEY, PASSWORD, SECRETS_ENV, base_config, bridge_of, write_config
from .helpers.metrics import (
    OPERATOR_AUTH,
    OPERATOR_ENV,
    OPERATOR_PASSWORD,
    Scrape,
    operator_settings,
)
from .helpers.processes import S360BRIDGE, checks, free_port, healthy, stop, wait_until
from .test_processes import warehouse_keys

KEY = {"x-api-key": API_KEY}
WHERE = {"institution": "testvenue", "stream": "ticketchecks"}


def spawn(args: list[str], log: Path, env: dict) -> subprocess.Popen:
    """A command of this virtualenv in a process group of its own, with ``env``."""
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=log.open("ab"),
                            start_new_session=True)


def environment(**extra) -> dict:
    env = {**os.environ, **SECRETS_ENV, **OPERATOR_ENV, **extra}
    env.pop("S360BRIDGE_DATABASE_URL", None)
    return env


def scrape(url: str) -> Scrape:
    r = requests.get(f"{url}/metrics", auth=OPERATOR_AUTH, timeout=10)
    assert r.status_code == 200, r.text
    return Scrape(r.text)


@pytest.fixture
def metrics_config(tmp_path, secrets_env):
    cfg = base_config(tmp_path)
    cfg["engine"]["operator"] = operator_settings(free_port())
    path = write_config(tmp_path, cfg)
    bridge_of(path).close()  # `db upgrade`: gunicorn's workers refuse to upgrade
    return path, f"http://127.0.0.1:{cfg['engine']['operator']['port']}"


def test_run_counts_what_it_received_and_delivered_exactly(tmp_path, metrics_config):
    """Through `s360bridge run`: 30 new records, a resent batch, a quarantined record, one older
    than the cut-off and a request with a wrong key; then, delivered, /metrics says exactly
    that. What a process of an earlier run left in the folder is cleared at start."""
    config, operator = metrics_config
    folder = tmp_path / "metrics"
    folder.mkdir()
    env = environment(**{MULTIPROC_ENV: str(folder)})
    subprocess.run([sys.executable, "-c", "from s360bridge.core import instruments; "
                    "instruments.refused('testvenue', 'ticketchecks', 5)"], env=env, check=True)
    assert [p.name.split("_")[0] for p in folder.glob("*.db")] == ["counter"]  # a dead pid's
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "run.log"
    proc = spawn([S360BRIDGE, "run", "-c", str(config), "--port", str(port)], log, env)
    try:
        wait_until(lambda: healthy(url), 30, "the receiver to be ready", proc)
        unauthenticated = requests.get(f"{operator}/metrics", timeout=10)
        session = requests.Session()
        batches = [checks(70_000_000_000 + i * 10, 10) for i in range(3)]
        answers = [session.post(f"{url}/s360/ticketchecks/testvenue", json=body, headers=KEY,
                                timeout=10).json() for body in [*batches, batches[0]]]
        odd = [{"ticket_check_id": 1}, {**checks(70_000_001_000, 1)[0],
                                        "access_time": "2018-05-01 10:00:00"}]
        answers.append(session.post(f"{url}/s360/ticketchecks/testvenue", json=odd,
                                    headers=KEY, timeout=10).json())
        refused = session.post(f"{url}/s360/ticketchecks/testvenue", json=checks(1, 3),
                               headers={"x-api-key": "wrong"}, timeout=10)
        warehouse = tmp_path / "warehouse.db"
        wait_until(lambda: len(warehouse_keys(warehouse)) == 30, 60, "30 records delivered",
                   proc)
        wait_until(lambda: scrape(operator)("s360bridge_job_last_success_timestamp_seconds",
                                            name="purge") > 0, 30, "the purge to run", proc)
        seen = scrape(operator)
    finally:
        assert stop(proc) == 0
    assert unauthenticated.status_code == 401 and unauthenticated.content == b""
    assert [a["accepted"] for a in answers] == [10, 10, 10, 0, 0]
    assert refused.status_code == 401
    received = {outcome: seen("s360bridge_records_received_total", **WHERE, outcome=outcome)
                for outcome in ("accepted", "duplicate", "quarantined", "before_cutoff",
                                "refused")}
    assert received == {"accepted": 30, "duplicate": 10, "quarantined": 1,
                        "before_cutoff": 1, "refused": 1}  # not 6: the old file is gone
    responses = {code: seen("s360bridge_receiver_responses_total", code=code)
                 for code in ("200", "401", "500")}
    assert responses == {"200": 5, "401": 1, "500": 0}  # health checks are not counted
    for target in ("datx", "journal"):
        assert seen("s360bridge_deliveries_total", **WHERE, target=target,
                    outcome="delivered") == 30
        assert seen("s360bridge_delivery_latency_seconds_count", institution="testvenue",
                    target=target) == 30
        assert seen("s360bridge_delivery_latency_seconds_bucket", institution="testvenue",
                    target=target, le="+Inf") == 30
        assert seen("s360bridge_backlog_records", institution="testvenue", target=target) == 0
    assert seen("s360bridge_quarantined_records", **WHERE) == 1
    assert seen("s360bridge_dead_letter_records", **WHERE) == 0
    assert seen("s360bridge_job_interval_seconds", name="purge") == 3600
    for secret in (OPERATOR_PASSWORD, PASSWORD, API_KEY):
        assert secret not in seen.text
        assert secret not in log.read_text()
    assert "operator listening on http://127.0.0.1:" in log.read_text()


def test_counters_add_up_across_processes_and_gauges_do_not(tmp_path, metrics_config):
    """gunicorn's two web workers are replaced every 4 requests, so the 26 webhooks are
    answered by at least 7 processes; two `s360bridge worker` deliver (each with a scheduler)
    and `s360bridge operator` serves /metrics. The counters are the sums over every process,
    the gone ones too; the jobs' gauges are not added up (the purge runs every 3,600 s in both
    workers, not every 7,200), nor the database's."""
    config, operator = metrics_config
    folder = tmp_path / "metrics"
    folder.mkdir()
    env = environment(**{MULTIPROC_ENV: str(folder), "S360BRIDGE_CONFIG": str(config)})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gunicorn = spawn([str(Path(S360BRIDGE).with_name("gunicorn")), "-c",
                      "python:s360bridge.core.gunicorn_conf", "-w", "2", "--max-requests", "4",
                      "-b", f"127.0.0.1:{port}", "s360bridge.core.wsgi:app_from_env()"],
                     tmp_path / "gunicorn.log", env)
    others = [spawn([S360BRIDGE, role, "-c", str(config)], tmp_path / f"{role}-{i}.log", env)
              for i, role in enumerate(("worker", "worker", "operator"))]
    try:
        wait_until(lambda: healthy(url), 30, "gunicorn to be ready", gunicorn)
        session = requests.Session()
        batches = [checks(80_000_000_000 + i * 10, 10) for i in range(24)]
        codes = [session.post(f"{url}/s360/ticketchecks/testvenue", json=body, headers=KEY,
                              timeout=10).status_code for body in [*batches, *batches[:2]]]
        warehouse = tmp_path / "warehouse.db"
        wait_until(lambda: len(warehouse_keys(warehouse)) == 240, 60, "240 records delivered",
                   others[0])
        wait_until(lambda: scrape(operator)("s360bridge_deliveries_total", **WHERE,
                                            target="journal", outcome="delivered") == 240,
                   30, "the journal's deliveries counted", others[2])
        seen = scrape(operator)
    finally:
        os.killpg(gunicorn.pid, signal.SIGTERM)
        gunicorn.wait(30)
        assert [stop(p) for p in others] == [0, 0, 0]
    assert codes == [200] * 26
    counting = {p.stem.rsplit("_", 1)[1] for p in folder.glob("counter_*.db")}
    assert len(counting) >= 26 // 4 + 2  # web workers that answered, and the two workers
    assert seen("s360bridge_records_received_total", **WHERE, outcome="accepted") == 240
    assert seen("s360bridge_records_received_total", **WHERE, outcome="duplicate") == 20
    assert seen("s360bridge_receiver_responses_total", code="200") == 26
    for target in ("datx", "journal"):
        assert seen("s360bridge_deliveries_total", **WHERE, target=target,
                    outcome="delivered") == 240
        assert seen("s360bridge_delivery_latency_seconds_count", institution="testvenue",
                    target=target) == 240
        assert seen("s360bridge_backlog_records", institution="testvenue", target=target) == 0
    assert seen("s360bridge_job_interval_seconds", name="purge") == 3600
    assert seen("s360bridge_engine_database_up") == 1
    assert seen("s360bridge_quarantined_records", **WHERE) == 0


def test_a_process_file_caught_before_its_first_write_does_not_fail_the_scrape(
        tmp_path, monkeypatch, bridge):
    """A process creating its metrics file as ``/metrics`` reads the folder leaves it empty
    for a moment: the scrape goes on without it, and with every other process's figures."""
    from prometheus_client import generate_latest
    from prometheus_client.values import MultiProcessValue

    from s360bridge.core.operator.metrics import registry_for

    folder = tmp_path / "metrics"
    folder.mkdir()
    monkeypatch.setenv(MULTIPROC_ENV, str(folder))
    value = MultiProcessValue(lambda: 4241)("counter", "s360bridge_probe_total",
                                            "s360bridge_probe_total", (), (), "A probe.")
    value.inc(3)
    (folder / "counter_4242.db").touch()  # another process's, just created
    text = generate_latest(registry_for(bridge)).decode()
    assert "s360bridge_probe_total 3.0" in text
    assert "s360bridge_engine_database_up 1.0" in text
