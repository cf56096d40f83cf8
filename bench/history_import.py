"""The initial import (`s360bridge import`) of contacts and orders from the history cut-off into
the SQLite warehouse: records/s, peak RSS and bytes on disk per record in the engine database
and the warehouse, store and delivery apart; then an import killed with SIGKILL mid-store and
again mid-delivery, which must resume where it stopped and end with every record once.

    python bench/history_import.py --records 1000000
    python bench/history_import.py --records 200000 --streams orders --profile
    python bench/history_import.py --records 200000 --source /tmp/import-before

Each stream's file is JSON lines made from the example records of the S-360 reference
(`order_sale.json`: an order of about 3 KB with two operations and three movements;
`contacts_person.json`), each with keys of its own and dated after the cut-off. The import is
a real `s360bridge import` process; its store ends when it prints its summary, its delivery
when it exits. ``--profile`` runs it under py-spy (the bench extra) and prints where its time
went; ``--source DIR`` measures another checkout's core/ and plugins/ with the same harness.
"""

from __future__ import annotations

import argparse
import atexit
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import orjson
from history_data import EXAMPLES, write_records
from processes import cpu_seconds, rss_kib, tree
from profiles import print_profile

BENCH = Path(__file__).resolve().parent
STREAMS = {"contacts": ("contacts", {}), "orders": ("orders", {"order_operations": 2,
                                                                "order_movements": 3})}
CLI = "from s360bridge.core.cli.main import main; main()"


def config(work: Path, batch_size: int = 500) -> Path:
    path = work / "bench.yaml"
    auth = {"type": "api_key", "header": "x-api-key", "key": {"$env": "BENCH_API_KEY"}}
    path.write_bytes(orjson.dumps({
        "institution": "bench", "timezone": "Europe/Zurich", "history_cutoff": "2019-01-01",
        "targets": {"datx": {"type": "sql", "url": f"sqlite:///{work}/warehouse.db"}},
        "streams": {s: {"auth": auth, "targets": ["datx"]} for s in STREAMS},
        # the interruption check holds the warehouse's lock while the store ends
        "engine": {"database_url": f"sqlite:///{work}/engine.db", "batch_size": batch_size,
                   "sqlite_busy_timeout_seconds": 600}}))
    return path


def environment(source: Path | None) -> dict:
    env = {**os.environ, "BENCH_API_KEY": "bench-key",
           "S360BRIDGE_LOAD_PLUGINS": "contacts,orders,sql"}
    if source is not None:  # a package of the other checkout's folders, first on the path
        pkg = Path(tempfile.mkdtemp(prefix="s360import-")) / "s360bridge"
        atexit.register(shutil.rmtree, pkg.parent, True)
        pkg.mkdir()
        (pkg / "__init__.py").write_text("")
        for name in ("core", "plugins"):
            (pkg / name).symlink_to(source.resolve() / name)
        env["PYTHONPATH"] = str(pkg.parent)
    return env


def upgrade(cfg: Path, env: dict) -> None:
    """Make the engine database's tables, as an operator does before a first import."""
    subprocess.run([sys.executable, "-c", CLI, "db", "upgrade", "-c", str(cfg)], env=env,
                   check=True, stdout=subprocess.DEVNULL)


def command(cfg: Path, stream: str, path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-c", CLI, "import", "-c", str(cfg), "--institution", "bench",
            "--stream", stream, *extra, str(path)]


def sizes(work: Path) -> dict[str, int]:
    """Bytes of each database, its write-ahead log included."""
    return {name: sum(p.stat().st_size for p in work.glob(f"{name}.db*"))
            for name in ("engine", "warehouse")}


def timed_import(cmd: list[str], env: dict, work: Path, profile: Path | None) -> dict:
    """Run one import; the store ends at its summary line, the delivery at its exit."""
    if profile is not None:
        cmd = [str(Path(sys.executable).parent / "py-spy"), "record", "-r", "200", "-f", "raw",
               "--subprocesses",
               "-o", str(profile), "--", *cmd]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    stored_at, store_peak, store_cpu, store_sizes, out = None, 0, 0.0, {}, []
    for line in proc.stdout:
        out.append(line)
        if stored_at is None and re.match(r"\d+ lines: ", line):
            stored_at = time.perf_counter()
            store_peak = max(rss_kib(p, "VmHWM") for p in tree(proc.pid))
            store_cpu = sum(cpu_seconds(p) for p in tree(proc.pid))
            store_sizes = sizes(work)
    _, status, usage = os.wait4(proc.pid, 0)
    ended = time.perf_counter()
    err = proc.stderr.read()
    if status != 0 or stored_at is None:
        sys.exit(f"the import failed ({status}):\n{''.join(out)}{err}")
    cpu = usage.ru_utime + usage.ru_stime  # py-spy's own, when profiling
    return {"store_s": stored_at - started, "deliver_s": ended - stored_at,
            "store_cpu": store_cpu, "deliver_cpu": cpu - store_cpu,
            "store_peak_mib": store_peak / 1024, "peak_mib": usage.ru_maxrss / 1024,
            "store_sizes": store_sizes, "sizes": sizes(work), "output": "".join(out)}


