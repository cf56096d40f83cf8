"""Ingest and end-to-end benchmark of the receiver and the worker. Run by hand: `make bench`.

1. ceiling: a bare Flask endpoint (parse JSON, insert raw rows with stdlib sqlite3) under wrk;
2. receiver: the s360bridge receiver under the same wrk and server stack, on each backend
   (SQLite, and PostgreSQL: a private cluster this script starts, or --postgres URL), with
   each count of gunicorn workers of --gunicorn-workers;
3. end to end: on each backend, `s360bridge worker` processes (each count of --drain-workers)
   started right after a fill (no ANALYZE) deliver what the receiver stored into the warehouse
   of the same backend;
4. flow (--flow N, SQLite): receiver and worker together until N records reached the
   warehouse, with the resident memory of every process sampled on the way.

Each phase also records what every process used (CPU time, peak resident memory; PostgreSQL's
processes summed) and how busy the whole machine was.

Needs wrk (Debian: apt-get install wrk), gunicorn (pip install -e '.[gunicorn]') and, for the
PostgreSQL backend, PostgreSQL's server binaries (apt-get install postgresql) and psycopg.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

from backends import Backend
from pgcluster import PrivateCluster, binaries
from processes import (
    BENCH,
    BIN,
    Peak,
    cpu_seconds,
    free_port,
    gunicorn,
    machine_seconds,
    rss_kib,
    start,
    stop,
    tree,
    wrk,
    wrk_load,
)
from run_report import report

RECEIVER = "s360bridge.core.wsgi:app_from_env()"


def commit() -> str:
    """The commit measured, marked when the work tree has changes."""
    def git(*args):
        return subprocess.run(["git", "-C", str(BENCH), *args], capture_output=True,
                              text=True).stdout.strip()
    return git("rev-parse", "--short", "HEAD") + ("+changes" if git("status", "--porcelain",
                                                                      "--", "core", "plugins")
                                                 else "")


def stored(b: Backend) -> int:
    return b.scalar("engine", "SELECT count(*) FROM inbox")


def oldest_age(b: Backend) -> float:
    """Seconds the oldest record still to deliver has waited (0: none)."""
    at = b.scalar("engine", "SELECT received_at FROM inbox WHERE id = "
                            "(SELECT min(id) FROM queue)")
    return 0.0 if at is None else round(time.time() - at, 1)


def server_memory(b: Backend | None):
    """A sampler of PostgreSQL's summed memory while a block runs (nothing for a server not
    on this machine, or SQLite)."""
    return Peak(b.cluster.memory_mib) if b is not None and b.cluster is not None \
        else nullcontext()


def snapshot(b: Backend | None) -> dict:
    """The machine's and PostgreSQL's counters at the start of a phase."""
    snap = {"at": time.monotonic(), "machine": machine_seconds()}
    if b is not None and b.name == "postgresql":
        snap["wal"] = b.wal_bytes()
        snap["cpu"] = b.cpu_seconds()  # None for a server on another machine
    return snap


def used(b: Backend | None, processes: dict[str, list[int]], cpu_before: dict[int, float],
         snap: dict, records: int, memory) -> dict:
    """What each process used since ``snap``, over a phase that handled ``records``."""
    seconds = time.monotonic() - snap["at"]
    out = {name: [{"cpu_s": round(cpu_seconds(p) - cpu_before.get(p, 0.0), 2),
                   "peak_rss_mib": round(rss_kib(p, "VmHWM") / 1024)} for p in pids]
           for name, pids in processes.items()}
    out["seconds"] = round(seconds, 2)
    for name, value in machine_seconds().items():
        out[f"machine_{name}_cores"] = round((value - snap["machine"][name]) / seconds, 2)
    if "wal" in snap:
        pg = out["postgresql"] = {
            "wal_bytes_per_record": round((b.wal_bytes() - snap["wal"]) / max(records, 1))}
        if snap["cpu"] is not None:
            cpu = b.cpu_seconds() - snap["cpu"]
            pg.update({"cpu_s": round(cpu, 2),
                       "cpu_ms_per_1000": round(cpu / max(records, 1) * 1e6, 1),
                       "peak_pss_mib": memory.value.get("pss"),
                       "peak_rss_mib": memory.value.get("rss"),
                       "peak_processes": memory.value.get("processes")})
    return out


def ingest(app: str, env: dict, cwd: Path, log: Path, workers: int, args, run: int,
           b: Backend | None = None) -> dict:
    """wrk for --seconds on ``app`` under ``workers`` gunicorn workers: its figures, and what
    each gunicorn worker, wrk and (for ``b`` on PostgreSQL) the server used meanwhile."""
    port = free_port()
    server = gunicorn(app, port, workers, env, cwd, log)
    pids = server.worker_pids  # the master only forks and watches
    before = {p: cpu_seconds(p) for p in pids}  # the application's import left out
    snap = snapshot(b)
    with server_memory(b) as memory:
        result = wrk(port, args.seconds, args, run)
    result["workers"] = workers
    result["used"] = used(b, {"gunicorn": pids}, before, snap, result["records"], memory)
    stop(server)
    return result


def fill(b: Backend, records: int, args) -> dict:
    """Keep wrk on the receiver until the inbox holds ``records`` records."""
    port = free_port()
    server = gunicorn(RECEIVER, port, args.workers, b.env(), b.folder, b.folder / "fill.log")
    started = moved = time.monotonic()
    load = wrk_load(port, 3600, args, 8)
    n = progress = 0
    while n < records:
        time.sleep(1)
        if (n := stored(b)) > progress:
            progress, moved = n, time.monotonic()
        elif time.monotonic() - moved > 30:
            break
    seconds = time.monotonic() - started
    load.terminate()
    load.wait(30)
    stop(server)
    if n < records:
        sys.exit(f"{b.name}: the receiver stored nothing for 30 s ({n} of {records} "
                 f"records): see {b.folder / 'fill.log'}")
    return {"records": n, "seconds": round(seconds, 1), "records_per_s": round(n / seconds)}


def empty(b: Backend) -> None:
    """No record in the engine's tables (the queue's included: it may hold what the rounds
    stored) nor in the warehouse."""
    truncate = "TRUNCATE" if b.name == "postgresql" else "DELETE FROM"
    for table in ("queue", "attempt", "delivery", "inbox"):
        b.scalar("engine", f"{truncate} {table}")
    if _warehouse_made(b):
        b.scalar("warehouse", f"{truncate} ticket_checks")


def _warehouse_made(b: Backend) -> bool:
    """The worker makes the warehouse's table when it first delivers."""
    return bool(b.scalar("warehouse", "SELECT to_regclass('ticket_checks') IS NOT NULL"
                         if b.name == "postgresql" else
                         "SELECT count(*) FROM sqlite_master WHERE name = 'ticket_checks'"))


