"""Retention at scale: the hourly purge of a day of a large venue's history, beside a steady
ingest, on SQLite and PostgreSQL side by side.

The engine database is filled by SQL (bench/retention_rows.py: INSERT … SELECT over a series, a
recursive CTE on SQLite, generate_series on PostgreSQL) with ``--rows`` inbox rows spread over
the retention period and one day more, so that a day's worth (an eighth at the default 7 days)
is older than the horizon: ticket checks, contacts and orders of realistic sizes, keys in no
order of arrival, most delivered (one attempt row each), some superseded, and what must stay
however old: dead letters, records held for a paused target, records queued for a retry; a
quarantine of held and re-processed records. On PostgreSQL the tables are then vacuumed and
analyzed, as autovacuum would have done to week-old rows.

Then the receiver (gunicorn, 2 sync workers, as bench/run.py starts it) gets POSTs of ticket
checks at a fixed rate from client threads, open loop: each acknowledgement is timed from its
POST's scheduled time, so a stall of the database shows in full on every POST it delays,
however many connections wait (a closed loop such as wrk would send less while it lasts, and
hide it). First a baseline without purge, then the purge as the scheduler's job runs it
(core/operations/retention.py ``purge(bridge)``, in a process of its own), until it ends. The
acknowledgements of each period, the purge's time and rate, its transactions and the longest of
them are printed; then what must stay is checked (nothing purgeable left, every dead letter,
held and queued record still there).

    .venv/bin/python bench/retention.py                       # 10,000,000 rows, both backends
    .venv/bin/python bench/retention.py --rows 1000000 --backends sqlite
    .venv/bin/python bench/retention.py --source /tmp/before  # another checkout, same harness
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import logging
import multiprocessing
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
from backends import API_KEY, Backend
from pgcluster import PrivateCluster, binaries
from processes import BENCH, BIN, free_port, gunicorn, reexec_with, stop
from retention_rows import KEPT, RETENTION_HOURS, counts, fill

RECEIVER = "s360bridge.core.wsgi:app_from_env()"
PATH = "/s360/ticketchecks/bench"


class Steady:
    """POSTs of ``records`` new ticket checks at ``rate`` a second, open loop, until stopped;
    each answer is kept with its scheduled time and its acknowledgement time from then."""

    def __init__(self, port: int, rate: float, records: int, connections: int):
        self.port, self.rate, self.records = port, rate, records
        self.due: queue.Queue = queue.Queue()
        self.done = threading.Event()
        self.results: list[tuple[float, float, int]] = []  # (scheduled, ack seconds, status)
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, daemon=True)
                        for _ in range(connections)]
        self.pacer = threading.Thread(target=self._pace, daemon=True)

    def start(self) -> None:
        for t in self.threads:
            t.start()
        self.pacer.start()

    def stop(self) -> None:
        self.done.set()
        self.pacer.join()
        for _ in self.threads:
            self.due.put(None)
        for t in self.threads:
            t.join()

    def _pace(self) -> None:
        start_at = time.perf_counter()
        i = 0
        while not self.done.is_set():
            at = start_at + i / self.rate
            delay = at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            self.due.put((i, at))
            i += 1

    def _client(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        headers = {"Content-Type": "application/json", "x-api-key": API_KEY}
        while (item := self.due.get()) is not None:
            i, at = item
            base = 10**14 + i * self.records
            body = orjson.dumps([{
                "ticket_check_id": base + n, "movement_id": base + n + 7,
                "ticket_id": base + n + 9, "barcode": f"0{base + n}",
                "access_time": "2024-03-14 19:21:07", "check_flow": "IN", "result": "OK",
                "failure_reason": "NO_FAIL"} for n in range(self.records)])
            try:
                conn.request("POST", PATH, body, headers)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException):
                conn.close()
                status = 0
            with self.lock:
                self.results.append((at, time.perf_counter() - at, status))

    def between(self, start: float, end: float) -> dict:
        with self.lock:
            mine = [(a, s) for at, a, s in self.results if start <= at < end]
        acks = sorted(a for a, s in mine if s == 200)

        def pct(q: float) -> float:
            return acks[min(len(acks) - 1, int(q * len(acks)))] * 1000 if acks else float("nan")
        return {"posts": len(mine), "not_200": sum(1 for _, s in mine if s != 200),
                "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": acks[-1] * 1000 if acks
                else float("nan")}


def run_purge(config: str, now: float, answer) -> None:
    """The scheduler's job, in a process of its own, with each of its write transactions
    timed (the time a transaction holds SQLite's write lock is what a receiver waits) and its
    log lines marked with the time they came (its deletions end with "purged N rows")."""
    sys.path.insert(0, str(BENCH))
    from s360bridge.core.bridge import Bridge
    from s360bridge.core.config import load_settings
    from s360bridge.core.operations import retention

    held: list[float] = []
    said: list[tuple[float, str]] = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append((time.perf_counter(), record.getMessage()))
    logging.getLogger("s360bridge.retention").addHandler(handler)
    logging.getLogger("s360bridge.retention").setLevel(logging.INFO)
    write = retention.write

    @contextlib.contextmanager
    def timed(engine):
        started = time.perf_counter()
        try:
            with write(engine) as conn:
                yield conn
        finally:
            held.append(time.perf_counter() - started)

    retention.write = timed
    bridge = Bridge(load_settings([config], receiver_secrets=False))
    started = time.perf_counter()  # the same clock as the parent's (CLOCK_MONOTONIC)
    n = retention.purge(bridge, now=now)
    ended = time.perf_counter()
    deleted = next((at for at, line in said if "purged" in line), ended)
    answer.put({"purged": n, "started": started, "ended": ended, "deleted": deleted,
                "seconds": deleted - started, "after_s": ended - deleted, "log": said,
                "transactions": len(held), "longest_ms": max(held, default=0) * 1000})


def measure(b: Backend, args) -> dict:
    """Fill, count, then ingest: a baseline, and the purge of the rows older than the horizon
    at the time of the fill (the job run at that moment: what it must find is counted before)."""
    now = time.time()
    horizon = now - RETENTION_HOURS * 3600
    print(f"{b.name}: filling {args.rows:,} rows ...", flush=True)
    r = fill(b, args.rows, now)
    r["before"] = counts(b, horizon)
    print(f"  {b.name}: filled in {r['fill_s']:.0f} s: {r['before']}", flush=True)
    port = free_port()
    server = gunicorn(RECEIVER, port, 2, b.env(), b.folder, b.folder / "receiver.log")
    load = Steady(port, args.rate, args.records, args.connections)
    load.start()
    try:
        time.sleep(2)  # the server's connections and caches warm up: not measured
        base_start = time.perf_counter()
        time.sleep(args.baseline)
        print(f"  {b.name}: purging ...", flush=True)
        answer = multiprocessing.get_context("spawn").Queue()
        child = multiprocessing.get_context("spawn").Process(
            target=run_purge, args=(str(b.config), now, answer))
        child.start()
        r["purge"] = answer.get()
        child.join()
        time.sleep(1)
    finally:
        load.stop()
        stop(server)
    r["baseline"] = load.between(base_start, base_start + args.baseline)
    r["during"] = load.between(r["purge"]["started"], r["purge"]["deleted"])
    r["vacuum"] = load.between(r["purge"]["deleted"], r["purge"]["ended"])
    r["after"] = counts(b, horizon)
    r["purge_inbox"] = r["purge"]["purged"] - (r["before"]["quarantine"]
                                               - r["after"]["quarantine"])
    return r


def report(results: dict, args) -> bool:
    names = list(results)
    print(f"\n{args.rows:,} inbox rows, a day's worth older than the {RETENTION_HOURS} h "
          f"horizon; ingest {args.rate:g} POSTs/s of {args.records} ticket checks "
          f"({args.rate * args.records:,.0f} records/s), open loop; commit {commit()}")

    def row(label: str, fmt) -> None:
        print(f"{label:44}" + "".join(f"{fmt(results[n]):>26}" for n in names))

    row("", lambda r: r["name"])
    row("fill (SQL)", lambda r: f"{r['fill_s']:.0f} s")
    labels = {"baseline": "ingest, no purge", "during": "ingest during the deletes",
              "vacuum": "ingest after them (vacuum)"}
    for period, label in labels.items():
        row(f"{label}: POSTs (not 200)",
            lambda r, p=period: f"{r[p]['posts']} ({r[p]['not_200']})")
        row("  p50 / p99 / max ms", lambda r, p=period: "{:.1f} / {:.1f} / {:.0f}".format(
            r[p]["p50_ms"], r[p]["p99_ms"], r[p]["max_ms"]))
    row("purge: inbox rows", lambda r: f"{r['purge_inbox']:,}")
    row("  time, rate", lambda r: f"{r['purge']['seconds']:.1f} s, "
                                  f"{r['purge_inbox'] / r['purge']['seconds']:,.0f}/s")
    row("  then (vacuum)", lambda r: f"{r['purge']['after_s']:.1f} s")
    row("  attempt / delivery / quarantine rows", lambda r: "{:,} / {:,} / {:,}".format(
        *(r["before"][t] - r["after"][t] for t in ("attempt", "delivery", "quarantine"))))
    row("  transactions, longest", lambda r: f"{r['purge']['transactions']:,}, "
                                             f"{r['purge']['longest_ms']:.0f} ms")
    ok = True
    for r in results.values():
        kept = {k: (r["before"][k], r["after"][k]) for k in KEPT}
        wrong = {k: v for k, v in kept.items() if v[0] != v[1]}
        if (r["after"]["purgeable"] or wrong or not r["before"]["dead letters"]
                or r["purge_inbox"] != r["before"]["purgeable"]):
            print(f"ERROR: {r['name']}: purged {r['purge_inbox']:,} of "
                  f"{r['before']['purgeable']:,} purgeable inbox rows, "
                  f"{r['after']['purgeable']:,} left; kept before/after {kept}")
            ok = False
        else:
            print(f"{r['name']}: nothing purgeable left; kept as they were: "
                  + ", ".join(f"{k} {v[0]:,}" for k, v in kept.items()))
        for at, line in r["purge"]["log"]:
            print(f"  {r['name']} purge, {at - r['purge']['started']:.1f} s: {line}")
        if r["during"]["not_200"] or r["baseline"]["not_200"]:
            print(f"WARNING: {r['name']}: POSTs not answered 200 (503: the database did not "
                  "answer within the request's deadline)")
    return ok


def commit() -> str:
    source = os.environ.get("S360RETENTION_SOURCE", str(BENCH.parent))
    return subprocess.run(["git", "-C", source, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip() or source


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000, help="inbox rows")
    ap.add_argument("--rate", type=float, default=50, help="POSTs a second")
    ap.add_argument("--records", type=int, default=20, help="ticket checks a POST")
    ap.add_argument("--connections", type=int, default=16, help="client connections")
    ap.add_argument("--baseline", type=float, default=30,
                    help="seconds of ingest without purge, measured before it")
    ap.add_argument("--backends", default=None,
                    help="sqlite, postgresql or both, comma-separated (default: both when "
                         "PostgreSQL is installed or --postgres is given)")
    ap.add_argument("--postgres", metavar="URL", help="a PostgreSQL database to use instead of "
                                                      "a private cluster")
    ap.add_argument("--source", type=Path, help="another checkout of s360bridge to measure")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    if args.source and "S360RETENTION_SOURCE" not in os.environ:
        reexec_with(__file__, args.source, "S360RETENTION_SOURCE")
    if args.rows < 10_000:
        sys.exit("--rows: at least 10,000")
    if not (BIN / "gunicorn").exists():
        sys.exit("gunicorn is needed: pip install -e '.[gunicorn]'")
    os.environ["BENCH_API_KEY"] = API_KEY
    names = (args.backends or ("sqlite,postgresql" if binaries() or args.postgres
                               else "sqlite")).split(",")
    results = {}
    for name in names:  # one at a time: each database is several GB at ten million rows
        work = Path(tempfile.mkdtemp(prefix="s360retention-"))
        with contextlib.ExitStack() as stack:
            cluster = None
            if name == "postgresql" and not args.postgres:
                cluster = stack.enter_context(PrivateCluster())
            b = (Backend.sqlite(work) if name == "sqlite"
                 else Backend.postgresql(work, cluster, args.postgres))
            b.write_config("FULL")
            subprocess.run([str(BIN / "s360bridge"), "db", "upgrade", "-c", str(b.config)],
                           env={**os.environ, **b.env()}, check=True, capture_output=True)
            r = measure(b, args)
            r["name"] = name
            results[name] = r
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    out = BENCH / "results"
    out.mkdir(exist_ok=True)
    (out / f"retention-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(
        json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "commit": commit(),
                    "results": results}, indent=2))
    if not report(results, args):
        sys.exit(1)


if __name__ == "__main__":
    main()
