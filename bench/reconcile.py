"""Benchmark: reconcile a million records a side, against a dict diff and a pandas merge.

Two CSV files of orders: S-360's export (amounts in currency units, local times without a
zone) and the target's side (amounts in thousandths, UTC times), with 1% of the records changed
and 0.5% missing on each side. Each contender runs in a process of its own, which reports its
seconds and peak RSS, and must find the same differences:

* s360bridge: ``core.reconcile.compare`` (DuckDB), as ``s360bridge reconcile`` runs it;
* a plain Python dictionary diff (csv module), normalising the same way;
* a pandas merge of the same files, normalising the same way.

Seconds are the work's, after the imports (about 0.7 s for s360bridge, 0.3 s for pandas), in
wall time and in CPU time (all the process's threads: what a loaded machine's wall time hides);
peak RSS is the whole process's.

    python bench/reconcile.py                 # 1,000,000 a side (needs pandas: .[bench])
    python bench/reconcile.py --records 100000
    python bench/reconcile.py --files /var/tmp/reconcile   # written once, reused after
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
            # not the 300th day's last second: 02:00 local on 27 October, which the autumn
            # change makes ambiguous (a difference nobody seeded)
            when = start + dt.timedelta(seconds=rnd.randint(0, 300 * 86400 - 1))
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


FIELDS = [("state", "orderState", "state"), ("type", "orderType", "type"),
          ("sale_amount", "saleAmount", "sale_amount"),
          ("created", "creationDateTime", "created"),
          ("contact_number", "contactReference", "contact_number")]  # name, S-360, target
SHOWN_RAW = {"sale_amount", "created"}  # reports show these as found, texts as compared


def s360bridge_spec() -> dict:
    """The orders plugin's comparison, as plain data for the contender's process (which then
    imports the reconcile module only, not the plugin's SQLAlchemy tables)."""
    from s360bridge.plugins.orders import COMPARED, KEY
    return {"key": vars(KEY), "fields": [vars(f) for f in COMPARED]}


def prepare_s360bridge():
    from s360bridge.core.operations.reconcile import compare  # noqa: F401


def run_s360bridge(s360: Path, target: Path, report: Path, spec: dict) -> dict:
    from s360bridge.core.operations.reconcile import Field, Reconciliation, Side, compare
    key, fields = Field(**spec["key"]), [Field(**f) for f in spec["fields"]]
    names = [key, *fields]
    target_side = Side({f.name: f.name for f in names}, "thousandths", "UTC")
    s360_side = Side({f.name: f.s360_column for f in names}, "units", ZONE)
    summary = compare(Reconciliation(key, fields, target_side), s360_side, s360, target, report)
    return summary.counts


def _text(c: str) -> str:
    return (f"nullif(trim(CASE WHEN contains({c}, '  ') THEN regexp_replace({c}, '\\s+', ' ', "
            f"'g') ELSE {c} END), '')")


def _epoch(c: str, zone: str) -> str:
    v = f"trim({c})"
    local = f"try_cast({v} AS TIMESTAMP)"  # a UTC side needs no zone conversion
    return (f"floor(epoch(CASE WHEN right({v}, 1) = 'Z' OR substr({v}, -6, 1) IN ('+', '-') OR "
            f"substr({v}, -5, 1) IN ('+', '-') THEN try_cast({v} AS TIMESTAMPTZ) ELSE "
            f"{local if zone == 'UTC' else f'timezone({zone!r}, {local})'} END))")


PLAIN_QUERY = f"""
COPY (SELECT key, status, d.field AS field, d.s360_value AS s360_value,
        d.target_value AS target_value FROM (
  SELECT coalesce(s.k, t.k) AS key,
         CASE WHEN t.k IS NULL THEN 'missing_in_target' WHEN s.k IS NULL THEN 'missing_in_s360'
              ELSE 'different' END AS status,
         unnest(CASE WHEN s.k IS NULL OR t.k IS NULL
                THEN [{{'field': NULL, 's360_value': NULL, 'target_value': NULL, 'differs': true}}]
                ELSE [{", ".join(
                    f"{{'field': '{n}', 's360_value': s.{'raw_' if n in SHOWN_RAW else ''}{n}, "
                    f"'target_value': t.{'raw_' if n in SHOWN_RAW else ''}{n}, "
                    f"'differs': s.{n} IS DISTINCT FROM t.{n}}}" for n, _, _ in FIELDS)}] END) AS d
  FROM (SELECT trim(orderId) AS k, {_text("orderState")} AS state, {_text("orderType")} AS type,
          CAST(try_cast(replace(trim(saleAmount), ',', '') AS DECIMAL(18, 3)) * 1000 AS BIGINT)
            AS sale_amount, saleAmount AS raw_sale_amount,
          {_epoch("creationDateTime", ZONE)} AS created, creationDateTime AS raw_created,
          {_text("contactReference")} AS contact_number
        FROM read_csv($s360, all_varchar = true)) AS s
  FULL OUTER JOIN
       (SELECT trim(order_id) AS k, {_text("state")} AS state, {_text("type")} AS type,
          try_cast(trim(sale_amount) AS BIGINT) AS sale_amount, sale_amount AS raw_sale_amount,
          {_epoch("created", "UTC")} AS created, created AS raw_created,
          {_text("contact_number")} AS contact_number
        FROM read_csv($target, all_varchar = true)) AS t ON s.k = t.k
  WHERE s.k IS NULL OR t.k IS NULL OR {" OR ".join(
      f"s.{n} IS DISTINCT FROM t.{n}" for n, _, _ in FIELDS)})
WHERE d.differs ORDER BY key, field) TO $report (FORMAT CSV, HEADER)"""


def prepare_duckdb():
    import duckdb  # noqa: F401


def run_duckdb(s360: Path, target: Path, report: Path, spec: dict) -> dict:
    """The same comparison and report as one DuckDB query, written by hand for these files:
    the same normalisation (texts trimmed and collapsed, amounts to thousandths, times to UTC
    seconds honouring an offset), no views, no row counts, nothing kept between statements."""
    import duckdb
    con = duckdb.connect(config={"preserve_insertion_order": False})
    con.execute("SET TimeZone = 'UTC'")
    con.execute(PLAIN_QUERY, {"s360": str(s360), "target": str(target), "report": str(report)})
    return _counts(report)


def _counts(report: Path) -> dict:
    counts = {"missing_in_target": 0, "missing_in_s360": 0, "different": 0}
    with report.open(newline="") as f:
        for status, keys in _by_status(csv.DictReader(f)).items():
            counts[status] = len(keys)
    return counts


def _by_status(rows) -> dict[str, set]:
    found: dict[str, set] = {}
    for r in rows:
        found.setdefault(r["status"], set()).add(r["key"])
    return found


def _write(report: Path, rows) -> None:
    with report.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["key", "status", "field", "s360_value", "target_value"])
        out.writerows(rows)


