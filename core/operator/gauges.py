"""The gauges of the engine database, read once per scrape of ``/metrics`` by the process that
serves it (never kept per process, so never added up across processes): the backlog and the
age of its oldest record per target, dead letters and held quarantine per stream, what is left
of the S-360 call budget, whether a process is the scheduler (core/pipeline/election.py), and
the gauges plugins register (``register_gauges``).

Each statement reads an index, never the whole inbox: the backlog walks the queue (what is
pending, nothing else), probes the inbox and the deliveries by their primary keys, and adds
what waits for a paused target (the partial index of held deliveries, operations/pause.py); dead
letters read the partial index of dead versions (migration engine_0008), the quarantine its
index of (institution, stream, state), the call log its index of (bucket, time).
tests/test_metrics_gauges.py checks the plans on SQLite and PostgreSQL.
"""

from __future__ import annotations

import logging
import time

from prometheus_client.core import GaugeMetricFamily
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from s360bridge.core.errors import PluginError, StoreUnavailable
from s360bridge.core.operations import pause
from s360bridge.core.pipeline import election
from s360bridge.core.s360 import quota
from s360bridge.core.storage import deadline
from s360bridge.core.storage.rawsql import index_plans_only, run

log = logging.getLogger("s360bridge.operator")

# Per stream: queued records and the arrival of the oldest. Per stream and target: queued
# records a target has already, or holds apart (those delivered to some targets only, or held
# for a paused target while another retries: counted with the held, never twice). The
# arrival of the first queued record of some streams that a target does not have yet. Each
# walks the queue and probes the inbox and the deliveries by primary key: on SQLite a CROSS
# JOIN keeps that order, on PostgreSQL a LATERAL (and a NOT EXISTS) that is not flattened
# (OFFSET 0), else a merge join walks the inbox's whole primary key, or the deliveries of
# every record that ever failed.
BACKLOG = {
    "sqlite": """SELECT i.institution, i.stream, count(*), min(i.received_at)
        FROM queue q CROSS JOIN inbox i WHERE i.id = q.id GROUP BY i.institution, i.stream""",
    "postgresql": """SELECT i.institution, i.stream, count(*), min(i.received_at) FROM queue q,
        LATERAL (SELECT institution, stream, received_at FROM inbox WHERE id = q.id OFFSET 0)
            AS i GROUP BY i.institution, i.stream""",
}
DONE = {
    "sqlite": """SELECT i.institution, i.stream, d.target, count(*)
        FROM queue q CROSS JOIN delivery d CROSS JOIN inbox i
        WHERE d.inbox_id = q.id AND d.state IN ('done', 'held') AND i.id = q.id
        GROUP BY i.institution, i.stream, d.target""",
    "postgresql": """SELECT i.institution, i.stream, d.target, count(*) FROM queue q,
        LATERAL (SELECT target FROM delivery WHERE inbox_id = q.id
                 AND state IN ('done', 'held') OFFSET 0) AS d,
        LATERAL (SELECT institution, stream FROM inbox WHERE id = q.id OFFSET 0) AS i
        GROUP BY i.institution, i.stream, d.target""",
}
_NOT_DONE = """NOT EXISTS (SELECT 1 FROM delivery d WHERE d.inbox_id = q.id AND d.target = ?
    AND d.state IN ('done', 'held'){}) ORDER BY q.id LIMIT 1"""
OLDEST_FOR = {
    "sqlite": f"""SELECT i.received_at FROM queue q CROSS JOIN inbox i
        WHERE i.id = q.id AND q.institution = ? AND i.stream IN ?texts
        AND {_NOT_DONE.format("")}""",
    "postgresql": f"""SELECT i.received_at FROM queue q,
        LATERAL (SELECT stream, received_at FROM inbox WHERE id = q.id OFFSET 0) AS i
        WHERE q.institution = ? AND i.stream IN ?texts
        AND {_NOT_DONE.format(" OFFSET 0")}""",
}
DEAD = """SELECT institution, stream, count(*) FROM inbox WHERE state = 'dead'
    GROUP BY institution, stream"""
HELD = """SELECT institution, stream, count(*) FROM quarantine WHERE state = 'held'
    GROUP BY institution, stream"""
# an institution's buckets ("{code}/{service}.{method}"; a share's have one more part): the
# calls of the current window
CALLS = """SELECT bucket, sum(CASE WHEN at_ms >= ? THEN 1 ELSE 0 END) FROM s360_call_log
    WHERE bucket >= ? AND bucket < ? GROUP BY bucket"""


