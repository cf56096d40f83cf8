"""Ingest and end-to-end benchmark of the receiver and the worker. Run by hand: `make bench`.

1. ceiling: a bare Flask endpoint (parse JSON, insert raw rows with stdlib sqlite3) under wrk;
2. receiver: the s360bridge receiver under the same wrk and server stack, on each backend
   (SQLite, and PostgreSQL: a private cluster this script starts, or --postgres URL);
3. end to end: on each backend, one `s360bridge worker` started right after the fill (no
   ANALYZE) delivers what the receiver stored into the warehouse of the same backend;
4. flow (--flow N, SQLite): receiver and worker together until N records reached the
   warehouse, with the resident memory of every process sampled on the way.

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
from pathlib import Path

from backends import Backend
from pgcluster import PrivateCluster, binaries
from processes import BENCH, BIN, free_port, gunicorn, rss_kib, start, stop, tree, wrk, wrk_load

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


def fill(b: Backend, records: int, args) -> int:
    """Keep wrk on the receiver until the inbox holds ``records`` records."""
    port = free_port()
    server = gunicorn(RECEIVER, port, args.workers, b.env(), b.folder, b.folder / "fill.log")
    load = wrk_load(port, 3600, args, 8)
    while stored(b) < records:
        time.sleep(1)
    load.terminate()
    load.wait(30)
    stop(server)
    return stored(b)


def empty(b: Backend) -> None:
    for which, table in (("engine", "delivery"), ("engine", "inbox"),
                         ("warehouse", "ticket_checks")):
        b.scalar(which, f"{'TRUNCATE' if b.name == 'postgresql' else 'DELETE FROM'} {table}")


def _delivered(b: Backend, key: str) -> bool:
    try:
        return bool(b.scalar("warehouse", "SELECT 1 FROM ticket_checks WHERE institution = "
                                          f"'bench' AND check_key = '{key}'"))
    except Exception:  # the worker has not created the table yet
        return False


def deliver(b: Backend, expected: int, workers: int = 1) -> dict:
    """Start ``workers`` worker processes right after the fill and time them until the newest
    record is in the warehouse and nothing is pending (records are claimed in arrival order,
    so polling the newest key costs the databases nothing)."""
    last = b.scalar("engine", "SELECT record_key FROM inbox ORDER BY id DESC LIMIT 1")
    cpu = b.cpu_seconds()
    logs = [b.folder / f"worker-{workers}-{n}.log" for n in range(workers)]
    procs = [start([str(BIN / "s360bridge"), "--log-level", "DEBUG", "worker", "-c",
                    str(b.config), "--no-scheduler"], b.env(), b.folder, log) for log in logs]
    started = time.monotonic()
    while not _delivered(b, last):
        time.sleep(0.1)
    while b.scalar("engine", "SELECT count(*) FROM queue"):
        time.sleep(0.1)
    seconds = time.monotonic() - started
    cpu = None if cpu is None else b.cpu_seconds() - cpu
    peak = max(rss_kib(p.pid, "VmHWM") for p in procs)
    for p in procs:
        stop(p)
    n = b.scalar("warehouse", "SELECT count(*) FROM ticket_checks")
    claims = [float(m) for log in logs for m in re.findall(
        r"claimed \d+ record\(s\) in ([\d.]+) ms", log.read_text())]
    tenth = max(1, len(claims) // 10)
    return {"workers": workers, "records": n, "expected": expected,
            "seconds": round(seconds, 2),
            "records_per_s": round(n / seconds), "worker_peak_rss_mib": round(peak / 1024),
            "claims": len(claims),
            "claim_ms_first_tenth": round(statistics.mean(claims[:tenth]), 2),
            "claim_ms_last_tenth": round(statistics.mean(claims[-tenth:]), 2),
            "server_cpu_s_per_1000": None if cpu is None else round(cpu / n * 1000, 4)}


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
        port = free_port()
        bare = gunicorn("bare_app:app", port, args.workers, bare_env, BENCH, work / "bare.log")
        print(f"round {n + 1}: ceiling (bare Flask + stdlib sqlite3) ...", flush=True)
        entry = {"ceiling": wrk(port, args.seconds, args, 10 + n)}
        stop(bare)
        for b in backs:
            port = free_port()
            server = gunicorn(RECEIVER, port, args.workers, b.env(), b.folder,
                              b.folder / "receiver.log")
            print(f"round {n + 1}: receiver (s360bridge on {b.name}) ...", flush=True)
            ours = entry[b.name] = wrk(port, args.seconds, args, 20 + n)
            ours["server_rss_mib"] = round(sum(map(rss_kib, tree(server.pid))) / 1024)
            ours["ratio"] = round(ours["records_per_s"] / entry["ceiling"]["records_per_s"], 3)
            stop(server)
        rounds.append(entry)
    result["rounds"] = rounds
    result["ceiling"] = median_by_rate([r["ceiling"] for r in rounds])
    for b in backs:
        r = result["backends"][b.name] = {
            "receiver": median_by_rate([x[b.name] for x in rounds]),
            "ingest_ratio": statistics.median(x[b.name]["ratio"] for x in rounds)}
        sent = sum(x[b.name]["records"] for x in rounds)
        r["stored"] = stored(b)
        if r["stored"] < sent:  # more is fine: wrk does not count the requests in flight
            print(f"WARNING: {b.name}: {sent} records answered, only {r['stored']} stored")
        if r["stored"] < args.fill:
            print(f"{b.name}: loading the receiver until {args.fill} records are stored ...",
                  flush=True)
            r["stored"] = fill(b, args.fill, args)
        r["drains"] = []
        for k, workers in enumerate(args.drain_workers):
            if k:  # the same number of records again, from an empty inbox and warehouse
                empty(b)
                fill(b, r["stored"], args)
            print(f"{b.name}: {workers} worker(s) deliver {r['stored']} records ...",
                  flush=True)
            r["drains"].append(deliver(b, stored(b), workers))
        r["end_to_end"] = r["drains"][0]
        if b.cluster is not None:
            r["settings"] = b.cluster.settings_in_force()
    if args.flow:
        b = next(b for b in backs if b.name == "sqlite")
        for f in b.folder.glob("*.db*"):
            f.unlink()
        print(f"flow: {args.flow} records through receiver and worker ...", flush=True)
        result["flow"] = flow(b, args.flow, args)
    return result


def report(result: dict) -> int:
    """Print the figures; answer how many stored records never reached a warehouse."""
    c = result["ceiling"]
    print(f"\ncommit {result['commit']}, {result['date']}, {result['cpus']} cores; every "
          f"figure is beside the ceiling measured in this run ({c['records_per_s']} records/s)")
    print(f"ceiling   {c['records_per_s']:>8} records/s  p50 {c['p50_ms']} ms  "
          f"p99 {c['p99_ms']} ms  non-2xx {c['non_2xx']}")
    lost = 0
    for name, r in result["backends"].items():
        i = r["receiver"]
        print(f"{name}:\n  receiver {i['records_per_s']:>8} records/s  p50 {i['p50_ms']} ms  "
              f"p99 {i['p99_ms']} ms  non-2xx {i['non_2xx']}; ratio to the ceiling "
              f"{r['ingest_ratio']} (median of rounds; goal >= 0.6 on sqlite)")
        for e in r["drains"]:
            cpu = e["server_cpu_s_per_1000"]
            print(f"  drain    {e['records_per_s']:>8} records/s  ({e['records']} records in "
                  f"{e['seconds']} s, {e['workers']} worker(s), peak RSS "
                  f"{e['worker_peak_rss_mib']} MiB; "
                  f"{e['records_per_s'] / c['records_per_s']:.2f} of the ceiling)")
            print(f"  claims   {e['claims']}: mean {e['claim_ms_first_tenth']} ms over the "
                  f"first tenth, {e['claim_ms_last_tenth']} ms over the last"
                  + (f"; server CPU {cpu * 1000:.1f} ms per 1,000 records" if cpu else ""))
            lost += e["expected"] - e["records"]
        if "settings" in r:
            print(f"  settings {r['settings']}")
    if {"sqlite", "postgresql"} <= result["backends"].keys():
        s, p = result["backends"]["sqlite"], result["backends"]["postgresql"]
        print(f"postgresql / sqlite: ingest {p['receiver']['records_per_s'] / s['receiver']['records_per_s']:.2f}, "  # noqa: E501
              f"drain {p['end_to_end']['records_per_s'] / s['end_to_end']['records_per_s']:.2f}"
              " (goal >= 0.8 for both)")
    if "flow" in result:
        f = result["flow"]
        print(f"flow      {f['records']} records in {f['seconds']} s; RSS first/last sample: "
              f"{f['samples'][0]} / {f['samples'][-1]}")
    if lost:
        print(f"ERROR: {lost} stored records never reached the warehouse")
    return lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=15, help="wrk duration per phase")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections")
    parser.add_argument("--synchronous", default="FULL", help="SQLite synchronous, both sides")
    parser.add_argument("--rounds", type=int, default=3, help="ceiling/receiver alternations")
    parser.add_argument("--fill", type=int, default=0,
                        help="before the drain, keep loading the receiver until the inbox "
                             "holds at least N records (a round stores ~35,000 records a "
                             "second of --seconds on SQLite)")
    parser.add_argument("--drain-workers", default="1", type=lambda t: [int(n) for n in
                                                                         t.split(",")],
                        help="worker processes for the drain; several counts (1,2) each "
                             "drain the same number of records, filled again from empty")
    parser.add_argument("--backends", default=None,
                        help="sqlite, postgresql or both, comma-separated (default: both when "
                             "PostgreSQL is installed or --postgres is given)")
    parser.add_argument("--postgres", metavar="URL",
                        help="a PostgreSQL database (postgresql+psycopg://…) to use instead of "
                             "a private cluster; two schemas s360bench_* are made in it")
    parser.add_argument("--flow", type=int, default=0, help="also run N records through")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work folder (databases and logs, ~1 GB per million)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    if not (BIN / "gunicorn").exists():
        sys.exit("gunicorn is needed: pip install -e '.[gunicorn]'")
    names = (args.backends or ("sqlite,postgresql" if binaries() or args.postgres
                               else "sqlite")).split(",")
    work = Path(tempfile.mkdtemp(prefix="s360bench-"))
    cluster = None
    if "postgresql" in names and not args.postgres:
        cluster = PrivateCluster().__enter__()
    try:
        backs = [Backend.sqlite(work) if n == "sqlite" else
                 Backend.postgresql(work, cluster, args.postgres) for n in names]
        for b in backs:
            b.write_config(args.synchronous)
            subprocess.run([str(BIN / "s360bridge"), "db", "upgrade", "-c", str(b.config)],
                           env={**os.environ, **b.env()}, check=True, capture_output=True)
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
