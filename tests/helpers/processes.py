"""Real processes for tests: the installed command, free ports, waiting on a condition."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from ..conftest import SECRETS_ENV

S360BRIDGE = shutil.which("s360bridge") or str(Path(sys.executable).with_name("s360bridge"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


STARTED: list[subprocess.Popen] = []  # killed, with their groups, when the test ends


def start(args: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    """``s360bridge args`` logging to ``log``, with the test secrets and ``env`` set."""
    env = {**os.environ, **SECRETS_ENV, **(env or {})}
    env.pop("S360BRIDGE_DATABASE_URL", None)
    proc = subprocess.Popen([S360BRIDGE, "--log-level", "DEBUG", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=log.open("ab"),
                            start_new_session=True)  # its own process group
    STARTED.append(proc)
    return proc


def kill_leftovers() -> None:
    """What a test started and left running (it failed before its own stop): killed."""
    while STARTED:
        proc = STARTED.pop()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        proc.wait(30)


def wait_until(condition, timeout: float, what: str, proc: subprocess.Popen | None = None):
    """Poll ``condition`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} while waiting: {what}")
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def stop(proc: subprocess.Popen) -> int:
    """SIGTERM to the process group; answers the exit status."""
    os.killpg(proc.pid, signal.SIGTERM)
    return proc.wait(30)


def healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def checks(first_id: int, n: int) -> list[dict]:
    return [{"ticket_check_id": first_id + i, "barcode": f"0{first_id + i}",
             "access_time": "2024-03-14 19:21:07", "check_flow": "IN", "result": "OK"}
            for i in range(n)]
