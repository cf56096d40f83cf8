"""gunicorn's settings for the receiver's metrics, used as
``gunicorn -c python:s360bridge.core.gunicorn_conf``. With ``PROMETHEUS_MULTIPROC_DIR`` set for
every process of the bridge, the master empties that folder of stopped processes' files when it
starts, and tells prometheus-client of each web worker that exits (core/instruments.py).
Without the variable they do nothing."""

from __future__ import annotations

import os
from pathlib import Path

from s360bridge.core.instruments import MULTIPROC_ENV, check_dir, clear


def on_starting(server) -> None:
    if os.environ.get(MULTIPROC_ENV):
        check_dir()
        clear(Path(os.environ[MULTIPROC_ENV]))


def child_exit(server, worker) -> None:
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
