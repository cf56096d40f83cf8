"""Serve a simulator's Flask app on a free loopback port, in a background thread."""

from __future__ import annotations

import threading

from waitress.server import create_server

from s360bridge.core.pipeline.server import stop_serving


class Served:
    """A WSGI app listening on ``url`` until ``close()``."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, threads: int = 8):
        self.server = create_server(app, host=host, port=port, threads=threads)
        host, port = self.server.socket.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        self._thread = threading.Thread(target=self.server.run, daemon=True,
                                        name=f"simulator {self.url}")
        self._thread.start()

    def close(self) -> None:
        """Requests in hand are answered within 5 s or cancelled; then the port is closed."""
        stop_serving(self.server, self._thread, timeout=5, cancel_pending=True)

    def __enter__(self) -> Served:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
