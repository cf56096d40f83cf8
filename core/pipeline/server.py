"""The embedded HTTP server: waitress, guarded against idle and slow connections and against
addresses that no institution allows.

waitress reads each request in full in one I/O thread before a worker thread serves it, so idle
and slow connections hold no thread; they hold a place under the connection limit, which is
therefore large (the I/O loop uses poll(), not select(), to go beyond 1,024 descriptors), and
they are closed when idle for ``idle_timeout`` seconds or when a request is not complete
``read_timeout`` seconds after it started. A connection from an address outside the
``allowed_sources`` of every institution is closed when it is accepted, before anything is read.
"""

from __future__ import annotations

import ipaddress
import logging
import resource
import socket
import threading
from dataclasses import dataclass

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.server import BaseWSGIServer, TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

from s360bridge.core.bridge import Bridge
from s360bridge.core.errors import S360BridgeError
from s360bridge.core.pipeline.refusals import RefusalLog

log = logging.getLogger("s360bridge.server")


@dataclass(frozen=True)
class Limits:
    """What one client may hold of the embedded server (the CLI's --connection-limit,
    --idle-timeout and --read-timeout)."""

    connection_limit: int = 1000
    idle_timeout: int = 10
    read_timeout: int = 30
    # bytes of a request body waitress reads at most (beyond: 413, the rest never read)
    max_body_bytes: int = 1024 ** 3  # waitress's own default


def listen(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """A listening TCP socket on ``host``:``port``, or one clear error."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise S360BridgeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(backlog)
    return sock


def allowed_networks(bridge: Bridge) -> tuple | None:
    """The networks some institution allows, or None when one of them allows every address."""
    nets = []
    for inst in bridge.settings.institutions.values():
        if not inst.allowed_sources:
            return None
        nets.extend(inst.allowed_sources)
    return tuple(nets)


class GuardedServer(TcpWSGIServer):
    """waitress's TCP server on an already listening socket, with the two guards above."""

    def __init__(self, app, sock: socket.socket, threads: int, limits: Limits,
                 networks: tuple | None):
        self.networks = networks
        self.read_timeout = limits.read_timeout
        self.refusals = RefusalLog(log)
        adj = Adjustments(threads=threads, connection_limit=limits.connection_limit,
                          max_request_body_size=limits.max_body_bytes,
                          channel_timeout=limits.idle_timeout, cleanup_interval=1,
                          asyncore_use_poll=True, clear_untrusted_proxy_headers=True)
        dispatcher = ThreadedTaskDispatcher()
        dispatcher.set_thread_count(threads)
        _allow_descriptors(limits.connection_limit + threads + 64)
        super().__init__(app, {}, True, sock, dispatcher=dispatcher, adj=adj, bind_socket=False,
                         sockinfo=(sock.family, sock.type, sock.proto, sock.getsockname()))

    def accept(self):
        pair = super().accept()
        if pair is not None and not self.admits(pair[1][0]):
            pair[0].close()
            self.refusals.refused("connection outside allowed_sources", "connection from %s "
                                  "closed: outside the allowed_sources of every institution",
                                  pair[1][0])
            return None
        return pair

    def admits(self, address: str) -> bool:
        if self.networks is None:
            return True
        try:
            ip = ipaddress.ip_address(address.split("%")[0])
        except ValueError:
            return False
        ip = getattr(ip, "ipv4_mapped", None) or ip
        return any(ip in net for net in self.networks)

    def maintenance(self, now: float) -> None:
        """waitress closes the idle connections; this closes those whose request has been
        partly read for ``read_timeout`` seconds (a slow-loris keeps a connection busy, never
        idle). A request is timed from the first maintenance pass that sees it partly read."""
        super().maintenance(now)
        for channel in list(self.active_channels.values()):
            partial = channel.request
            if partial is None or partial.completed:
                channel.partial_since = None
            elif getattr(channel, "partial_since", None) is None or \
                    channel.partial_since[0] is not partial:
                channel.partial_since = (partial, now)
            elif now - channel.partial_since[1] >= self.read_timeout and not channel.will_close:
                channel.will_close = True
                self.refusals.refused("request too slow", "connection from %s closed: its "
                                      "request was not complete after %ds", channel.addr[0],
                                      self.read_timeout)


def stop_serving(server: BaseWSGIServer, loop: threading.Thread, timeout: float,
                 cancel_pending: bool = False) -> None:
    """Stop a waitress ``server`` whose loop runs in the thread ``loop``: its threads finish
    the requests in hand (those still queued are cancelled with ``cancel_pending``), then the
    loop closes every connection, the listening socket and its wake-up pipe, and ends.

    The loop closes them itself, as it may be polling them. The pipe stays open while a
    request thread still runs after ``timeout``: waitress's threads write a byte to it when a
    response is ready, and a closed descriptor's number goes to the next file opened, a
    database connection's socket for instance, which would get that byte (PostgreSQL then
    drops the connection: "invalid frontend message type 120")."""
    server.accepting = False  # the loop stops taking new connections at its next poll
    server.task_dispatcher.shutdown(cancel_pending=cancel_pending, timeout=timeout)

    def close_all(keep_trigger: bool = False) -> None:
        if server.task_dispatcher.threads:
            log.warning("a request still running after %g s: its server's wake-up pipe is "
                        "left open", timeout)
            keep_trigger = True
        for dispatcher in list(server._map.values()):
            if dispatcher is server.trigger:
                if keep_trigger:
                    dispatcher.del_channel()  # out of the loop, left open
                else:
                    dispatcher.close()
            elif dispatcher is server:  # waitress's own close() closes the pipe too
                wasyncore.dispatcher.close(server)
            else:
                dispatcher.close()

    if loop.is_alive():
        try:
            if server.trigger._closed:
                raise OSError("already closed")
            server.trigger.pull_trigger(close_all)
        except OSError as exc:
            # the pipe's descriptor was closed under it (not explained yet, seen in tests): its
            # number may be another file's now, never to be closed from here; the loop sees
            # its sockets closed and ends
            log.warning("the server's wake-up pipe was closed before it stopped: %s", exc)
            close_all(keep_trigger=True)
        loop.join(timeout)
    if not loop.is_alive():
        close_all()  # what a loop that had ended already left (nothing, once it closed all)


def _allow_descriptors(needed: int) -> None:
    """Raise the soft limit of open files towards ``needed`` (at most to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        top = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, top), hard))
