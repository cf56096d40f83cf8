"""How long a claim takes on PostgreSQL beside another worker: with that worker's batch leased
before it in the queue, against nothing before it (a lone worker). Only the first must find the
older versions of its keys queued outside it (core/pipeline/supersede.py); with ``--backlog``
both must. The claims of the two
cases alternate on one filled inbox, in this one process: no contention for the cores, only the
statements' own work. "Beside": the batch claimed before is still leased; "alone": it was
completed first. The queue is vacuumed every ten claims, untimed, as workers do
(queue.tidy), so that neither case walks over a growing head of deleted rows. ``--backlog
N`` first sets the N oldest records waiting for a retry (a target down), before every claim.

    python bench/claims_beside.py --records 400000
    git worktree add /tmp/before 95e687c && python bench/claims_beside.py --source /tmp/before
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from processes import commit_of, reexec_with
from worker_parts import ROW, config


def fill(bridge, records: int, batch: int) -> None:
    from s360bridge.core.pipeline.ingest import ingest
    inst, stream = bridge.institution("bench"), bridge.stream("ticketchecks")
    for base in range(0, records, batch):
        ingest(bridge, inst, stream, [
            {"ticket_check_id": i, "movement_id": i + 7, "ticket_id": i + 9, "barcode": f"0{i}",
             **ROW} for i in range(10**11 + base, 10**11 + min(base + batch, records))])


def alternate(bridge, claims: int, size: int, backlog: int) -> dict[str, list[float]]:
    """Claim times in ms, per case: "beside" (another worker's batch leased before the claim)
    and "alone" (nothing before it)."""
    from s360bridge.core.pipeline.claims import claim
    from s360bridge.core.pipeline.queue import tidy

    def complete(c) -> None:
        with bridge.engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM queue WHERE id = ANY(%s)", (c.seqs,))

    if backlog:
        with bridge.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE queue SET next_attempt_at = 1e12 WHERE id IN "
                                 "(SELECT id FROM queue ORDER BY id LIMIT %s)", (backlog,))
    times: dict[str, list[float]] = {"beside": [], "alone": []}
    other = claim(bridge.engine, ["bench"], size, 600)
    for n in range(2 * claims):
        case = "beside" if n % 2 == 0 else "alone"
        if case == "alone":
            complete(other)
        started = time.perf_counter()
        made = claim(bridge.engine, ["bench"], size, 600)
        times[case].append((time.perf_counter() - started) * 1000)
        if len(made) < size:
            raise SystemExit(f"the inbox ran out after {n} claims: give more --records")
        if case == "beside":
            complete(other)
        other = made
        if n % 10 == 9:
            tidy(bridge.engine)
    return times


def measure(args) -> None:
    from backends import Backend
    from pgcluster import PrivateCluster

    from s360bridge.core.bridge import Bridge
    from s360bridge.core.config import load_settings

    os.environ["BENCH_API_KEY"] = "bench-key"
    os.environ["S360BRIDGE_LOAD_PLUGINS"] = "ticketchecks,sql,jsonl"
    work = Path(tempfile.mkdtemp(prefix="s360beside-"))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, work, True)
        cluster = None if args.postgres else stack.enter_context(PrivateCluster())
        backend = Backend.postgresql(work, cluster, args.postgres)
        bridge = Bridge(load_settings([config(backend, "FULL", args.batch_size, False)]),
                        schema="upgrade")
        stack.callback(bridge.close)
        size = bridge.settings.engine.claim_size("postgresql")
        started = time.perf_counter()
        fill(bridge, args.records, size)
        print(f"{args.records} records stored in {time.perf_counter() - started:.1f} s; "
              f"{args.claims} claims of {size} in each case"
              f"{f', {args.backlog} waiting for a retry before them' if args.backlog else ''}"
              " ...", flush=True)
        times = alternate(bridge, args.claims, size, args.backlog)
    source = os.environ.get("S360BESIDE_SOURCE", "this checkout")
    commit = commit_of(source)
    beside, alone = (statistics.median(times[c]) for c in ("beside", "alone"))
    print(f"{source} ({commit}): a claim beside another worker's batch {beside:.2f} ms, alone "
          f"{alone:.2f} ms (medians); beside / alone {beside / alone:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=400_000)
    ap.add_argument("--claims", type=int, default=80, help="claims measured in each case")
    ap.add_argument("--batch-size", type=int, help="engine.batch_size (default 2,000)")
    ap.add_argument("--backlog", type=int, default=0,
                    help="records waiting for a retry before every claim (default none)")
    ap.add_argument("--postgres", metavar="URL", help="a PostgreSQL database to use instead "
                                                       "of a private cluster")
    ap.add_argument("--source", type=Path, help="another checkout of s360bridge to measure")
    args = ap.parse_args()
    if args.source and "S360BESIDE_SOURCE" not in os.environ:
        reexec_with(__file__, args.source, "S360BESIDE_SOURCE")
    measure(args)


if __name__ == "__main__":
    main()
