"""The report of bench/run.py: every figure of a run, beside the ceiling measured in it."""

from __future__ import annotations


def _each(processes: list[dict], key: str) -> str:
    return ", ".join(f"{p[key]:g}" for p in processes)


def _usage(u: dict) -> list[str]:
    """What the processes of a phase used: CPU time and peak RSS per process, PostgreSQL's
    summed, and the cores they kept busy against the whole machine's."""
    lines, ours, seconds = [], 0.0, u["seconds"]
    for name in ("gunicorn", "workers"):
        if name in u:
            cpu = sum(p["cpu_s"] for p in u[name])
            ours += cpu
            lines.append(f"{name}: CPU s {_each(u[name], 'cpu_s')} ({cpu / seconds:.2f} cores), "
                         f"peak RSS MiB {_each(u[name], 'peak_rss_mib')}")
    if "postgresql" in u:
        pg = u["postgresql"]
        wal = f"WAL {pg['wal_bytes_per_record']} bytes per record"
        if "cpu_s" in pg:
            ours += pg["cpu_s"]
            lines.append(f"PostgreSQL: CPU {pg['cpu_s']} s ({pg['cpu_s'] / seconds:.2f} cores, "
                         f"{pg['cpu_ms_per_1000']} ms per 1,000 records), {wal}; peak "
                         f"{pg['peak_pss_mib']} MiB summed PSS ({pg['peak_rss_mib']} MiB "
                         f"summed RSS) in at most {pg['peak_processes']} processes")
        else:
            lines.append(f"PostgreSQL: {wal}")
    if "wrk_cpu_s" in u:
        ours += u["wrk_cpu_s"]
        lines.append(f"wrk: CPU {u['wrk_cpu_s']} s")
    lines.append(f"these {ours / seconds:.2f} cores of the {u['machine_busy_cores']} the "
                 f"machine kept busy ({u['machine_iowait_cores']} more idle, waiting for the "
                 "disk)")
    return lines


def _ingest_line(label: str, i: dict) -> str:
    return (f"  {label:<11}{i['records_per_s']:>8} records/s  p50 {i['p50_ms']} ms  "
            f"p99 {i['p99_ms']} ms  non-2xx {i['non_2xx']}")


def report(result: dict) -> int:
    """Print the figures; answer how many stored records never reached a warehouse."""
    counts = [c["workers"] for c in result["ceiling"]]
    workers = result["args"]["workers"]
    c = result["ceiling"][counts.index(workers) if workers in counts else 0]
    print(f"\ncommit {result['commit']}, {result['date']}, {result['cpus']} cores; every "
          f"figure is beside the ceiling measured in this run ({c['records_per_s']} records/s "
          f"with {c['workers']} gunicorn workers)")
    for k, g in enumerate(counts):
        print(f"ingest, {g} gunicorn worker(s):")
        for name, i in [("ceiling", result["ceiling"][k])] + [
                (name, r["ingest"][k]) for name, r in result["backends"].items()]:
            print(_ingest_line(name, i) + ("" if name == "ceiling" else
                                            f"; ratio to the ceiling {i['ratio_median']} "
                                            "(median of rounds; goal >= 0.6 on sqlite)"))
            for line in _usage({**i["used"], "wrk_cpu_s": i["wrk_cpu_s"]}):
                print(f"{'':13}{line}")
    lost = 0
    for name, r in result["backends"].items():
        print(f"{name}:")
        for e in r["drains"]:
            print(f"  drain    {e['records_per_s']:>8} records/s  ({e['records']} records in "
                  f"{e['seconds']} s, {e['workers']} worker(s); "
                  f"{e['records_per_s'] / c['records_per_s']:.2f} of the ceiling)")
            f = e["fill"]
            print(f"  backlog  the oldest record had waited {e['oldest_age_at_start_s']} s when "
                  f"the workers started, {e['oldest_age_max_s']} s at most during the drain"
                  + (f"; filled at {f['records_per_s']} records/s" if f else ""))
            print(f"  claims   {e['claims']}: mean {e['claim_ms_first_tenth']} ms over the "
                  f"first tenth, {e['claim_ms_last_tenth']} ms over the last")
            for line in _usage(e["used"]):
                print(f"           {line}")
            lost += e["expected"] - e["records"]
        if "settings" in r:
            print(f"  settings {r['settings']}")
    _ratios(result)
    if "flow" in result:
        f = result["flow"]
        print(f"flow      {f['records']} records in {f['seconds']} s; RSS first/last sample: "
              f"{f['samples'][0]} / {f['samples'][-1]}")
    if lost:
        print(f"ERROR: {lost} stored records never reached the warehouse")
    return lost


def _ratios(result: dict) -> None:
    """Scale-out: each count against the first, per backend; PostgreSQL against SQLite."""
    b = result["backends"]
    for name, r in b.items():
        first_in, first_out = r["ingest"][0], r["drains"][0]
        print(f"{name} scale-out: ingest " + ", ".join(
            f"{i['records_per_s'] / first_in['records_per_s']:.2f}x with {i['workers']}"
            for i in r["ingest"]) + " gunicorn workers; drain " + ", ".join(
            f"{d['records_per_s'] / first_out['records_per_s']:.2f}x with {d['workers']}"
            for d in r["drains"]) + " workers")
    if {"sqlite", "postgresql"} <= b.keys():
        s, p = b["sqlite"], b["postgresql"]
        print("postgresql / sqlite: ingest " + ", ".join(
            f"{x['records_per_s'] / y['records_per_s']:.2f} ({x['workers']} gunicorn)"
            for x, y in zip(p["ingest"], s["ingest"], strict=True)) + "; drain " + ", ".join(
            f"{x['records_per_s'] / y['records_per_s']:.2f} ({x['workers']} workers)"
            for x, y in zip(p["drains"], s["drains"], strict=True)) + " (goal >= 0.8 for both)")
