"""The backlog phases of bench/run.py: the receiver fills an inbox under wrk, workers drain it
into the warehouse, or both run together (the flow)."""

from __future__ import annotations

import re
import statistics
import sys
import time

from backends import Backend
from phase_usage import server_memory, snapshot, used
from processes import BIN, free_port, gunicorn, rss_kib, start, stop, tree, wrk_load

RECEIVER = "s360bridge.core.wsgi:app_from_env()"


def stored(b: Backend) -> int:
    return b.scalar("engine", "SELECT count(*) FROM inbox")


def oldest_age(b: Backend) -> float:
    """Seconds the oldest record still to deliver has waited (0: none)."""
    at = b.scalar("engine", "SELECT received_at FROM inbox WHERE id = "
                            "(SELECT min(id) FROM queue)")
    return 0.0 if at is None else round(time.time() - at, 1)


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
