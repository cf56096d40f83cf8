"""What one record costs the worker, part by part: claim, decoding, transform, warehouse write,
completion, and the commits (with their fsyncs), in microseconds per record.

The inbox is filled in-process through the receiver's own ingest (50-record batches of ticket
checks, as bench/run.py's wrk script sends them), then one Worker drains it in this process
with a timer around each part; a part's time excludes the parts it calls (a commit inside the
claim counts as a commit). The timers cost about a microsecond a record, so the total is a
little slower than `bench/run.py`'s end to end; compare commits in one run of this script.

    python bench/worker_parts.py --records 200000
    python bench/worker_parts.py --records 200000 --backend postgresql   # a private cluster
    python bench/worker_parts.py --records 200000 --journal   # and a journal before it
    git worktree add /tmp/before 01413a0 && python bench/worker_parts.py --source /tmp/before

``--source`` measures another checkout of s360bridge (its core/ and plugins/) with the same
harness, so that a change to the worker's path is quoted before and after on the same machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

from processes import commit_of, reexec_with

ROW = {"access_time": "2024-03-14 19:21:07", "check_flow": "IN", "result": "OK",
       "failure_reason": "NO_FAIL"}
PARTS = ("claim (SQL)", "decode JSON", "transform", "warehouse write", "completion",
         "commits (fsync)", "worker loop, leases, other")


class Timers:
    """Own time per part: a part's clock stops while a nested timed part runs."""

    def __init__(self):
        self.own: dict[str, float] = defaultdict(float)
        self.local = threading.local()

    def wrap(self, part: str, fn):
        def timed(*args, **kwargs):
            stack = self.local.__dict__.setdefault("stack", [])
            stack.append(0.0)
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.perf_counter() - started
                nested = stack.pop()
                self.own[part] += spent - nested
                if stack:
                    stack[-1] += spent
        return timed


class Background:
    """What the worker's background thread did (``--ahead``): every call the worker submits to
    its executor (claims and completions), timed in that thread: wall time, CPU time, and on
    Linux the time it was ready to run but waiting for a core (``/proc/thread-self/schedstat``).
    That thread is the drain's critical path when the delivering thread waits for it; wall
    time beyond the other two is waiting for the server or the interpreter lock."""

    PARTS = {"_claim": "claims", "_complete": "completions", "complete": "completions"}

    def __init__(self):
        self.calls: dict[str, int] = defaultdict(int)
        self.times: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])

    def executor(self, base):
        """``base`` (ThreadPoolExecutor) with every submitted call timed."""
        timed = self.timed

        class Timed(base):
            def submit(self, fn, /, *args, **kwargs):
                return super().submit(timed(fn), *args, **kwargs)
        return Timed

    def timed(self, fn):
        name = getattr(fn, "__name__", "other")
        part = self.PARTS.get(name, name)

        def run(*args, **kwargs):
            before = (time.perf_counter(), time.thread_time(), _run_queue())
            try:
                return fn(*args, **kwargs)
            finally:
                after = (time.perf_counter(), time.thread_time(), _run_queue())
                self.calls[part] += 1
                for i, (a, b) in enumerate(zip(after, before, strict=True)):
                    self.times[part][i] += a - b
        return run

    def report(self, seconds: float) -> None:
        if not self.calls:
            return
        busy = sum(t[0] for t in self.times.values()) / seconds
        print(f"background thread: busy {busy:.0%} of the drain; per call, ms:")
        for part, calls in self.calls.items():
            wall, cpu, queued = (t / calls * 1000 for t in self.times[part])
            waiting = f", {queued:.2f} ready but waiting for a core" if _run_queue() else ""
            print(f"  {part:14} {calls:6} calls  {wall:7.2f} wall, {cpu:.2f} CPU{waiting}")


