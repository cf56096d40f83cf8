"""Ingest and end-to-end benchmark of the receiver (issue 2). Run by hand: `make bench`.

1. ceiling: a bare Flask endpoint (parse JSON, insert raw rows with stdlib sqlite3) under wrk;
2. receiver: the s360bridge receiver under the same wrk, server stack and SQLite durability;
3. end to end: one `s360bridge worker` delivers what the receiver stored into the warehouse;
4. flow (--flow N): receiver and worker together until N records reached the warehouse, with
   the resident memory of every process sampled on the way.

Needs wrk (Debian: apt-get install wrk) and gunicorn (pip install -e '.[gunicorn]').
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import yaml

BENCH = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
API_KEY = "bench-key"


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


def wrk(url: str, seconds: float, threads: int, conns: int, run: int) -> dict:
    out = subprocess.run(["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{int(seconds)}s",
                          "--latency", "-s", str(BENCH / "post_checks.lua"), url],
                         env={**os.environ, "BENCH_RUN": str(run), "BENCH_API_KEY": API_KEY},
                         capture_output=True, text=True, check=True).stdout
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


def count(db: Path, sql: str) -> int:
    with sqlite3.connect(db, timeout=30) as conn:
        return conn.execute(sql).fetchone()[0]


def commit() -> str:
    """The commit measured, marked when the work tree has changes."""
    def git(*args):
        return subprocess.run(["git", "-C", str(BENCH), *args], capture_output=True,
                              text=True).stdout.strip()
    return git("rev-parse", "--short", "HEAD") + ("+changes" if git("status", "--porcelain",
                                                                      "--", "core", "plugins")
                                                 else "")


def fill(cfg: Path, work: Path, env: dict, records: int, args) -> int:
    """Keep wrk on the receiver until the inbox holds ``records`` records."""
    port = free_port()
    server = gunicorn("s360bridge.core.wsgi:app_from_env()", port, args.workers, env, work,
                      work / "fill-server.log")
    load = subprocess.Popen(["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d",
                             "3600s", "-s", str(BENCH / "post_checks.lua"),
                             f"http://127.0.0.1:{port}/s360/ticketchecks/bench"],
                            env={**os.environ, "BENCH_RUN": "8", "BENCH_API_KEY": API_KEY},
                            stdout=subprocess.DEVNULL)
    stored = count(work / "engine.db", "SELECT count(*) FROM inbox")
    while stored < records:
        time.sleep(1)
        stored = count(work / "engine.db", "SELECT count(*) FROM inbox")
        print(f"  fill: {stored} records stored", flush=True)
    load.terminate()
    load.wait(30)
    stop(server)
    return count(work / "engine.db", "SELECT count(*) FROM inbox")


def write_config(work: Path, synchronous: str) -> Path:
    cfg = {"institution": "bench", "timezone": "Europe/Zurich",
           "targets": {"datx": {"type": "sql", "url": f"sqlite:///{work}/warehouse.db"}},
           "streams": {"ticketchecks": {"auth": {"type": "api_key", "header": "x-api-key",
                                                 "key": {"$env": "BENCH_API_KEY"}},
                                        "targets": ["datx"]}},
           "engine": {"database_url": f"sqlite:///{work}/engine.db",
                      "sqlite_synchronous": synchronous}}
    path = work / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def deliver(cfg: Path, work: Path, env: dict, expected: int, label: str) -> dict:
    """Start one worker and time it until ``expected`` records are in the warehouse."""
    worker = start([str(BIN / "s360bridge"), "--log-level", "WARNING", "worker", "-c",
                    str(cfg), "--no-scheduler"], env, work, work / f"{label}.log")
    started = time.monotonic()
    while count(work / "engine.db", "SELECT count(*) FROM inbox WHERE state = 'pending'"):
        time.sleep(0.2)
    seconds = time.monotonic() - started
    peak = rss_kib(worker.pid, "VmHWM")
    stop(worker)
    stored = count(work / "warehouse.db", "SELECT count(*) FROM ticket_checks")
    return {"records": stored, "expected": expected, "seconds": round(seconds, 2),
            "records_per_s": round(stored / seconds), "worker_peak_rss_mib": round(peak / 1024)}


def flow(cfg: Path, work: Path, env: dict, target: int, args) -> dict:
    """Receiver and worker together until ``target`` records are in the warehouse."""
    port = free_port()
    server = gunicorn("s360bridge.core.wsgi:app_from_env()", port, args.workers, env, work,
                      work / "flow-server.log")
    worker = start([str(BIN / "s360bridge"), "--log-level", "WARNING", "worker", "-c",
                    str(cfg), "--no-scheduler"], env, work, work / "flow-worker.log")
    load = subprocess.Popen(["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d",
                             "3600s", "-s", str(BENCH / "post_checks.lua"),
                             f"http://127.0.0.1:{port}/s360/ticketchecks/bench"],
                            env={**os.environ, "BENCH_RUN": "7", "BENCH_API_KEY": API_KEY},
                            stdout=subprocess.DEVNULL)
    samples, started = [], time.monotonic()
    loaded = delivered = 0
    while delivered < target:
        time.sleep(2)
        if loaded < target:
            loaded = count(work / "engine.db", "SELECT count(*) FROM inbox")
            if loaded >= target:
                load.terminate()
        try:
            delivered = count(work / "warehouse.db", "SELECT count(*) FROM ticket_checks")
        except sqlite3.OperationalError:
            delivered = 0
        samples.append({"t": round(time.monotonic() - started), "delivered": delivered,
                        "receiver_rss_mib": round(sum(map(rss_kib, tree(server.pid))) / 1024),
                        "worker_rss_mib": round(rss_kib(worker.pid) / 1024)})
        print(f"  flow: {samples[-1]}", flush=True)
    load.wait(30)
    stop(worker)
    stop(server)
    seconds = time.monotonic() - started
    return {"records": delivered, "seconds": round(seconds), "records_per_s":
            round(delivered / seconds), "samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=15, help="wrk duration per phase")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections")
    parser.add_argument("--synchronous", default="FULL", help="SQLite synchronous, both sides")
    parser.add_argument("--flow", type=int, default=0, help="also run N records through")
    parser.add_argument("--fill", type=int, default=0,
                        help="before the end-to-end drain, keep loading the receiver until the "
                             "inbox holds at least N records (the rounds alone store ~35,000 "
                             "records a second of --seconds)")
    parser.add_argument("--rounds", type=int, default=3, help="ceiling/receiver alternations")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work folder (databases and logs, ~1 GB per million)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    if not (BIN / "gunicorn").exists():
        sys.exit("gunicorn is needed: pip install -e '.[gunicorn]'")
    work = Path(tempfile.mkdtemp(prefix="s360bench-"))
    env = {"BENCH_API_KEY": API_KEY, "S360BRIDGE_CONFIG": str(write_config(work, args.synchronous)),
           "BARE_DB": str(work / "bare.db"), "BARE_SYNCHRONOUS": args.synchronous}
    cfg = Path(env["S360BRIDGE_CONFIG"])
    result = {"date": dt.datetime.now().isoformat(timespec="seconds"), "args": vars(args),
              "cpus": os.cpu_count(), "commit": commit()}

    # Ceiling and receiver alternate, round after round, so that a noisy neighbour on a shared
    # machine weighs on both; the ratio quoted is the median of the rounds' ratios.
    rounds = []
    for n in range(args.rounds):
        port = free_port()
        bare = gunicorn("bare_app:app", port, args.workers, env, BENCH, work / "bare.log")
        print(f"round {n + 1}: ceiling (bare Flask + stdlib sqlite3) ...", flush=True)
        ceiling = wrk(f"http://127.0.0.1:{port}/s360/ticketchecks/bench", args.seconds,
                      args.threads, args.connections, 10 + n)
        stop(bare)
        port = free_port()
        receiver = gunicorn("s360bridge.core.wsgi:app_from_env()", port, args.workers, env,
                            work, work / "receiver.log")
        print(f"round {n + 1}: receiver (s360bridge) ...", flush=True)
        ours = wrk(f"http://127.0.0.1:{port}/s360/ticketchecks/bench", args.seconds,
                   args.threads, args.connections, 20 + n)
        ours["server_rss_mib"] = round(sum(map(rss_kib, tree(receiver.pid))) / 1024)
        stop(receiver)
        rounds.append({"ceiling": ceiling, "receiver": ours,
                       "ratio": round(ours["records_per_s"] / ceiling["records_per_s"], 3)})
    result["rounds"] = rounds
    result["ceiling"] = sorted((r["ceiling"] for r in rounds),
                               key=lambda x: x["records_per_s"])[len(rounds) // 2]
    result["receiver"] = sorted((r["receiver"] for r in rounds),
                                key=lambda x: x["records_per_s"])[len(rounds) // 2]
    stored = count(work / "engine.db", "SELECT count(*) FROM inbox")
    sent = sum(r["receiver"]["records"] for r in rounds)
    result["receiver"]["stored"] = stored
    result["ingest_ratio"] = statistics.median(r["ratio"] for r in rounds)
    if stored < sent:  # more is fine: wrk does not count the requests in flight at its end
        print(f"WARNING: {sent} records answered, only {stored} stored")

    if stored < args.fill:
        print(f"fill: loading the receiver until {args.fill} records are stored ...",
              flush=True)
        stored = fill(cfg, work, env, args.fill, args)
    print(f"end to end: delivering {stored} records ...", flush=True)
    result["end_to_end"] = deliver(cfg, work, env, stored, "e2e")

    if args.flow:
        for f in ("engine.db", "engine.db-wal", "engine.db-shm", "warehouse.db",
                  "warehouse.db-wal", "warehouse.db-shm"):
            (work / f).unlink(missing_ok=True)
        print(f"flow: {args.flow} records through receiver and worker ...", flush=True)
        result["flow"] = flow(cfg, work, env, args.flow, args)

    out = BENCH / "results"
    out.mkdir(exist_ok=True)
    path = out / f"ingest-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(result, indent=2))
    c, r, e = result["ceiling"], result["receiver"], result["end_to_end"]
    print(f"\ncommit {result['commit']}, {result['date']}, {result['cpus']} cores; every "
          f"figure is beside the ceiling measured in this run ({c['records_per_s']} records/s)")
    print(f"ceiling   {c['records_per_s']:>8} records/s  p50 {c['p50_ms']} ms  "
          f"p99 {c['p99_ms']} ms  non-2xx {c['non_2xx']}")
    print(f"receiver  {r['records_per_s']:>8} records/s  p50 {r['p50_ms']} ms  "
          f"p99 {r['p99_ms']} ms  non-2xx {r['non_2xx']}  stored {r['stored']}")
    print(f"ratio     {result['ingest_ratio']}  (median of rounds "
          f"{[r['ratio'] for r in result['rounds']]}; goal >= 0.6)")
    print(f"end2end   {e['records_per_s']:>8} records/s  ({e['records']} records in "
          f"{e['seconds']} s, worker peak RSS {e['worker_peak_rss_mib']} MiB; "
          f"{e['records_per_s'] / c['records_per_s']:.2f} of the ceiling; goal >= 20,000)")
    if args.flow:
        f = result["flow"]
        print(f"flow      {f['records']} records in {f['seconds']} s; RSS first/last sample: "
              f"{f['samples'][0]} / {f['samples'][-1]}")
    lost = e["expected"] - e["records"]
    if lost:
        print(f"ERROR: {lost} of {e['expected']} stored records never reached the warehouse")
    if args.keep:
        print(f"written to {path} (work folder kept: {work})")
    else:
        shutil.rmtree(work)
        print(f"written to {path}")
    if lost:
        sys.exit(1)


if __name__ == "__main__":
    main()
