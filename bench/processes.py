"""The processes of a benchmark run: servers under gunicorn, wrk as the load, and what the
kernel says of their memory and CPU time."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from backends import API_KEY

BENCH = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def reexec_with(script: str, source: Path, marker: str) -> None:
    """Run ``script`` again with ``source``'s packages (its core/ and plugins/) first on the
    path, and ``marker`` naming ``source`` in the environment, then exit with its code: a
    change is measured before and after with the same harness. The processes it starts
    inherit the path."""
    with tempfile.TemporaryDirectory(prefix="s360bench-source-") as folder:
        pkg = Path(folder) / "s360bridge"
        pkg.mkdir()
        (pkg / "__init__.py").write_text("")
        for name in ("core", "plugins"):
            (pkg / name).symlink_to(source.resolve() / name)
        argv = [a for a in sys.argv[1:] if a not in ("--source", str(source))]
        env = {**os.environ, "PYTHONPATH": folder, marker: str(source)}
        code = subprocess.call([sys.executable, script, *argv], env=env)
    sys.exit(code)


def commit_of(source: str) -> str:
    """The short commit of ``source``: a checkout's folder (``--source``), or this checkout."""
    folder = source if source != "this checkout" else "."
    return subprocess.run(["git", "-C", folder, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()


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
    """gunicorn serving ``app``, returned once each of its workers has loaded it; their pids
    are its ``worker_pids``."""
    ready = Path(tempfile.mkdtemp(prefix="s360bench-ready-"))
    cmd = [str(BIN / "gunicorn"), "-c", str(BENCH / "gunicorn_ready.py"), "-w", str(workers),
           "-b", f"127.0.0.1:{port}", "--backlog", "2048", "--log-level", "warning", app]
    proc = start(cmd, {**env, "BENCH_READY": str(ready)}, cwd, log)
    wait_ready(f"http://127.0.0.1:{port}/s360/ticketchecks/bench", proc)
    deadline = time.monotonic() + 60
    while len(pids := list(ready.iterdir())) < workers:
        if time.monotonic() > deadline or proc.poll() is not None:
            sys.exit(f"gunicorn: {len(pids)} of {workers} workers ready after 60 s; see {log}")
        time.sleep(0.05)
    proc.worker_pids = [int(p.name) for p in pids]
    shutil.rmtree(ready)
    return proc


def wrk_load(port: int, seconds: float, args, run: int) -> subprocess.Popen:
    return subprocess.Popen(
        ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{int(seconds)}s",
         "--latency", "-s", str(BENCH / "post_checks.lua"),
         f"http://127.0.0.1:{port}/s360/ticketchecks/bench"],
        env={**os.environ, "BENCH_RUN": str(run), "BENCH_API_KEY": API_KEY},
        stdout=subprocess.PIPE, text=True)


def wrk(port: int, seconds: float, args, run: int) -> dict:
    load = wrk_load(port, seconds, args, run)
    out = load.stdout.read()
    _, status, usage = os.wait4(load.pid, 0)  # its own CPU time, from the kernel
    load.returncode = os.waitstatus_to_exitcode(status)
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
            "socket_errors": errors.group(1) if errors else None,
            "wrk_cpu_s": round(usage.ru_utime + usage.ru_stime, 2)}


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


def cpu_seconds(pid: int) -> float:
    """User and system time of a running process so far (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_seconds() -> dict[str, float]:
    """Time the whole machine's cores have spent since boot, all processes (ours and the
    neighbours'): ``busy`` running, ``iowait`` idle with a disk write or read outstanding
    (/proc/stat's first line)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
    tick = os.sysconf("SC_CLK_TCK")
    return {"busy": (sum(fields) - fields[3] - fields[4]) / tick, "iowait": fields[4] / tick}


class Peak:
    """``with Peak(read) as p:`` calls ``read()`` (a dict of numbers) every ``every`` seconds
    in a thread while the block runs; ``p.value`` holds the highest of each number seen."""

    def __init__(self, read, every: float = 0.5):
        self.read, self.every, self.value = read, every, {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            for k, v in self.read().items():
                self.value[k] = max(v, self.value.get(k, v))
            if self._done.wait(self.every):
                return

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
