"""Benchmark: reconcile a million records a side, against a dict diff and a pandas merge.

Two CSV files of orders: S-360's export (amounts in currency units, local times without a
zone) and the target's side (amounts in thousandths, UTC times), with 1% of the records changed
and 0.5% missing on each side. Each contender runs in a process of its own, which reports its
seconds and peak RSS, and must find the same differences:

* s360bridge: ``core.reconcile.compare`` (DuckDB), as ``s360bridge reconcile`` runs it;
* a plain Python dictionary diff (csv module), normalising the same way;
* a pandas merge of the same files, normalising the same way.

Seconds are the work's, after the imports (about 0.7 s for s360bridge, 0.3 s for pandas); peak
RSS is the whole process's.

    python bench/reconcile.py                 # 1,000,000 a side (needs pandas: .[bench])
    python bench/reconcile.py --records 100000
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

ZONE = "Europe/Zurich"
STATES = ["CLOSED", "CLOSED", "CLOSED", "ABANDONED"]
TYPES = ["SALE", "SALE", "REFUND_CLIENT", "RESERVATION"]


def make_files(folder: Path, n: int, seed: int = 1) -> tuple[Path, Path, dict]:
    rnd = random.Random(seed)
    zone = ZoneInfo(ZONE)
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    ids = list(range(10_000_000_000, 10_000_000_000 + n))
    only_target = set(rnd.sample(ids, n // 200))
    rest = [i for i in ids if i not in only_target]
    only_s360 = set(rnd.sample(rest, n // 200))
    changed = set(rnd.sample([i for i in rest if i not in only_s360], n // 100))
    s360_path, target_path = folder / "s360.csv", folder / "target.csv"
    with s360_path.open("w", newline="") as fs, target_path.open("w", newline="") as ft:
        s, t = csv.writer(fs), csv.writer(ft)
        s.writerow(["orderId", "orderState", "orderType", "saleAmount", "creationDateTime",
                    "contactReference"])
        t.writerow(["order_id", "state", "type", "sale_amount", "created", "contact_number"])
        for i in ids:
            when = start + dt.timedelta(seconds=rnd.randint(0, 300 * 86400))
            amount = rnd.randint(1, 500) * 1000
            row = [rnd.choice(STATES), rnd.choice(TYPES), amount, when,
                   f"{rnd.randint(0, 9_999_999):07d}"]
            if i not in only_target:
                s.writerow([i, row[0], row[1], str(Decimal(amount) / 1000),
                            when.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"), row[4]])
            if i not in only_s360:
                target_amount = amount + 1000 if i in changed else amount
                t.writerow([i, row[0], row[1], target_amount,
                            when.strftime("%Y-%m-%d %H:%M:%S"), row[4]])
    expected = {"missing_in_target": len(only_s360), "missing_in_s360": len(only_target),
                "different": len(changed)}
    return s360_path, target_path, expected


def prepare_s360bridge():
    from s360bridge.core.operations.reconcile import Reconciliation, Side, compare  # noqa: F401
    from s360bridge.plugins.orders import COMPARED, KEY  # noqa: F401


def run_s360bridge(s360: Path, target: Path) -> dict:
    from s360bridge.core.operations.reconcile import Reconciliation, Side, compare
    from s360bridge.plugins.orders import COMPARED, KEY
    names = [KEY, *COMPARED]
    spec = Reconciliation(KEY, COMPARED, Side({f.name: f.name for f in names},
                                              "thousandths", "UTC"))
    s360_side = Side({f.name: f.s360_column for f in names}, "units", ZONE)
    report = s360.with_name("report.csv")
    summary = compare(spec, s360_side, s360, target, report)
    return summary.counts


def _epoch_local(text: str, zone: ZoneInfo) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=zone).timestamp())


def run_dict(s360: Path, target: Path) -> dict:
    zone, utc = ZoneInfo(ZONE), ZoneInfo("UTC")
    with s360.open(newline="") as f:
        left = {r["orderId"].strip(): (r["orderState"].strip(), r["orderType"].strip(),
                                       int(Decimal(r["saleAmount"]) * 1000),
                                       _epoch_local(r["creationDateTime"], zone),
                                       r["contactReference"].strip())
                for r in csv.DictReader(f)}
    counts = {"missing_in_target": 0, "missing_in_s360": 0, "different": 0}
    with target.open(newline="") as f:
        for r in csv.DictReader(f):
            k = r["order_id"].strip()
            mine = left.pop(k, None)
            if mine is None:
                counts["missing_in_s360"] += 1
                continue
            theirs = (r["state"].strip(), r["type"].strip(), int(r["sale_amount"]),
                      _epoch_local(r["created"], utc), r["contact_number"].strip())
            if mine != theirs:
                counts["different"] += 1
    counts["missing_in_target"] = len(left)
    return counts


def prepare_pandas():
    import pandas  # noqa: F401


def run_pandas(s360: Path, target: Path) -> dict:
    import pandas as pd
    left = pd.read_csv(s360, dtype=str)
    right = pd.read_csv(target, dtype=str)
    left = pd.DataFrame({
        "k": left["orderId"].str.strip(), "state": left["orderState"].str.strip(),
        "type": left["orderType"].str.strip(),
        "amount": (left["saleAmount"].astype(float) * 1000).round().astype("int64"),
        "when": pd.to_datetime(left["creationDateTime"]).dt.tz_localize(
            ZONE, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC"),
        "who": left["contactReference"].str.strip()})
    right = pd.DataFrame({
        "k": right["order_id"].str.strip(), "state": right["state"].str.strip(),
        "type": right["type"].str.strip(), "amount": right["sale_amount"].astype("int64"),
        "when": pd.to_datetime(right["created"]).dt.tz_localize("UTC"),
        "who": right["contact_number"].str.strip()})
    merged = left.merge(right, on="k", how="outer", indicator=True, suffixes=("_s", "_t"))
    both = merged[merged["_merge"] == "both"]
    differs = pd.Series(False, index=both.index)
    for c in ("state", "type", "amount", "when", "who"):
        differs |= both[f"{c}_s"] != both[f"{c}_t"]
    return {"missing_in_target": int((merged["_merge"] == "left_only").sum()),
            "missing_in_s360": int((merged["_merge"] == "right_only").sum()),
            "different": int(differs.sum())}


CONTENDERS = {"s360bridge (DuckDB)": run_s360bridge, "dict diff (csv module)": run_dict,
              "pandas merge": run_pandas}
PREPARE = {"s360bridge (DuckDB)": prepare_s360bridge, "pandas merge": prepare_pandas}


def child(name: str, s360: str, target: str) -> None:
    PREPARE.get(name, lambda: None)()  # imports are not timed, for any contender
    started = time.perf_counter()
    counts = CONTENDERS[name](Path(s360), Path(target))
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mib": peak, "counts": counts}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        s360, target, expected = make_files(Path(tmp), args.records)
        print(f"{args.records:,} records a side written in {time.perf_counter() - started:.1f}"
              f" s; expected differences {expected}", flush=True)
        results = {}
        for name in CONTENDERS:
            out = subprocess.run([sys.executable, __file__, "--child", name, str(s360),
                                  str(target)], capture_output=True, text=True, check=True)
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])
            r = results[name]
            ok = "same differences" if r["counts"] == expected else f"WRONG {r['counts']}"
            print(f"  {name:<24} {r['seconds']:6.2f} s  peak RSS {r['peak_mib']:6.0f} MiB  "
                  f"{ok}", flush=True)
        ours, pandas = results["s360bridge (DuckDB)"], results["pandas merge"]
        print(f"s360bridge vs pandas: {pandas['seconds'] / ours['seconds']:.1f}x faster, "
              f"{ours['peak_mib'] / pandas['peak_mib']:.2f} of its peak memory")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:5])
    else:
        sys.exit(main())
