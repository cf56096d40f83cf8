"""Open-loop load on `s360bridge run`: POSTs of ticket checks sent at a fixed rate whatever the
server's answers, for a while, then the time the bridge takes to deliver what it accepted.

Each POST has a scheduled send time (i / rate seconds after the start); its acknowledgement time
is measured from that time, not from when a client connection was free, so a server that falls
behind sees its delay counted (no coordinated omission, which a closed loop such as plain wrk
hides). Reports p50/p99 acknowledgement, records/s accepted, the backlog (records stored but not
delivered) when the load stops and how long the bridge takes to drain it.

    .venv/bin/python bench/open_loop.py --rate 100 --records 50 --seconds 60
"""

from __future__ import annotations

import argparse
import http.client
import os
import queue
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
from backends import API_KEY, Backend
from processes import BIN, free_port, start, stop

PATH = "/s360/ticketchecks/bench"


def bodies(count: int, records: int) -> list[bytes]:
    """``count`` POST bodies of ``records`` ticket checks, every id unique."""
    out = []
    for i in range(count):
        base = 10_000_000_000 + i * records
        out.append(orjson.dumps([{
            "ticket_check_id": base + j, "movement_id": base + j + 7, "ticket_id": base + j + 9,
            "barcode": f"0{base + j}", "access_time": "2024-03-14 19:21:07",
            "check_flow": "IN", "result": "OK", "failure_reason": "NO_FAIL"}
            for j in range(records)]))
    return out


class OpenLoop:
    """Sends ``payloads`` at ``rate`` a second from ``connections`` client threads."""

    def __init__(self, port: int, payloads: list[bytes], rate: float, connections: int):
        self.port, self.payloads, self.rate = port, payloads, rate
        self.due: queue.Queue = queue.Queue()
        self.results: list[tuple[int, float, int]] = []  # (index, ack seconds, status)
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, daemon=True)
                        for _ in range(connections)]

    def run(self) -> float:
        for t in self.threads:
            t.start()
        start_at = time.perf_counter() + 0.1
        for i in range(len(self.payloads)):
            at = start_at + i / self.rate
            delay = at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            self.due.put((i, at))
        for _ in self.threads:
            self.due.put(None)
        for t in self.threads:
            t.join()
        return time.perf_counter() - start_at

    def _client(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = {"Content-Type": "application/json", "x-api-key": API_KEY}
        while (item := self.due.get()) is not None:
            i, at = item
            try:
                conn.request("POST", PATH, self.payloads[i], headers)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException):
                conn.close()
                status = 0  # no answer: not accepted
            with self.lock:
                self.results.append((i, time.perf_counter() - at, status))


def count(db: Path, sql: str) -> int:
    try:
        with sqlite3.connect(db, timeout=30) as conn:
            return conn.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:  # the warehouse table comes with the first delivery
        return 0


def measure(args) -> dict:
    work = Path(tempfile.mkdtemp(prefix="s360bench-open-"))
    try:
        backend = Backend.sqlite(work)
        backend.write_config("FULL")
        port = free_port()
        server = start([args.s360bridge, "--log-level", "WARNING", "run", "-c",
                        str(backend.config), "--port", str(port)], backend.env(), work,
                       work / "run.log")
        _wait_ready(port, server)
        payloads = bodies(int(args.rate * args.seconds), args.records)
        load = OpenLoop(port, payloads, args.rate, args.connections)
        before = os.getloadavg()[0]
        seconds = load.run()
        loadavg = (before, os.getloadavg()[0])
        engine, warehouse = backend.folder / "engine.db", backend.folder / "warehouse.db"
        accepted = sum(args.records for _, _, s in load.results if s == 200)
        backlog = accepted - count(warehouse, "SELECT count(*) FROM ticket_checks")
        drained_at = time.perf_counter()
        deadline = drained_at + args.drain_timeout
        while (delivered := count(warehouse, "SELECT count(*) FROM ticket_checks")) < accepted \
                and time.perf_counter() < deadline:
            time.sleep(0.2)
        drain = time.perf_counter() - drained_at
        keys = count(warehouse, "SELECT count(DISTINCT check_key) FROM ticket_checks")
        pending = count(engine, "SELECT count(*) FROM queue")
        stop(server)
        log = (work / "run.log").read_text()
        acks = sorted(a for _, a, s in load.results if s == 200)
        return {"posts": len(payloads), "seconds": seconds, "accepted": accepted,
                "refused": sum(1 for _, _, s in load.results if s != 200),
                "p50": _pct(acks, 0.50), "p99": _pct(acks, 0.99), "max": acks[-1] if acks else 0,
                "backlog": backlog, "drain": drain, "delivered": delivered, "keys": keys,
                "pending": pending, "loadavg": loadavg, "work": work,
                "errors": log.count("ERROR") + log.count("Traceback")}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


def _wait_ready(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"s360bridge run exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit("s360bridge run not ready after 60 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100, help="POSTs a second")
    parser.add_argument("--records", type=int, default=50, help="ticket checks a POST")
    parser.add_argument("--seconds", type=float, default=60, help="how long the load lasts")
    parser.add_argument("--connections", type=int, default=64,
                        help="client connections (a POST waits for a free one, and that "
                             "wait counts in its acknowledgement time)")
    parser.add_argument("--drain-timeout", type=float, default=300)
    parser.add_argument("--s360bridge", default=str(BIN / "s360bridge"),
                        help="the command to measure (another checkout's, for a before/after)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    r = measure(args)
    offered = args.rate * args.records
    print(f"offered {offered:,.0f} records/s ({args.rate:g} POSTs of {args.records} a second) "
          f"for {r['seconds']:.1f} s: {r['posts']} POSTs, {r['refused']} not answered 200; "
          "load average %.1f before, %.1f after (2 cores shared)" % r["loadavg"])
    print(f"accepted {r['accepted']:,} records, {r['accepted'] / r['seconds']:,.0f} records/s; "
          f"acknowledgement p50 {r['p50'] * 1000:.1f} ms, p99 {r['p99'] * 1000:.1f} ms, "
          f"max {r['max'] * 1000:.1f} ms")
    print(f"backlog when the load stopped: {r['backlog']:,} records; drained in "
          f"{r['drain']:.1f} s; delivered {r['delivered']:,} ({r['keys']:,} distinct), "
          f"{r['pending']} left pending; {r['errors']} error lines in the log")
    if args.keep:
        print(f"work folder kept: {r['work']}")
    if r["delivered"] != r["accepted"] or r["keys"] != r["accepted"] or r["errors"]:
        sys.exit("ERROR: not every accepted record was delivered exactly once")


if __name__ == "__main__":
    main()
