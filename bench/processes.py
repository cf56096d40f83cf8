"""The processes of a benchmark run: servers under gunicorn, wrk as the load, and what the
kernel says of their memory."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
from backends import API_KEY

BENCH = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env: dict, cwd: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, env={**os.environ, **env}, cwd=cwd, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(60)


def wait_ready(url: str, proc: subprocess.Popen) -> None:
    for _ in range(600):
        if proc.poll() is not None:
            sys.exit(f"server exited with {proc.returncode}; see the log in the work folder")
        try:
            requests.post(url, data=b"", timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.05)
    sys.exit(f"{url} not ready after 30 s")


def gunicorn(app: str, port: int, workers: int, env: dict, cwd: Path, log: Path):
    cmd = [str(BIN / "gunicorn"), "-w", str(workers), "-b", f"127.0.0.1:{port}",
           "--backlog", "2048", "--log-level", "warning", app]
    proc = start(cmd, env, cwd, log)
    wait_ready(f"http://127.0.0.1:{port}/s360/ticketchecks/bench", proc)
    return proc


def wrk_load(port: int, seconds: float, args, run: int) -> subprocess.Popen:
    return subprocess.Popen(
        ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{int(seconds)}s",
         "--latency", "-s", str(BENCH / "post_checks.lua"),
         f"http://127.0.0.1:{port}/s360/ticketchecks/bench"],
        env={**os.environ, "BENCH_RUN": str(run), "BENCH_API_KEY": API_KEY},
        stdout=subprocess.PIPE, text=True)


def wrk(port: int, seconds: float, args, run: int) -> dict:
    out = wrk_load(port, seconds, args, run).communicate()[0]
    (BENCH / "results").mkdir(exist_ok=True)
    (BENCH / "results" / f"wrk-run{run}.txt").write_text(out)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"records_per_s": round(rps * 50), "requests": total, "records": total * 50,
            "p50_ms": _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),
            "p99_ms": _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),
            "non_2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": errors.group(1) if errors else None}


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)([a-z]+)", text).groups()
    return round(float(value) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit], 2)


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree(pid: int) -> list[int]:
    """pid and its children (gunicorn's workers)."""
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True).stdout
    return [pid, *map(int, out.split())]
