"""A TCP proxy on loopback, in threads, that can be told to stop forwarding while it keeps every
connection open: a database that stops answering without closing anything (a hung proxy, a
network that drops packets silently)."""

from __future__ import annotations

import socket
import threading


class HangingProxy:
    """Forwards ``127.0.0.1:<port>`` to ``upstream``; ``hang()`` holds every byte, in both
    directions and on new connections too, until ``forward()``."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.forwarding = threading.Event()
        self.forwarding.set()
        self.closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def hang(self) -> None:
        self.forwarding.clear()

    def forward(self) -> None:
        self.forwarding.set()

    def close(self) -> None:
        self.closed.set()
        self.forwarding.set()
        self._listener.close()
        with self._lock:
            for s in self._sockets:
                _shut(s)
                s.close()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            self.forwarding.wait()  # a hung proxy holds what it read, and reads no more
            if not data or self.closed.is_set():
                _shut(dst)
                return
            try:
                dst.sendall(data)
            except OSError:
                _shut(src)
                return


def _shut(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