def _run_queue() -> float:
    """Seconds this thread has spent ready to run, waiting for a core (Linux; else 0)."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def config(backend, synchronous: str, batch_size: int, journal: bool) -> Path:
    import yaml
    path = backend.write_config(synchronous)
    cfg = yaml.safe_load(path.read_text())
    if batch_size:
        cfg["engine"]["batch_size"] = batch_size
    if journal:  # a journal before the warehouse: its pushes are recorded as progress
        cfg["targets"]["journal"] = {"type": "jsonl", "path": str(path.parent / "j.jsonl")}
        cfg["streams"]["ticketchecks"]["targets"].insert(0, "journal")
    path.write_text(yaml.safe_dump(cfg))
    return path


def fill(bridge, records: int) -> None:
    from s360bridge.core.pipeline.ingest import ingest
    inst, stream = bridge.institution("bench"), bridge.stream("ticketchecks")
    for base in range(0, records, 50):
        batch = [{"ticket_check_id": i, "movement_id": i + 7, "ticket_id": i + 9,
                  "barcode": f"0{i}", **ROW}
                 for i in range(10**11 + base, 10**11 + min(base + 50, records))]
        ingest(bridge, inst, stream, batch)


def measure(args) -> None:
    from backends import Backend
    from pgcluster import PrivateCluster

    os.environ["BENCH_API_KEY"] = "bench-key"
    os.environ["S360BRIDGE_LOAD_PLUGINS"] = "ticketchecks,sql,jsonl"
    work = Path(tempfile.mkdtemp(prefix="s360parts-"))
    with contextlib.ExitStack() as stack:
        if args.backend == "sqlite":
            backend = Backend.sqlite(work)
        else:
            cluster = None if args.postgres else stack.enter_context(PrivateCluster(
                STATEMENTS if args.statements else None))
            backend = Backend.postgresql(work, cluster, args.postgres)
        drain(backend, args, config(backend, args.synchronous, args.batch_size, args.journal))
    if not args.keep:
        shutil.rmtree(work)


def _freeze_startup() -> None:
    """What `s360bridge worker` does before it serves; nothing for a checkout (--source) from
    before it did (the editable install would lend it this checkout's module)."""
    import s360bridge.core

    if (Path(s360bridge.core.__file__).parent / "garbage.py").exists():
        from s360bridge.core.garbage import freeze_startup

        freeze_startup()


def _revisions(backend) -> str:
    return backend.scalar("engine", "SELECT string_agg(version_num, ',') FROM alembic_version"
                          if backend.name == "postgresql" else
                          "SELECT group_concat(version_num) FROM alembic_version")


def drain(backend, args, cfg: Path) -> None:
    import orjson
    from sqlalchemy.engine.default import DefaultDialect

    from s360bridge.core.bridge import Bridge
    from s360bridge.core.config import load_settings
    from s360bridge.core.pipeline import worker as worker_module
    from s360bridge.core.plugin.manager import Hooks

    bridge = Bridge(load_settings([cfg]), schema="upgrade")
    _freeze_startup()  # before the fill, as a worker before its first claim
    started = time.perf_counter()
    fill(bridge, args.records)
    size = bridge.settings.engine.claim_size(backend.name)
    print(f"{args.records} records stored in {time.perf_counter() - started:.1f} s; "
          f"draining with one worker (claims of {size}) ...", flush=True)

    t = Timers()
    worker_module.claim = t.wrap("claim (SQL)", worker_module.claim)
    worker_module.complete = t.wrap("completion", worker_module.complete)
    orjson.loads = t.wrap("decode JSON", orjson.loads)
    Hooks.transform = t.wrap("transform", Hooks.transform)
    Hooks.push = t.wrap("warehouse write", Hooks.push)
    DefaultDialect.do_commit = t.wrap("commits (fsync)", DefaultDialect.do_commit)
    background = Background()
    if hasattr(worker_module, "ThreadPoolExecutor"):  # older checkouts (--source): none
        worker_module.ThreadPoolExecutor = background.executor(worker_module.ThreadPoolExecutor)
    worker = worker_module.Worker(bridge)
    run_once = t.wrap("worker loop, leases, other", worker.run_once)
    if args.statements:
        for url in (backend.engine_url, backend.warehouse_url):
            backend._pg(url, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        backend._pg(backend.engine_url, "SELECT pg_stat_statements_reset()")
    server_cpu, cpu = backend.cpu_seconds(), time.process_time()
    started = time.perf_counter()
    while run_once(None, args.ahead and worker.ahead):
        pass
    worker.finish()
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    server_cpu = None if server_cpu is None else backend.cpu_seconds() - server_cpu
    bridge.close()
    pending = backend.scalar("engine", "SELECT count(*) FROM inbox_state WHERE state = 'pending'"
                             if "engine_0002" in _revisions(backend) else  # before: no queue
                             "SELECT count(*) FROM inbox WHERE state = 'pending'")
    stored = backend.scalar("warehouse", "SELECT count(*) FROM ticket_checks")
    source = os.environ.get("S360PARTS_SOURCE", "this checkout")
    commit = commit_of(source)
    print(f"{source} ({commit}) on {backend.name}: {stored} records in {seconds:.2f} s, "
          f"{stored / seconds:,.0f} records/s; {pending} left pending")
    print(f"{'part':30} {'µs/record':>10} {'share':>7}")
    for part in PARTS:
        us = t.own[part] / stored * 1e6
        print(f"{part:30} {us:10.2f} {t.own[part] / seconds:7.1%}")
    print(f"{'total':30} {seconds / stored * 1e6:10.2f}")
    background.report(seconds)
    if args.statements:
        statements(backend, stored)
    server = "" if server_cpu is None else \
        f", the PostgreSQL server {server_cpu / stored * 1e6:.2f} µs"
    print(f"CPU per record: this process {cpu / stored * 1e6:.2f} µs{server}")


STATEMENTS = {"shared_preload_libraries": "pg_stat_statements",
              "pg_stat_statements.track": "all"}
_TOP = """SELECT d.datname, s.calls, s.total_exec_time * 1000 / %(n)s, s.wal_bytes / %(n)s,
    left(regexp_replace(s.query, '\\s+', ' ', 'g'), 90)
    FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
    ORDER BY s.total_exec_time DESC LIMIT 12"""


def statements(backend, records: int) -> None:
    """The server's time and WAL per record drained, per statement (pg_stat_statements)."""
    import psycopg

    url = backend.engine_url.replace("postgresql+psycopg://", "postgresql://")
    print(f"{'database':16} {'calls':>6} {'µs/record':>10} {'WAL B/record':>13}  statement")
    with psycopg.connect(url) as conn:
        for db, calls, us, wal, query in conn.execute(_TOP, {"n": records}):
            print(f"{db:16} {calls:6} {us:10.2f} {float(wal):13.1f}  {query}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--batch-size", type=int, help="engine.batch_size (default: the "
                                                     "backend's, 500 or 2,000)")
    ap.add_argument("--synchronous", default="FULL", help="SQLite synchronous, both databases")
    ap.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--postgres", metavar="URL", help="a PostgreSQL database to use instead "
                                                       "of a private cluster")
    ap.add_argument("--journal", action="store_true",
                    help="also deliver to a jsonl journal, before the warehouse")
    ap.add_argument("--ahead", action="store_true",
                    help="claim and complete in the background, as the worker does on "
                         "PostgreSQL (the parts then overlap: their sum exceeds the total)")
    ap.add_argument("--statements", action="store_true",
                    help="a private cluster: also print the server's time and WAL per record "
                         "for each statement (pg_stat_statements)")
    ap.add_argument("--source", type=Path, help="another checkout of s360bridge to measure")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    if args.source and "S360PARTS_SOURCE" not in os.environ:
        reexec_with(__file__, args.source, "S360PARTS_SOURCE")
    measure(args)


if __name__ == "__main__":
    main()
