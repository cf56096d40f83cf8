"""Process roles: receiver (waitress), workers and the scheduler, with a clean SIGTERM; and the
supervisor of ``s360bridge run``, which runs the receiver and the workers as processes of their
own (a server and a busy worker sharing one interpreter's GIL delay every acknowledgement)."""

from __future__ import annotations

import logging
import signal
import socket
import threading

import schedule

from s360bridge.core.bridge import Bridge
from s360bridge.core.pipeline.receiver import create_app
from s360bridge.core.pipeline.server import (
    GuardedServer,
    Limits,
    allowed_networks,
    listen,
    stop_serving,
)
from s360bridge.core.pipeline.worker import Worker

log = logging.getLogger("s360bridge.runner")


def run_scheduler(bridge: Bridge, stop: threading.Event) -> None:
    """Run the plugins' periodic jobs until ``stop``: each once at start (a cache is warm, a
    failing job shows at once), then at its interval; a failing job is logged, not fatal."""
    scheduler = schedule.Scheduler()
    for name, every, func in bridge.hooks.jobs(bridge):
        scheduler.every(every).seconds.do(_guarded, name, func)
        log.info("job %s every %gs", name, every)
    scheduler.run_all()
    while not stop.is_set():
        scheduler.run_pending()
        idle = scheduler.idle_seconds
        stop.wait(1.0 if idle is None else min(max(idle, 0.05), 1.0))


def _guarded(name, func) -> None:
    try:
        func()
    except Exception:
        log.exception("job %s failed", name)


class Process:
    """One s360bridge process: any mix of receiver, workers and scheduler. The receiver listens
    on ``sock`` when given (a socket the supervisor opened), else on ``host``:``port``."""

    def __init__(self, bridge: Bridge, receiver: bool, workers: int, scheduler: bool,
                 host: str = "127.0.0.1", port: int = 8360, threads: int = 8,
                 limits: Limits | None = None, sock: socket.socket | None = None):
        self.bridge = bridge
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.server = None
        self._loop: threading.Thread | None = None  # the receiver's I/O loop
        if receiver:
            self.server = GuardedServer(create_app(bridge), sock or listen(host, port), threads,
                                        limits or Limits(), allowed_networks(bridge))
        for i in range(workers):
            self.threads.append(threading.Thread(target=Worker(bridge).run, args=(self.stop,),
                                                 name=f"worker-{i}"))
        if scheduler:
            self.threads.append(threading.Thread(target=run_scheduler, args=(bridge, self.stop),
                                                 name="scheduler"))

    @property
    def url(self) -> str:
        host, port = self.server.socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        for t in self.threads:
            t.start()
        if self.server is not None:
            self._loop = threading.Thread(target=self.server.run, name="receiver", daemon=True)
            self._loop.start()
            log.info("receiver listening on %s", self.url)

    def shutdown(self) -> None:
        """Finish in-flight requests and the batches in hand, then release the databases."""
        log.info("stopping: finishing in-flight work")
        self.stop.set()
        if self._loop is not None:
            stop_serving(self.server, self._loop, timeout=10)
        for t in self.threads:
            t.join()
        self.bridge.close()
        log.info("stopped")

    def serve_forever(self) -> None:
        """Run until SIGTERM or SIGINT, then shut down cleanly."""
        signal.signal(signal.SIGTERM, lambda *_: self.stop.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop.set())
        self.start()
        self.stop.wait()
        self.shutdown()
