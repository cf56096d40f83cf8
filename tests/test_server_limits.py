"""The embedded server under idle and slow connections and addresses no institution allows:
real `s360bridge run` processes, real sockets on loopback."""

from __future__ import annotations

import http.client
import selectors
import signal
import socket
import threading
import time

import orjson

from .conftest import API_KEY, base_config, write_config
from .helpers.processes import checks, free_port, start, wait_until

IDLE, SLOW = 300, 50
PATH = "/s360/ticketchecks/testvenue"


def post_checks(port: int, first_id: int, source: str = "127.0.0.1") -> tuple[int, dict, float]:
    """One legitimate S-360 POST of 50 ticket checks: status, answer, seconds it took."""
    began = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                      source_address=(source, 0))
    conn.request("POST", PATH, orjson.dumps(checks(first_id, 50)),
                 {"Content-Type": "application/json", "x-api-key": API_KEY})
    resp = conn.getresponse()
    body = orjson.loads(resp.read())
    conn.close()
    return resp.status, body, time.monotonic() - began


def healthy_from(port: int, source: str) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1, source_address=(source, 0))
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except OSError:
        return False


def start_run(tmp_path, *options: str, allowed: list[str] | None = None, source="127.0.0.1"):
    cfg = base_config(tmp_path)
    if allowed:
        cfg["allowed_sources"] = allowed
    port = free_port()
    proc = start(["run", "-c", str(write_config(tmp_path, cfg)), "--port", str(port), *options],
                 tmp_path / "run.log")
    wait_until(lambda: healthy_from(port, source), 30, "the receiver to be ready", proc)
    return proc, port


class Connections:
    """Client sockets the server may close; ``closed()`` counts those it has closed."""

    def __init__(self):
        self.open: list[socket.socket] = []
        self.gone = 0
        self.lock = threading.Lock()

    def connect(self, port: int, first_bytes: bytes = b"") -> None:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(first_bytes)
        s.setblocking(False)
        self.open.append(s)

    def closed(self) -> int:
        with self.lock:
            sel = selectors.DefaultSelector()
            for s in self.open:
                sel.register(s, selectors.EVENT_READ)
            for key, _ in sel.select(timeout=0):
                try:
                    data = key.fileobj.recv(4096)
                except (ConnectionResetError, BlockingIOError):
                    data = b""
                assert data == b"", f"the server answered a partial request: {data[:80]!r}"
                sel.unregister(key.fileobj)
                key.fileobj.close()
                self.open.remove(key.fileobj)
                self.gone += 1
            sel.close()
            return self.gone

    def dribble(self, stop: threading.Event) -> None:
        """Slow-loris: one more header byte on every socket twice a second."""
        while not stop.wait(0.5):
            with self.lock:
                for s in self.open:
                    try:
                        s.send(b"x")
                    except OSError:  # closed by the server: closed() counts it
                        pass

    def close(self) -> None:
        for s in self.open:
            s.close()


def test_hundreds_of_idle_and_slow_connections_leave_s360_served(tmp_path):
    proc, port = start_run(tmp_path, "--idle-timeout", "6", "--read-timeout", "3")
    idle, slow, stop = Connections(), Connections(), threading.Event()
    dribbler = threading.Thread(target=slow.dribble, args=(stop,))
    try:
        for _ in range(IDLE):
            idle.connect(port)
        for _ in range(SLOW):
            slow.connect(port, f"POST {PATH} HTTP/1.1\r\nHost: bridge\r\nX-Slow: ".encode())
        dribbler.start()
        status, answer, seconds = post_checks(port, 70_000_000_000)
        assert (status, answer["accepted"], answer["duplicates"]) == (200, 50, 0)
        assert seconds < 2.0, f"a legitimate POST took {seconds:.2f}s"
        assert idle.closed() == 0, "the POST was served only once idle connections went"
        # the slow requests are dropped though they keep sending, then the idle connections
        wait_until(lambda: slow.closed() == SLOW, 15, f"the {SLOW} slow requests dropped")
        wait_until(lambda: idle.closed() == IDLE, 15, f"the {IDLE} idle connections closed")
        print(f"{IDLE} idle and {SLOW} slow connections: POST answered 200 in {seconds:.3f}s "
              f"with 50 accepted; {idle.gone} idle and {slow.gone} slow closed by the server")
        status, answer, _ = post_checks(port, 70_000_000_100)
        assert (status, answer["accepted"]) == (200, 50)
    finally:
        stop.set()
        if dribbler.is_alive():
            dribbler.join()
        idle.close()
        slow.close()
        proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    log = (tmp_path / "run.log").read_text()
    assert "request was not complete after 3s" in log


def test_addresses_outside_every_allow_list_are_closed_before_anything_is_read(tmp_path):
    proc, port = start_run(tmp_path, allowed=["127.0.0.2/32"], source="127.0.0.2")
    try:
        outsider = socket.create_connection(("127.0.0.1", port), timeout=10,
                                            source_address=("127.0.0.1", 0))
        try:
            outsider.sendall(f"POST {PATH} HTTP/1.1\r\nHost: bridge\r\n"
                             "Content-Length: 1000000\r\n\r\n".encode())
        except OSError:
            pass  # closed before the headers were through
        try:
            assert outsider.recv(4096) == b""  # closed, no answer at all
        except ConnectionResetError:
            pass
        outsider.close()
        status, answer, _ = post_checks(port, 71_000_000_000, source="127.0.0.2")
        assert (status, answer["accepted"]) == (200, 50)
    finally:
        proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    log = (tmp_path / "run.log").read_text()
    assert log.count("connection from 127.0.0.1 closed: outside the allowed_sources") == 1