def _delivered(b: Backend, key: str) -> bool:
    return _warehouse_made(b) and bool(b.scalar(
        "warehouse", f"SELECT 1 FROM ticket_checks WHERE institution = 'bench' AND "
                     f"check_key = '{key}'"))


def deliver(b: Backend, expected: int, workers: int = 1) -> dict:
    """Start ``workers`` worker processes right after the fill and time them until the newest
    record is in the warehouse and nothing is pending (records are claimed in arrival order,
    so polling the newest key costs the databases nothing); sample the oldest waiting record's
    age once a second on the way."""
    last = b.scalar("engine", "SELECT record_key FROM inbox ORDER BY id DESC LIMIT 1")
    age = oldest_age(b)
    ages = [age]
    snap = snapshot(b)
    logs = [b.folder / f"worker-{workers}-{n}.log" for n in range(workers)]
    with server_memory(b) as memory:
        procs = [start([str(BIN / "s360bridge"), "--log-level", "DEBUG", "worker", "-c",
                        str(b.config), "--no-scheduler"], b.env(), b.folder, log)
                 for log in logs]
        started = sampled = time.monotonic()
        while not _delivered(b, last):
            time.sleep(0.1)
            if any(p.poll() is not None for p in procs):
                for p in procs:
                    stop(p)
                sys.exit(f"{b.name}: a worker exited: see {logs}")
            if time.monotonic() - sampled >= 1:
                ages.append(oldest_age(b))
                sampled = time.monotonic()
        while b.scalar("engine", "SELECT count(*) FROM queue"):
            time.sleep(0.1)
        seconds = time.monotonic() - started
        n = b.scalar("warehouse", "SELECT count(*) FROM ticket_checks")
        usage = used(b, {"workers": [p.pid for p in procs]}, {}, snap, n,
                     memory)  # the workers' CPU counts their start-up (about a second each)
    for p in procs:
        stop(p)
    claims = [float(m) for log in logs for m in re.findall(
        r"claimed \d+ record\(s\) in ([\d.]+) ms", log.read_text())]
    tenth = max(1, len(claims) // 10)
    return {"workers": workers, "records": n, "expected": expected,
            "seconds": round(seconds, 2), "records_per_s": round(n / seconds),
            "oldest_age_at_start_s": age, "oldest_age_max_s": max(ages),
            "claims": len(claims),
            "claim_ms_first_tenth": round(statistics.mean(claims[:tenth]), 2),
            "claim_ms_last_tenth": round(statistics.mean(claims[-tenth:]), 2),
            "used": usage}


def flow(b: Backend, target: int, args) -> dict:
    """Receiver and worker together until ``target`` records are in the warehouse."""
    port = free_port()
    server = gunicorn(RECEIVER, port, args.workers, b.env(), b.folder, b.folder / "flow.log")
    worker = start([str(BIN / "s360bridge"), "--log-level", "WARNING", "worker", "-c",
                    str(b.config), "--no-scheduler"], b.env(), b.folder, b.folder / "flow.log")
    load = wrk_load(port, 3600, args, 7)
    samples, started = [], time.monotonic()
    loaded = delivered = 0
    while delivered < target:
        time.sleep(2)
        if loaded < target:
            loaded = stored(b)
            if loaded >= target:
                load.terminate()
        try:
            delivered = b.scalar("warehouse", "SELECT count(*) FROM ticket_checks")
        except Exception:
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


def median_by_rate(results: list[dict]) -> dict:
    return sorted(results, key=lambda x: x["records_per_s"])[len(results) // 2]


def measure(backs: list[Backend], work: Path, args) -> dict:
    result = {"date": dt.datetime.now().isoformat(timespec="seconds"), "args": vars(args),
              "cpus": os.cpu_count(), "commit": commit(), "backends": {}}
    bare_env = {"BARE_DB": str(work / "bare.db"), "BARE_SYNCHRONOUS": args.synchronous}
    # Ceiling and receivers alternate, round after round, so that a noisy neighbour on a
    # shared machine weighs on all; the ratio quoted is the median of the rounds' ratios.
    rounds = []
    for n in range(args.rounds):
        entry = {}
        for i, g in enumerate(args.gunicorn_workers):
            run = 10 * n + i  # the records' ids of every wrk run apart
            print(f"round {n + 1}, {g} gunicorn worker(s): ceiling (bare Flask + stdlib "
                  "sqlite3) ...", flush=True)
            ceiling = entry[("ceiling", g)] = ingest("bare_app:app", bare_env, BENCH,
                                                     work / "bare.log", g, args, 100 + run)
            for b in backs:
                print(f"round {n + 1}, {g} gunicorn worker(s): receiver (s360bridge on "
                      f"{b.name}) ...", flush=True)
                ours = entry[(b.name, g)] = ingest(RECEIVER, b.env(), b.folder,
                                                   b.folder / "receiver.log", g, args,
                                                   200 + run, b)
                ours["ratio"] = round(ours["records_per_s"] / ceiling["records_per_s"], 3)
        rounds.append(entry)
    counts = args.gunicorn_workers
    result["rounds"] = [{f"{name}, {g}": x for (name, g), x in e.items()} for e in rounds]
    result["ceiling"] = [median_by_rate([e[("ceiling", g)] for e in rounds]) for g in counts]
    for b in backs:
        r = result["backends"][b.name] = {"ingest": [
            {**median_by_rate([e[(b.name, g)] for e in rounds]),
             "ratio_median": statistics.median(e[(b.name, g)]["ratio"] for e in rounds)}
            for g in counts]}
        sent = sum(e[(b.name, g)]["records"] for e in rounds for g in counts)
        r["stored"] = stored(b)
        if r["stored"] < sent:  # more is fine: wrk does not count the requests in flight
            print(f"WARNING: {b.name}: {sent} records answered, only {r['stored']} stored")
        size = args.fill or r["stored"]
        r["drains"] = []
        for k, workers in enumerate(args.drain_workers):
            fill_figures = None
            if k or args.fill:  # every count drains as many, from an empty inbox filled anew
                empty(b)
                print(f"{b.name}: loading the receiver until {size} records are stored ...",
                      flush=True)
                fill_figures = fill(b, size, args)
            print(f"{b.name}: {workers} worker(s) deliver {stored(b)} records ...",
                  flush=True)
            r["drains"].append({**deliver(b, stored(b), workers), "fill": fill_figures})
        if b.name == "postgresql":
            r["settings"] = b.settings()
    if args.flow:
        b = next(b for b in backs if b.name == "sqlite")
        for f in b.folder.glob("*.db*"):
            f.unlink()
        upgrade(b)  # the schema, in the new database
        print(f"flow: {args.flow} records through receiver and worker ...", flush=True)
        result["flow"] = flow(b, args.flow, args)
    return result


def upgrade(b: Backend) -> None:
    subprocess.run([str(BIN / "s360bridge"), "db", "upgrade", "-c", str(b.config)],
                   env={**os.environ, **b.env()}, check=True, capture_output=True)


def counts(text: str) -> list[int]:
    return [int(n) for n in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=15, help="wrk duration per phase")
    parser.add_argument("--workers", type=int, default=2,
                        help="gunicorn sync workers of the fill and the flow, and of the "
                             "ingest phases unless --gunicorn-workers")
    parser.add_argument("--gunicorn-workers", type=counts,
                        help="gunicorn worker counts of the ingest phases, e.g. 1,2,4: each "
                             "count is measured in every round, with its own ceiling "
                             "(default: --workers)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections")
    parser.add_argument("--synchronous", default="FULL", help="SQLite synchronous, both sides")
    parser.add_argument("--rounds", type=int, default=3, help="ceiling/receiver alternations")
    parser.add_argument("--fill", type=int, default=0,
                        help="before each drain, empty the inbox and load the receiver until "
                             "it holds at least N records (a round stores ~35,000 records a "
                             "second of --seconds on SQLite); without it, the first drain "
                             "takes what the rounds stored")
    parser.add_argument("--drain-workers", default="1", type=counts,
                        help="worker processes for the drain; several counts (1,2,4) each "
                             "drain the same number of records, filled again from empty")
    parser.add_argument("--backends", default=None,
                        help="sqlite, postgresql or both, comma-separated (default: both when "
                             "PostgreSQL is installed or --postgres is given)")
    parser.add_argument("--postgres", metavar="URL",
                        help="a PostgreSQL database (postgresql+psycopg://…) to use instead of "
                             "a private cluster; two schemas s360bench_* are made in it")
    parser.add_argument("--pg-setting", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting of the private cluster (repeatable), e.g. "
                             "shared_buffers=512MB; the default is PostgreSQL's own")
    parser.add_argument("--flow", type=int, default=0, help="also run N records through")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work folder (databases and logs, ~1 GB per million)")
    args = parser.parse_args()
    args.gunicorn_workers = args.gunicorn_workers or [args.workers]
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    if not (BIN / "gunicorn").exists():
        sys.exit("gunicorn is needed: pip install -e '.[gunicorn]'")
    names = (args.backends or ("sqlite,postgresql" if binaries() or args.postgres
                               else "sqlite")).split(",")
    work = Path(tempfile.mkdtemp(prefix="s360bench-"))
    cluster = None
    if "postgresql" in names and not args.postgres:
        cluster = PrivateCluster(dict(s.split("=", 1) for s in args.pg_setting)).__enter__()
    try:
        backs = [Backend.sqlite(work) if n == "sqlite" else
                 Backend.postgresql(work, cluster, args.postgres) for n in names]
        for b in backs:
            b.write_config(args.synchronous)
            upgrade(b)
        result = measure(backs, work, args)
    finally:
        if cluster is not None:
            cluster.__exit__(None, None, None)
    out = BENCH / "results"
    out.mkdir(exist_ok=True)
    path = out / f"ingest-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(result, indent=2))
    lost = report(result)
    if args.keep:
        print(f"written to {path} (work folder kept: {work})")
    else:
        shutil.rmtree(work)
        print(f"written to {path}")
    if lost:
        sys.exit(1)


if __name__ == "__main__":
    main()
