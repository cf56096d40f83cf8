"""``GET /metrics``: the Prometheus text format (or OpenMetrics, when asked for) of what every
process of the bridge counted (core/instruments.py) and of the database's gauges, read once
per scrape (core/operator/gauges.py).

Under ``PROMETHEUS_MULTIPROC_DIR`` the counters and histograms are the sums of every
process's files, and the jobs' gauges their maximum; without it, those of this process only.
prometheus_client is imported when the blueprint is made, in the process that serves it,
after that variable is set (``s360bridge run``, core/instruments.py).
"""

from __future__ import annotations

import glob
import os

from flask import Blueprint, Response, request

from s360bridge.core.instruments import MULTIPROC_ENV


def registry_for(bridge):
    """What ``/metrics`` shows: every process's instruments and the database's gauges (the
    console reads its overview from the same)."""
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    from s360bridge.core.operator.gauges import DatabaseGauges

    class WrittenFiles(MultiProcessCollector):
        """Every process's file but one caught between its creation and its first write:
        empty, prometheus_client would fail the whole scrape on it (struct.error)."""

        def collect(self):
            return self.merge([f for f in glob.glob(os.path.join(self._path, "*.db"))
                               if _size(f) >= 8], accumulate=True)

    registry = CollectorRegistry()
    if os.environ.get(MULTIPROC_ENV):
        WrittenFiles(registry)
    else:
        registry.register(REGISTRY)  # this process's instruments, and its own figures
    registry.register(DatabaseGauges(bridge))
    return registry


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:  # the file of a process that ended, removed meanwhile
        return 0


def metrics_blueprint(bridge) -> Blueprint:
    from prometheus_client.exposition import choose_encoder

    registry = registry_for(bridge)
    blueprint = Blueprint("metrics", __name__)

    @blueprint.get("/metrics")
    def metrics():
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return Response(encode(registry), headers={"Content-Type": content_type})

    return blueprint