def _epoch_local(text: str, zone: ZoneInfo) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=zone).timestamp())


def run_dict(s360: Path, target: Path, report: Path, spec: dict) -> dict:
    zone, utc = ZoneInfo(ZONE), ZoneInfo("UTC")
    with s360.open(newline="") as f:
        left = {r["orderId"].strip(): (
            (r["orderState"].strip(), r["orderType"].strip(),
             int(Decimal(r["saleAmount"]) * 1000), _epoch_local(r["creationDateTime"], zone),
             r["contactReference"].strip()),
            (r["orderState"].strip(), r["orderType"].strip(), r["saleAmount"],
             r["creationDateTime"], r["contactReference"].strip()))
            for r in csv.DictReader(f)}
    rows = []
    with target.open(newline="") as f:
        for r in csv.DictReader(f):
            k = r["order_id"].strip()
            mine = left.pop(k, None)
            if mine is None:
                rows.append((k, "missing_in_s360", None, None, None))
                continue
            shown = (r["state"].strip(), r["type"].strip(), r["sale_amount"], r["created"],
                     r["contact_number"].strip())
            theirs = (shown[0], shown[1], int(r["sale_amount"]), _epoch_local(r["created"], utc),
                      shown[4])
            rows += [(k, "different", name, mine[1][i], shown[i])
                     for i, (name, _, _) in enumerate(FIELDS) if mine[0][i] != theirs[i]]
    rows += [(k, "missing_in_target", None, None, None) for k in left]
    _write(report, rows)
    return _counts(report)


def prepare_pandas():
    import pandas  # noqa: F401


