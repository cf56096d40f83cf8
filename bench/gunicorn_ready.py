"""gunicorn's configuration in the benchmarks (``-c bench/gunicorn_ready.py``): each worker
says when it has loaded the application, with a file named after its pid in the folder
``$BENCH_READY``, so that a phase starts once all are ready and counts their CPU time from
there, not their start-up's."""

import os
from pathlib import Path


def post_worker_init(worker):
    Path(os.environ["BENCH_READY"], str(worker.pid)).touch()
