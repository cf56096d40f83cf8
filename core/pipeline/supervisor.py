"""The supervisor of ``s360bridge run``: each role (the receiver; the workers with the
scheduler) in a child process of its own, started again when it dies, all stopped cleanly on
SIGTERM.

The receiver and a busy worker in one interpreter share its GIL: every time a server thread
waits for the socket or the database, the worker keeps the interpreter up to a switch interval,
and the acknowledgements queue behind it (bench/README.md measures it). Children are forked
from the supervisor, which holds the listening socket: connections wait in its backlog while a
receiver starts again. A child that cannot start (configuration, database) stops them all with
exit status 2. If the supervisor itself is killed, its children see their lifeline pipe close
and stop as on SIGTERM; nothing is lost either way, since a 200 follows the commit and a dead
worker's leases expire.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait

from s360bridge.core.errors import S360BridgeError
from s360bridge.core.pipeline.processes import Process

log = logging.getLogger("s360bridge.supervisor")

START_FAILED = 2
RESTART_DELAY = 1.0  # a child that dies sooner than this after its start waits this long


@dataclass(frozen=True)
class Role:
    """What builds a role's Process (called in its child), and the child's niceness: a worker
    at a lower priority than the receiver leaves it the CPU when both want it."""

    build: Callable[[], Process]
    niceness: int = 0


class Supervisor:
    """Runs ``roles``, each in a child process, by name."""

    def __init__(self, roles: dict[str, Role], stop_timeout: float = 60):
        self.roles = roles
        self.stop_timeout = stop_timeout
        self.children: dict[str, multiprocessing.Process] = {}
        self.started: dict[str, float] = {}
        self.stopping = threading.Event()
        self.status = 0
        self._lifeline, self._lifeline_end = os.pipe()  # children close the end; EOF: we died
        self._fork = multiprocessing.get_context("fork")

    def serve_forever(self) -> int:
        """Run until SIGTERM or SIGINT, then stop every child cleanly; the exit status."""
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self.stopping.set())
        for name in self.roles:
            self._start(name)
        while not self.stopping.is_set():
            by_sentinel = {child.sentinel: name for name, child in self.children.items()}
            for sentinel in wait(list(by_sentinel), timeout=0.5):
                self._died(by_sentinel[sentinel])
        return self._stop_all()

    def _start(self, name: str) -> None:
        child = self._fork.Process(target=self._child, args=(name,), name=f"s360bridge {name}")
        child.start()
        self.children[name], self.started[name] = child, time.monotonic()
        log.info("%s started (pid %d)", name, child.pid)

    def _died(self, name: str) -> None:
        child = self.children[name]
        child.join()
        if self.stopping.is_set():  # a SIGTERM to the process group reached it first
            return
        if child.exitcode == START_FAILED:
            log.error("%s could not start (exit status 2): stopping", name)
            self.status = START_FAILED
            self.stopping.set()
            return
        log.error("%s (pid %d) exited with %s: starting it again", name, child.pid,
                  child.exitcode)
        if time.monotonic() - self.started[name] < RESTART_DELAY:
            self.stopping.wait(RESTART_DELAY)
        if not self.stopping.is_set():
            self._start(name)

    def _stop_all(self) -> int:
        for child in self.children.values():
            if child.is_alive():
                os.kill(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for name, child in self.children.items():
            child.join(max(0.0, deadline - time.monotonic()))
            if child.is_alive():
                log.error("%s did not stop within %gs: killed", name, self.stop_timeout)
                child.kill()
                child.join()
            if child.exitcode not in (0, -signal.SIGTERM) and not self.status:
                self.status = 1
        log.info("stopped")
        return self.status

    def _child(self, name: str) -> None:
        """In the child: build the role's Process, stop it when the supervisor dies."""
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # until the Process sets its own
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.close(self._lifeline_end)
        os.nice(self.roles[name].niceness)
        try:
            process = self.roles[name].build()
        except S360BridgeError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            sys.exit(START_FAILED)
        threading.Thread(target=self._watch_lifeline, args=(process,), daemon=True,
                         name="lifeline").start()
        process.serve_forever()

    def _watch_lifeline(self, process: Process) -> None:
        os.read(self._lifeline, 1)  # returns at EOF only: the supervisor is gone
        log.error("the supervisor is gone: stopping")
        process.stop.set()