def counts(work: Path, stream: str) -> dict[str, int]:
    table, children = STREAMS[stream]
    with sqlite3.connect(work / "engine.db") as conn:
        found = dict(zip(("inbox", "keys"), conn.execute(
            "SELECT count(*), count(DISTINCT record_key) FROM inbox WHERE stream = ?",
            (stream,)).fetchone(), strict=True))
        found["queued"] = conn.execute("SELECT count(*) FROM queue").fetchone()[0]
    with sqlite3.connect(work / "warehouse.db") as conn:
        for name in (table, *children):
            found[name] = conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
    return found


def expected(stream: str, n: int) -> dict[str, int]:
    table, children = STREAMS[stream]
    return {"inbox": n, "keys": n, "queued": 0, table: n,
            **{name: n * each for name, each in children.items()}}


def where_bytes_go(work: Path) -> list[tuple[str, str, int]]:
    """(database, table or index, bytes) from SQLite's dbstat, largest first."""
    found = []
    for db in ("engine", "warehouse"):
        with sqlite3.connect(work / f"{db}.db") as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            found += [(db, name, size) for name, size in conn.execute(
                "SELECT name, sum(pgsize) FROM dbstat GROUP BY name")]
    return sorted(found, key=lambda f: -f[2])


def measure(args, env: dict) -> None:
    work = Path(tempfile.mkdtemp(prefix="s360import-", dir=args.work))
    cfg = config(work, args.batch_size)
    upgrade(cfg, env)
    print(f"commit {commit(args.source)}; {args.records:,} records a stream; work {work}",
          flush=True)
    for stream in args.streams:
        path = work / f"{stream}.jsonl"
        started = time.perf_counter()
        write_records(stream, args.records, path)
        print(f"{stream}: {args.records:,} records, {path.stat().st_size / args.records:,.0f} "
              f"bytes a line, written in {time.perf_counter() - started:.1f} s", flush=True)
        before = sizes(work)
        profile = work / f"profile-{stream}.txt" if args.profile else None
        r = timed_import(command(cfg, stream, path, *args.extra), env, work, profile)
        found = counts(work, stream)
        if found != expected(stream, args.records):
            sys.exit(f"{stream}: counts {found}, expected {expected(stream, args.records)}")
        n, total = args.records, r["store_s"] + r["deliver_s"]
        grew = {db: r["sizes"][db] - before[db] for db in before}
        stored = r["store_sizes"]["engine"] - before["engine"]
        print(f"  store    {r['store_s']:7.1f} s  {n / r['store_s']:9,.0f} records/s  CPU "
              f"{r['store_cpu'] / n * 1e6:4.0f} µs/record  peak RSS {r['store_peak_mib']:4.0f} "
              f"MiB  engine +{stored / n:,.0f} bytes/record")
        print(f"  delivery {r['deliver_s']:7.1f} s  {n / r['deliver_s']:9,.0f} records/s  CPU "
              f"{r['deliver_cpu'] / n * 1e6:4.0f} µs/record  engine {grew['engine'] / n:+,.0f}, "
              f"warehouse +{grew['warehouse'] / n:,.0f} bytes/record at the end")
        print(f"  together {total:7.1f} s  {n / total:9,.0f} records/s  peak RSS "
              f"{r['peak_mib']:5.0f} MiB; every record stored once and delivered: {found}",
              flush=True)
        if profile is not None:
            print_profile(profile, args.top)
        if stream != args.streams[-1]:
            continue
        print("where the bytes are (dbstat, after a checkpoint):")
        for db, name, size in where_bytes_go(work)[:args.top]:
            print(f"  {db:9} {name:36} {size / 2**20:9,.1f} MiB")
    if not args.keep:
        shutil.rmtree(work)


