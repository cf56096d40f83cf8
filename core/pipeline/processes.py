"""Process roles: receiver (waitress), workers, the scheduler and the operator listener, with a
clean SIGTERM; ``s360bridge run`` runs each as a process of its own under its supervisor
(core/pipeline/supervisor.py: a server and a busy worker sharing one interpreter's GIL delay
every acknowledgement)."""

from __future__ import annotations

import dataclasses
import logging
import signal
import socket
import threading

import schedule
from sqlalchemy.exc import DBAPIError

from s360bridge.core import instruments
from s360bridge.core.bridge import Bridge
from s360bridge.core.errors import S360BridgeError
from s360bridge.core.garbage import freeze_startup
from s360bridge.core.operator.app import create_operator_app
from s360bridge.core.pipeline.election import Election, one_line
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
OPERATOR_THREADS = 4  # an operator, Prometheus: a few requests at a time
# its forms are small: a body of more is refused (413) before it is read, whoever sends it
OPERATOR_LIMITS = Limits(connection_limit=100, max_body_bytes=64 * 1024)


def run_scheduler(bridge: Bridge, stop: threading.Event, election: Election | None = None) -> None:
    """Run the plugins' periodic jobs until ``stop``, while this process is the scheduler
    (core/pipeline/election.py): each once when it first becomes the scheduler (a cache is
    warm, a failing job shows at once), then at its interval, counted on when this process
    last ran it (elected again, it runs those that are due); none starts unless the lock is
    still held right then. A failing job is logged, not fatal, and so is a failing round of the
    election: the lock is let go and tried again (logged once until a round goes well)."""
    election = election or Election.of(bridge)
    scheduler = None
    failures: set[str] = set()  # the kinds of failure logged since the last good round
    try:
        while not stop.is_set():
            try:
                if not election.leads():
                    stop.wait(election.retry)
                    continue
                if scheduler is None:
                    scheduler = _scheduled(bridge, election)
                    scheduler.run_all()
                scheduler.run_pending()
                failures.clear()  # a later failure is news again
            except Exception as exc:  # the election's database, a bug: never the end of it
                if type(exc).__name__ not in failures:
                    failures.add(type(exc).__name__)
                    log.error("the scheduler failed, lets its lock go and tries again every "
                              "%gs: %s: %s", election.retry, type(exc).__name__, one_line(exc))
                election.release()
                stop.wait(election.retry)
                continue
            idle = scheduler.idle_seconds
            stop.wait(1.0 if idle is None else min(max(idle, 0.05), 1.0))
    finally:
        election.release()


def _scheduled(bridge: Bridge, election: Election) -> schedule.Scheduler:
    scheduler = schedule.Scheduler()
    for name, every, func in bridge.hooks.jobs(bridge):
        scheduler.every(every).seconds.do(_guarded, name, func, election)
        instruments.job_scheduled(name, every)
        log.info("job %s every %gs", name, every)
    return scheduler


def _guarded(name, func, election: Election) -> None:
    if not election.holds():  # lost since the last check: another process may run it now
        return
    try:
        func()
    except (S360BridgeError, DBAPIError) as exc:  # said in words: S-360 or a database down
        log.error("job %s failed: %s", name, exc)
    except Exception:  # a bug: its traceback
        log.exception("job %s failed", name)
    else:
        instruments.job_succeeded(name)


class Process:
    """One s360bridge process: any mix of receiver, workers, scheduler and operator listener.
    The receiver listens on ``sock`` when given (a socket the supervisor opened), else on
    ``host``:``port``; the operator listener on ``operator``, when given."""

    def __init__(self, bridge: Bridge, receiver: bool, workers: int, scheduler: bool,
                 host: str = "127.0.0.1", port: int = 8360, threads: int = 8,
                 limits: Limits | None = None, sock: socket.socket | None = None,
                 operator: socket.socket | None = None):
        self.bridge = bridge
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.server = None
        self.servers: dict[str, GuardedServer] = {}  # by role: receiver, operator
        self._loops: dict[str, threading.Thread] = {}  # their I/O loops
        if receiver:  # waitress reads no more of a body than the receiver would take
            limits = dataclasses.replace(limits or Limits(),
                                         max_body_bytes=bridge.settings.engine.max_body_bytes)
            self.server = self.servers["receiver"] = GuardedServer(
                create_app(bridge), sock or listen(host, port), threads, limits,
                allowed_networks(bridge))
        if operator is not None:  # localhost by default: no institution's allowed_sources
            self.servers["operator"] = GuardedServer(create_operator_app(bridge), operator,
                                                     OPERATOR_THREADS, OPERATOR_LIMITS, None)
        for i in range(workers):
            self.threads.append(threading.Thread(target=Worker(bridge).run, args=(self.stop,),
                                                 name=f"worker-{i}"))
        if scheduler:
            self.threads.append(threading.Thread(target=run_scheduler, args=(bridge, self.stop),
                                                 name="scheduler"))

    @property
    def url(self) -> str:
        return self.url_of("receiver")

    def url_of(self, role: str) -> str:
        host, port = self.servers[role].socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        for t in self.threads:
            t.start()
        for role, server in self.servers.items():
            self._loops[role] = threading.Thread(target=server.run, name=role, daemon=True)
            self._loops[role].start()
            log.info("%s listening on %s", role, self.url_of(role))

    def shutdown(self) -> None:
        """Finish in-flight requests and the batches in hand, then release the databases."""
        log.info("stopping: finishing in-flight work")
        self.stop.set()
        for role, loop in self._loops.items():
            stop_serving(self.servers[role], loop, timeout=10)
        for t in self.threads:
            t.join()
        self.bridge.close()
        log.info("stopped")

    def serve_forever(self) -> None:
        """Run until SIGTERM or SIGINT, then shut down cleanly; what the process built to
        start is left out of the garbage collector's walks (core/garbage.py)."""
        signal.signal(signal.SIGTERM, lambda *_: self.stop.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop.set())
        freeze_startup()
        self.start()
        self.stop.wait()
        self.shutdown()
