"""The console's overview, read from what ``/metrics`` shows (core/operator/metrics.py): the
counters every process keeps and the database's gauges, so that the page and Prometheus never
disagree and the page costs no more than a scrape (no read of the whole inbox)."""

from __future__ import annotations

import time
from collections import defaultdict


def _tree():
    return defaultdict(_tree)


def figures(bridge, registry) -> dict:
    """Per institution: ``streams`` (received by outcome, dead letters, quarantined),
    ``targets`` (delivered, retried, dead, backlog, oldest pending age), ``calls_left`` per
    method and ``month_left``; and ``jobs`` (name -> last success, interval)."""
    found = _tree()
    jobs: dict = defaultdict(dict)
    for family in registry.collect():
        for sample in family.samples:
            _take(found, jobs, sample.name, sample.labels, sample.value)
    now = time.time()
    out: dict = {"institutions": {}, "jobs": {}, "database_up": bool(found[None].get("up"))}
    for code, inst in sorted(bridge.settings.institutions.items()):
        seen = found[code]
        out["institutions"][code] = {
            "streams": {name: {
                "received": {k: int(v) for k, v in seen["received"][name].items()},
                "dead_letters": int(seen["dead"].get(name, 0)),
                "quarantined": int(seen["held"].get(name, 0))} for name in sorted(inst.streams)},
            "targets": {name: {
                "delivered": {k: int(v) for k, v in seen["delivered"][name].items()},
                "backlog": int(seen["backlog"].get(name, 0)),
                "oldest_age": seen["age"].get(name, 0.0)} for name in sorted(inst.targets)},
            "calls_left": dict(sorted(seen["calls_left"].items())),
            "month_left": seen.get("month_left"),
        }
    for name, job in sorted(jobs.items()):
        last = job.get("last")
        out["jobs"][name] = {"every": job.get("every"),
                             "ago": None if last is None else max(0.0, now - last),
                             "late": last is not None and job.get("every") is not None
                             and now - last > 2 * job["every"] + 60}
    return out


def _take(found, jobs, name: str, labels: dict, value: float) -> None:
    inst = labels.get("institution")
    if name == "s360bridge_engine_database_up":
        found[None]["up"] = value  # (no institution is None)
    elif name == "s360bridge_records_received_total":
        found[inst]["received"][labels["stream"]][labels["outcome"]] = value
    elif name == "s360bridge_deliveries_total":
        by = found[inst]["delivered"][labels["target"]]
        by[labels["outcome"]] = by.get(labels["outcome"], 0) + value  # over its streams
    elif name == "s360bridge_backlog_records":
        found[inst]["backlog"][labels["target"]] = value
    elif name == "s360bridge_oldest_pending_age_seconds":
        found[inst]["age"][labels["target"]] = value
    elif name == "s360bridge_dead_letter_records":
        found[inst]["dead"][labels["stream"]] = value
    elif name == "s360bridge_quarantined_records":
        found[inst]["held"][labels["stream"]] = value
    elif name == "s360bridge_s360_api_calls_left":
        found[inst]["calls_left"][labels["method"]] = int(value)
    elif name == "s360bridge_s360_api_month_calls_left":
        found[inst]["month_left"] = int(value)
    elif name == "s360bridge_job_last_success_timestamp_seconds":
        jobs[labels["name"]]["last"] = value
    elif name == "s360bridge_job_interval_seconds":
        jobs[labels["name"]]["every"] = value
