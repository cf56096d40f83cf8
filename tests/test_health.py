"""``/health/live`` and ``/health/ready``: ready means the engine database commits, which a
read does not show. SQLite files made immutable (``chattr +i``, which stops root too) make a
real receiver not ready, with the reason, and ready again once they are writable."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import event

from s360bridge.core.pipeline.health import Readiness

from .conftest import API_KEY, base_config, bridge_of, write_config
from .helpers.processes import checks, free_port, start, wait_until


def ready(url: str) -> requests.Response:
    return requests.get(f"{url}/health/ready", timeout=10)


def ready_status(url: str) -> int | None:
    try:
        return ready(url).status_code
    except requests.ConnectionError:  # not listening yet
        return None


def chattr(flag: str, files: list[Path]) -> subprocess.CompletedProcess:
    return subprocess.run(["chattr", flag, *map(str, files)], capture_output=True, text=True)


def test_ready_says_why_while_sqlite_cannot_commit(tmp_path, secrets_env):
    cfg = base_config(tmp_path)
    cfg["engine"]["ready_within_seconds"] = 1
    config = write_config(tmp_path, cfg)
    bridge_of(config).close()  # the schema, as `db upgrade` makes it
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(["serve", "-c", str(config), "--port", str(port)], tmp_path / "serve.log")

    def post(first_id: int) -> int:
        return requests.post(f"{url}/s360/ticketchecks/testvenue", json=checks(first_id, 5),
                             headers={"x-api-key": API_KEY}, timeout=30).status_code

    try:
        wait_until(lambda: ready_status(url) == 200, 30, "ready", proc)
        assert post(1) == 200
        files = [p for p in tmp_path.glob("engine.db*") if p.is_file()]
        frozen = chattr("+i", files)
        if frozen.returncode != 0:
            pytest.skip(f"chattr +i is not supported here: {frozen.stderr.strip()}")
        try:
            wait_until(lambda: ready(url).status_code == 503, 10, "not ready", proc)
            reason = ready(url).json()["reason"]
            print(f"immutable engine database: {reason}")
            assert reason.startswith("the engine database cannot commit: ")
            assert post(6) == 503
            assert requests.get(f"{url}/health/live", timeout=5).status_code == 200
            assert requests.get(f"{url}/health", timeout=10).status_code == 503  # ready's alias
        finally:
            chattr("-i", files)
        wait_until(lambda: ready(url).status_code == 200, 10, "ready again", proc)
        assert post(6) == 200
        assert proc.poll() is None
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0


def test_one_heartbeat_per_interval_whatever_the_polling(tmp_path, secrets_env):
    """Idle, sixteen threads polling readiness thousands of times a second write one heartbeat
    per interval."""
    bridge = bridge_of(write_config(tmp_path, base_config(tmp_path)))
    beats = []
    event.listen(bridge.engine, "before_cursor_execute",
                 lambda *args: beats.append(1) if "heartbeat" in args[2] else None)
    readiness = Readiness(bridge.engine, within=0.5)
    answers = []
    until = time.monotonic() + 1.2

    def poll():
        while time.monotonic() < until:
            answers.append(readiness.problem())
            time.sleep(0.001)  # a thousand polls a second per thread, and the GIL to spare

    threads = [threading.Thread(target=poll) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"{len(answers)} polls, {len(beats)} heartbeats")
    assert len(answers) > 1000
    assert 2 <= len(beats) <= 4  # at 0, 0.5 and 1.0 s (one more if a write straddles)
    assert set(answers) <= {None, "no commit within 0.5 s, a heartbeat is under way"}
    assert answers.count(None) > len(answers) / 2
    bridge.close()