def run_pandas(s360: Path, target: Path, report: Path, spec: dict) -> dict:
    import pandas as pd
    left = pd.read_csv(s360, dtype=str)
    right = pd.read_csv(target, dtype=str)
    left = pd.DataFrame({
        "k": left["orderId"].str.strip(), "state": left["orderState"].str.strip(),
        "type": left["orderType"].str.strip(),
        "sale_amount": (left["saleAmount"].astype(float) * 1000).round().astype("int64"),
        "raw_sale_amount": left["saleAmount"],
        "created": pd.to_datetime(left["creationDateTime"]).dt.tz_localize(
            ZONE, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC"),
        "raw_created": left["creationDateTime"],
        "contact_number": left["contactReference"].str.strip()})
    right = pd.DataFrame({
        "k": right["order_id"].str.strip(), "state": right["state"].str.strip(),
        "type": right["type"].str.strip(), "sale_amount": right["sale_amount"].astype("int64"),
        "raw_sale_amount": right["sale_amount"],
        "created": pd.to_datetime(right["created"]).dt.tz_localize("UTC"),
        "raw_created": right["created"], "contact_number": right["contact_number"].str.strip()})
    merged = left.merge(right, on="k", how="outer", indicator=True, suffixes=("_s", "_t"))
    rows = [(k, "missing_in_target", None, None, None)
            for k in merged.loc[merged["_merge"] == "left_only", "k"]]
    rows += [(k, "missing_in_s360", None, None, None)
             for k in merged.loc[merged["_merge"] == "right_only", "k"]]
    both = merged[merged["_merge"] == "both"]
    for name, _, _ in FIELDS:
        shown = f"raw_{name}" if name in SHOWN_RAW else name
        differ = both[both[f"{name}_s"] != both[f"{name}_t"]]
        rows += [(k, "different", name, s, t) for k, s, t in zip(
            differ["k"], differ[f"{shown}_s"], differ[f"{shown}_t"], strict=True)]
    _write(report, rows)
    return _counts(report)


CONTENDERS = {"s360bridge (DuckDB)": run_s360bridge, "one DuckDB query": run_duckdb,
              "dict diff (csv module)": run_dict, "pandas merge": run_pandas}
PREPARE = {"s360bridge (DuckDB)": prepare_s360bridge, "one DuckDB query": prepare_duckdb,
           "pandas merge": prepare_pandas}


def files(folder: Path, n: int) -> tuple[Path, Path, dict]:
    """The two files of ``n`` records a side in ``folder``: written, or those written there
    before for ``n`` (their expected differences kept beside them)."""
    kept = folder / f"expected-{n}.json"
    if kept.exists():
        expected = json.loads(kept.read_text())
        print(f"{n:,} records a side from {folder}; expected differences {expected}",
              flush=True)
        return folder / "s360.csv", folder / "target.csv", expected
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("expected-*.json"):  # the files are about to be another size
        old.unlink()
    started = time.perf_counter()
    s360, target, expected = make_files(folder, n)
    kept.write_text(json.dumps(expected))
    print(f"{n:,} records a side written in {time.perf_counter() - started:.1f} s; "
          f"expected differences {expected}", flush=True)
    return s360, target, expected


def child(name: str, s360: str, target: str, report: str, spec: str) -> None:
    PREPARE.get(name, lambda: None)()  # imports are not timed, for any contender
    started, cpu = time.perf_counter(), time.process_time()
    counts = CONTENDERS[name](Path(s360), Path(target), Path(report), json.loads(spec))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "cpu": cpu, "peak_mib": peak, "counts": counts}))


def differences(report: Path) -> set[tuple]:
    """A report's rows as a set, a missing value and an empty one alike (as CSV writes both)."""
    with report.open(newline="") as f:
        return {tuple(r) for r in csv.reader(f)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=1,
                    help="runs of each contender, in turn; the least wall and CPU time count "
                         "and the highest peak RSS [1]")
    ap.add_argument("--skip", action="append", default=[], choices=list(CONTENDERS),
                    help="leave a contender out (e.g. the dict diff at ten million)")
    ap.add_argument("--files", type=Path,
                    help="keep the files in this folder and use them again when they are "
                         "there for --records (ten million take minutes to write)")
    args = ap.parse_args()
    names = [n for n in CONTENDERS if n not in args.skip]
    spec = json.dumps(s360bridge_spec())
    with tempfile.TemporaryDirectory() as tmp:
        s360, target, expected = files(args.files or Path(tmp), args.records)
        results: dict[str, dict] = {}
        for _ in range(args.runs):
            for i, name in enumerate(names):
                report = Path(tmp) / f"report-{i}.csv"
                out = subprocess.run([sys.executable, __file__, "--child", name, str(s360),
                                      str(target), str(report), spec],
                                     capture_output=True, text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                best = results.setdefault(name, r | {"report": report})
                best["seconds"] = min(best["seconds"], r["seconds"])
                best["cpu"] = min(best["cpu"], r["cpu"])
                best["peak_mib"] = max(best["peak_mib"], r["peak_mib"])
        rows = {name: differences(r["report"]) for name, r in results.items()}
        first = rows[names[0]]
        for name, r in results.items():
            ok = ("same differences" if r["counts"] == expected and rows[name] == first
                  else f"WRONG: counts {r['counts']}, {len(rows[name] ^ first)} rows unlike "
                       f"{names[0]}'s")
            print(f"  {name:<24} {r['seconds']:6.2f} s (CPU {r['cpu']:6.2f} s)  peak RSS "
                  f"{r['peak_mib']:6.0f} MiB  {ok} ({len(rows[name]) - 1:,} rows)", flush=True)
        ours = results["s360bridge (DuckDB)"]
        for name in ("one DuckDB query", "pandas merge"):
            if name in results:
                other = results[name]
                print(f"s360bridge vs {name}: {other['seconds'] / ours['seconds']:.2f}x as "
                      f"fast ({other['cpu'] / ours['cpu']:.2f}x in CPU time), "
                      f"{ours['peak_mib'] / other['peak_mib']:.2f} of its peak memory")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:7])
    else:
        sys.exit(main())
