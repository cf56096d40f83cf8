"""`s360bridge worker` processes that each count their metrics in a folder of their own, for
the election's tests (tests/test_election.py): a job that ran in one leaves its success there."""

from __future__ import annotations

import struct
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from s360bridge.core.instruments import MULTIPROC_ENV

from .processes import start


class Worker:
    """`s360bridge worker` counting its metrics in a folder of its own."""

    def __init__(self, config: Path, name: str, *options: str):
        self.metrics = config.parent / f"metrics-{name}"
        self.metrics.mkdir()
        self.log = config.parent / f"{name}.log"
        self.proc = start(["worker", "-c", str(config), *options], self.log,
                          env={MULTIPROC_ENV: str(self.metrics)})

    def said(self, text: str) -> int:
        return self.log.read_text().count(text) if self.log.exists() else 0

    def ran_purge(self) -> bool:
        """Whether the retention purge, a job every scheduler runs when it starts, succeeded
        in this process."""
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.metrics))
        try:
            return registry.get_sample_value("s360bridge_job_last_success_timestamp_seconds",
                                             {"name": "purge"}) is not None
        except struct.error:  # a file of the process read as it was created, still empty
            return False