class DatabaseGauges:
    """A prometheus-client collector: the database's gauges, read when collected."""

    def __init__(self, bridge):
        self.bridge = bridge
        self.plugin_gauges = bridge.hooks.gauges(bridge)
        taken = {f.name for f in _families().values()}
        for name, *_ in self.plugin_gauges:
            if name in taken:
                raise PluginError(f"register_gauges: {name} is a gauge of s360bridge itself")

    def collect(self):
        families = _families()
        up = GaugeMetricFamily("s360bridge_engine_database_up", "Whether the last scrape "
                               "could read the engine database (1) or not (0)")
        try:
            with deadline.within(self.bridge.settings.engine.request_timeout_seconds):
                self._read(families)
        except (DBAPIError, PoolTimeout, StoreUnavailable) as exc:
            log.warning("/metrics: the engine database could not be read: %s",
                        type(exc).__name__)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        return [up, *families.values(), *self._plugins()]

    def _read(self, families: dict) -> None:
        settings, now = self.bridge.settings, time.time()
        with self.bridge.engine.connect() as conn:
            index_plans_only(conn)
            dialect = conn.dialect.name
            sql = {name: run(conn, statement) for name, statement in
                   (("backlog", BACKLOG[dialect]), ("done", DONE[dialect]), ("dead", DEAD),
                    ("held", HELD))}
            streams = {(inst, stream): (n, oldest) for inst, stream, n, oldest in sql["backlog"]}
            done = {(inst, stream, target): n for inst, stream, target, n in sql["done"]}
            held = pause.held(conn)  # out of the queue while their target is paused
            for inst in settings.institutions.values():
                for target in inst.targets:
                    fed = sorted(name for name, cfg in inst.streams.items()
                                 if target in cfg.targets)
                    count = sum(streams.get((inst.code, s), (0, 0))[0]
                                - done.get((inst.code, s, target), 0) for s in fed)
                    oldest = _oldest(conn, inst.code, target, fed, streams, done)
                    waiting, since = held.get((inst.code, target), (0, None))
                    count += waiting
                    if since is not None:
                        oldest = since if oldest is None else min(oldest, since)
                    families["backlog"].add_metric([inst.code, target], count)
                    families["age"].add_metric(
                        [inst.code, target], 0 if oldest is None else max(0.0, now - oldest))
                if inst.s360_api is not None:
                    self._budget(conn, inst, now, families)
        try:
            families["scheduler"].add_metric([], 0 if election.holder(self.bridge) is None else 1)
        except election.Unknown:  # a standby: the primary's operator listener says it
            pass
        for key, rows in (("dead", sql["dead"]), ("held", sql["held"])):
            found = {(inst, stream): n for inst, stream, n in rows}
            for inst in settings.institutions.values():
                for stream in inst.streams:
                    found.setdefault((inst.code, stream), 0)
            for (inst, stream), n in sorted(found.items()):
                families[key].add_metric([inst, stream], n)

    def _budget(self, conn, inst, now: float, families: dict) -> None:
        api = inst.s360_api
        window_start = int((now - api.window_seconds) * 1000)
        for bucket, calls in run(conn, CALLS, (window_start, f"{inst.code}/", f"{inst.code}0")):
            where = bucket.split("/")
            if len(where) == 2:  # the institution's own budget, not a caller's share
                families["calls_left"].add_metric([inst.code, where[1].rsplit(".", 1)[-1]],
                                                  max(0, api.calls_per_minute - calls))
        if api.monthly_calls:
            families["month_left"].add_metric(
                [inst.code], quota.left(self.bridge.engine, inst.code, now, api.monthly_calls))

    def _plugins(self):
        for name, help_, labels, read in self.plugin_gauges:
            family = GaugeMetricFamily(name, help_, labels=labels)
            try:
                for values, value in read():
                    family.add_metric([str(v) for v in values], float(value))
            except Exception:  # a plugin's gauge missing, not the whole scrape
                log.exception("/metrics: the gauge %s could not be read", name)
                continue
            yield family


def _oldest(conn, code: str, target: str, fed: list[str], streams: dict,
            done: dict) -> float | None:
    """The arrival of the oldest record queued for ``target``: that of its streams, unless the
    target has some of their queued records already (then the first it lacks)."""
    if not any(done.get((code, s, target)) for s in fed):
        found = [streams[(code, s)][1] for s in fed if (code, s) in streams]
        return min(found, default=None)
    rows = run(conn, OLDEST_FOR[conn.dialect.name], (code, fed, target))
    return rows[0][0] if rows else None


def _families() -> dict[str, GaugeMetricFamily]:
    return {
        "backlog": GaugeMetricFamily("s360bridge_backlog_records", "Records waiting for "
                                     "delivery to a target", labels=("institution", "target")),
        "age": GaugeMetricFamily("s360bridge_oldest_pending_age_seconds", "Age of the oldest "
                                 "record waiting for a target (0: none)",
                                 labels=("institution", "target")),
        "dead": GaugeMetricFamily("s360bridge_dead_letter_records", "Dead letters held "
                                  "(s360bridge replay re-queues them)",
                                  labels=("institution", "stream")),
        "held": GaugeMetricFamily("s360bridge_quarantined_records", "Records held in the "
                                  "quarantine", labels=("institution", "stream")),
        "calls_left": GaugeMetricFamily(
            "s360bridge_s360_api_calls_left", "Calls left in the current window of the S-360 "
            "call budget, per method called in it", labels=("institution", "method")),
        "month_left": GaugeMetricFamily(
            "s360bridge_s360_api_month_calls_left", "Calls left this month in the plan's "
            "S-360 quota (s360_api.monthly_calls)", labels=("institution",)),
        "scheduler": GaugeMetricFamily(
            "s360bridge_scheduler_elected", "Whether a process is the scheduler and runs the "
            "periodic jobs (1), or none (0)"),
    }