def interrupted(args, env: dict) -> None:
    """Kill an import with SIGKILL mid-store, then its rerun mid-delivery; the third run must
    end with every record stored once and in the warehouse, the store resumed at the line
    where the first run's last commit stopped."""
    n, stream = args.resume_records, "orders"
    work = Path(tempfile.mkdtemp(prefix="s360import-", dir=args.work))
    cfg, path = config(work, args.batch_size), work / "orders.jsonl"
    engine_db, warehouse_db = work / "engine.db", work / "warehouse.db"
    upgrade(cfg, env)
    write_records(stream, n, path)
    cmd = command(cfg, stream, path, *args.extra)

    def progress() -> int:
        with sqlite3.connect(engine_db, timeout=60) as conn:
            row = conn.execute("SELECT lines FROM import_progress").fetchone()
        return row[0] if row else 0

    def warehouse_rows() -> int:
        try:
            with sqlite3.connect(warehouse_db, timeout=60) as conn:
                return conn.execute("SELECT count(*) FROM orders").fetchone()[0]
        except sqlite3.OperationalError:  # the target has not made its tables yet
            return 0

    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    wait_for(first, lambda: 0 < progress())
    with locked(engine_db):  # the import waits at its next commit
        stopped_at = progress()
        left = kill(first)
    wait_gone(left)
    with sqlite3.connect(engine_db) as conn:
        kept = conn.execute("SELECT count(*) FROM inbox").fetchone()[0]
    if not 0 < stopped_at < n or kept != stopped_at:
        sys.exit(f"killed mid-store at line {stopped_at} of {n} with {kept} records stored: "
                 "not half-way, or the checkpoint and the inbox disagree")
    second = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    wait_for(second, lambda: 0 < warehouse_rows())
    with locked(warehouse_db):  # no more deliveries; the store goes on to its end
        resumed = "".join(_until_summary(second))
        delivered = warehouse_rows()
        left = kill(second)
    wait_gone(left)
    third = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    found = counts(work, stream)
    print(f"interrupted: killed at line {stopped_at:,} of {n:,} (stored), then with "
          f"{delivered:,} of {n:,} in the warehouse; resumed with: {resumed.strip()!r}; "
          f"last run: {third.stdout.strip()!r}; {found}")
    if f"resumed after line {stopped_at}" not in resumed or \
            f"{n - stopped_at} stored, 0 already there" not in resumed or delivered >= n:
        sys.exit(f"the second run did not resume at line {stopped_at}, or was not stopped "
                 "while it delivered")
    if third.returncode != 0 or found != expected(stream, n):
        sys.exit(f"after the interruptions: {found}, expected {expected(stream, n)}; "
                 f"{third.stderr}")
    print("interrupted import: resumed where it stopped, every record once: OK")
    if not args.keep:
        shutil.rmtree(work)


def _until_summary(proc: subprocess.Popen):
    for line in proc.stdout:
        yield line
        if re.match(r"\d+ lines: ", line):
            return


def wait_for(proc: subprocess.Popen, ready) -> None:
    deadline = time.monotonic() + 600
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"the import ended ({proc.returncode}) before it could be interrupted")
        time.sleep(0.002)


@contextmanager
def locked(db: Path):
    """Hold a database's write lock for the block: the import's writes to it wait."""
    lock = sqlite3.connect(db, timeout=60, isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")
        yield
        lock.execute("ROLLBACK")
    finally:
        lock.close()


def kill(proc: subprocess.Popen) -> list[int]:
    """SIGKILL the import; answer its delivery process, if any, which notices and ends after
    its batch in hand (``wait_gone``, outside the lock, before the next run)."""
    children = tree(proc.pid)[1:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return children


def wait_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + 600
    while any(_running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.01)


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def commit(source: Path | None) -> str:
    where = source or BENCH
    return subprocess.run(["git", "-C", str(where), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip() or str(where)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000, help="records a stream")
    ap.add_argument("--streams", default="contacts,orders")
    ap.add_argument("--resume-records", type=int, default=None,
                    help="orders of the interruption check [min(--records, 50000)]; 0: none")
    ap.add_argument("--batch-size", type=int, default=500, help="engine.batch_size: the "
                    "worker's claims")
    ap.add_argument("--profile", action="store_true", help="run each import under py-spy")
    ap.add_argument("--top", type=int, default=15, help="lines of each profile and size list")
    ap.add_argument("--source", type=Path, help="another checkout of s360bridge to measure")
    ap.add_argument("--work", type=Path, help="where the work folder goes [the system's temp]")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("extra", nargs="*", help="after --: more options of `s360bridge import`")
    args = ap.parse_args()
    args.streams = [s for s in args.streams.split(",") if s]
    if args.resume_records is None:
        args.resume_records = min(args.records, 50_000)
    if not all(s in STREAMS for s in args.streams) or not EXAMPLES.exists():
        sys.exit(f"streams: {', '.join(STREAMS)}; examples in {EXAMPLES}")
    env = environment(args.source)
    measure(args, env)
    if args.resume_records:
        interrupted(args, env)


if __name__ == "__main__":
    main()
