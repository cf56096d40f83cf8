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
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from backends import Backend
from backlog import RECEIVER, deliver, empty, fill, flow, stored
from pgcluster import PrivateCluster, binaries
from phase_usage import server_memory, snapshot, used
from processes import (
    BENCH,
    BIN,
    cpu_seconds,
    free_port,
    gunicorn,
    stop,
    wrk,
)
from run_report import report


def commit() -> str:
    """The commit measured, marked when the work tree has changes."""
    def git(*args):
        return subprocess.run(["git", "-C", str(BENCH), *args], capture_output=True,
                              text=True).stdout.strip()
    return git("rev-parse", "--short", "HEAD") + ("+changes" if git("status", "--porcelain",
                                                                      "--", "core", "plugins")
                                                 else "")


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
