"""Serve a simulator's Flask app on a free loopback port, in a background thread."""

from __future__ import annotations

import threading

from waitress.server import create_server


class Served:
    """A WSGI app listening on ``url`` until ``close()``."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, threads: int = 8):
        self.server = create_server(app, host=host, port=port, threads=threads)
        host, port = self.server.socket.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        self._closing = False
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"simulator {self.url}")
        self._thread.start()

    def _run(self) -> None:
        try:
            self.server.run()
        except OSError:  # the loop's select() sees the socket close() just closed
            if not self._closing:
                raise

    def close(self) -> None:
        self._closing = True
        self.server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)
        self.server.close()

    def __enter__(self) -> Served:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
