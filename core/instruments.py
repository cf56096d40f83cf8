"""What every s360bridge process counts for ``GET /metrics`` (core/operator/metrics.py): records
received, receiver responses, deliveries and their latency, dead letters, S-360 API calls, and
the periodic jobs' last success.

The instruments are prometheus-client's, made on first use. Where ``PROMETHEUS_MULTIPROC_DIR``
is set, each process writes them to files of its own in that folder, and the operator
listener adds up every process's files; the variable must be set before prometheus_client is
imported, which is why nothing here imports it before an instrument is first used, and why
``s360bridge run`` sets it (``multiprocess_dir``) before it starts its children. Gauges of the
database are not here: the listener reads them once per scrape (core/operator/gauges.py).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# received -> delivered: from a fraction of a second to the hours of a target's outage
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)


class Instruments:
    """The counters, the histogram and the jobs' gauges, made once per process."""

    def __init__(self):
        import prometheus_client as prom

        prom.disable_created_metrics()  # as in multiprocess mode: no *_created beside each

        self.received = prom.Counter(
            "s360bridge_records_received", "Records received, by what became of them: "
            "accepted, duplicate, quarantined, before_cutoff, refused",
            ("institution", "stream", "outcome"))
        self.responses = prom.Counter(
            "s360bridge_receiver_responses", "Responses of the receiver (but health checks), "
            "by HTTP status code", ("code",))
        self.deliveries = prom.Counter(
            "s360bridge_deliveries", "Pushes of a record to a target, by outcome: delivered, "
            "retry (failed, tried again later), dead (a dead letter now)",
            ("institution", "stream", "target", "outcome"))
        self.dead_letters = prom.Counter(
            "s360bridge_dead_letters", "Records that became dead letters",
            ("institution", "stream"))
        self.latency = prom.Histogram(
            "s360bridge_delivery_latency_seconds", "From a record's arrival to its delivery to "
            "a target", ("institution", "target"), buckets=LATENCY_BUCKETS)
        self.s360_calls = prom.Counter(
            "s360bridge_s360_api_calls", "Calls to the S-360 APIs, by method and HTTP status "
            "code (unreachable: no answer)", ("institution", "method", "code"))
        self.job_success = prom.Gauge(
            "s360bridge_job_last_success_timestamp_seconds", "When each periodic job last "
            "succeeded (Unix time)", ("name",), multiprocess_mode="max")
        self.job_interval = prom.Gauge(
            "s360bridge_job_interval_seconds", "How often each periodic job runs", ("name",),
            multiprocess_mode="max")

_made: list[Instruments] = []
_lock = threading.Lock()


def instruments() -> Instruments:
    """The process's instruments, made by the first thread that asks (twice would register
    each name twice)."""
    if not _made:
        with _lock:
            if not _made:
                _made.append(Instruments())
    return _made[0]


def received(institution: str, stream: str, result) -> None:
    """What became of the records of one request (an IngestResult)."""
    counter = instruments().received
    for outcome, n in (("accepted", result.accepted), ("duplicate", result.duplicates),
                       ("quarantined", result.quarantined),
                       ("before_cutoff", result.before_cutoff)):
        if n:
            counter.labels(institution, stream, outcome).inc(n)


def refused(institution: str, stream: str, records: int) -> None:
    instruments().received.labels(institution, stream, "refused").inc(records)


def counted(wsgi_app):
    """``wsgi_app`` counting its responses by status code (an exception: 500), but those to
    health checks: a load balancer's probes would drown the webhooks' answers."""

    def app(environ, start_response):
        if environ.get("PATH_INFO", "").startswith("/health"):
            return wsgi_app(environ, start_response)

        def start(status, headers, exc_info=None):
            instruments().responses.labels(status.split(" ", 1)[0]).inc()
            return start_response(status, headers, exc_info)

        try:
            return wsgi_app(environ, start)
        except Exception:
            instruments().responses.labels("500").inc()
            raise

    return app


@dataclass
class Tally:
    """What the pushes of one claim did, counted once its completion is committed (``count``):
    per (institution, stream, target, outcome) pushes, the arrival times of the records each
    (institution, target) got, and the records per (institution, stream) that became dead
    letters."""

    pushes: Counter = field(default_factory=Counter)
    arrivals: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    dead: Counter = field(default_factory=Counter)

    def delivered(self, institution: str, stream: str, target: str, records) -> None:
        self.pushes[institution, stream, target, "delivered"] += len(records)
        self.arrivals.setdefault((institution, target), []).extend(
            r.received_at for r in records)

    def failed(self, institution: str, stream: str, targets, dead: bool) -> None:
        """A record the ``targets`` did not take: retried later, or ``dead`` now."""
        for target in targets:
            self.pushes[institution, stream, target, "dead" if dead else "retry"] += 1
        if dead:
            self.dead[institution, stream] += 1

    def count(self, now: float) -> None:
        m = instruments()
        for labels, n in self.pushes.items():
            if n:
                m.deliveries.labels(*labels).inc(n)
        for (institution, target), arrivals in self.arrivals.items():
            histogram = m.latency.labels(institution, target)
            for at in arrivals:
                histogram.observe(max(0.0, now - at))
        for labels, n in self.dead.items():
            m.dead_letters.labels(*labels).inc(n)


def s360_call(institution: str, method: str, code: str) -> None:
    instruments().s360_calls.labels(institution, method, code).inc()


def job_scheduled(name: str, every: float) -> None:
    instruments().job_interval.labels(name).set(every)


def job_succeeded(name: str) -> None:
    instruments().job_success.labels(name).set(time.time())


@contextmanager
def multiprocess_dir():
    """For ``s360bridge run``: the folder its processes count in, set in the environment for
    the children it forks. The one ``PROMETHEUS_MULTIPROC_DIR`` names is emptied of what
    stopped processes left (``clear``); without it, one is made and removed at the end."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before its multiprocess folder "
                           "was set")
    given = os.environ.get(MULTIPROC_ENV)
    folder = Path(given) if given else Path(tempfile.mkdtemp(prefix="s360bridge-metrics-"))
    if given:
        check_dir()
        clear(folder)
    os.environ[MULTIPROC_ENV] = str(folder)
    try:
        yield folder
    finally:
        if not given:
            del os.environ[MULTIPROC_ENV]
            shutil.rmtree(folder, ignore_errors=True)


def check_dir() -> None:
    """Stop a process whose ``PROMETHEUS_MULTIPROC_DIR`` is no folder it can write in."""
    from s360bridge.core.errors import ConfigError

    folder = os.environ.get(MULTIPROC_ENV)
    if folder is not None and not (os.path.isdir(folder) and os.access(folder, os.W_OK)):
        raise ConfigError(f"{MULTIPROC_ENV}={folder}: not a folder this process can write in "
                          "(the processes of the bridge count their metrics there)")


def clear(folder: Path) -> None:
    """Remove the files of processes that are gone: a new run counts from zero, while a
    process still running (a worker started before gunicorn) keeps its counts."""
    for file in folder.glob("*.db"):
        pid = file.stem.rsplit("_", 1)[-1]
        if not (pid.isdigit() and _running(int(pid))):
            file.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True
