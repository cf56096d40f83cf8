"""Stopping an in-process waitress server (the receiver's, the simulator's) for good: nothing of
it writes to a descriptor it has closed, whose number the next socket or pipe opened reuses."""

from __future__ import annotations

import os
import socket
import threading

import pytest
from waitress.server import create_server

from s360bridge.core.pipeline.server import stop_serving


@pytest.fixture
def held():
    """A server whose one route answers only once the test lets it."""
    release, entered = threading.Event(), threading.Event()

    def app(environ, start_response):
        entered.set()
        release.wait(30)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"late"]

    server = create_server(app, host="127.0.0.1", port=0, threads=1)
    loop = threading.Thread(target=server.run, daemon=True)
    loop.start()
    client = socket.create_connection(server.socket.getsockname()[:2], timeout=10)
    client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert entered.wait(10)
    yield server, loop, release
    release.set()
    client.close()


def handler_threads_ended(server) -> None:
    dispatcher = server.task_dispatcher
    with dispatcher.lock:
        while dispatcher.threads:
            assert dispatcher.thread_exit_cv.wait(10), "a request thread did not end"


def test_a_request_outliving_the_stop_writes_into_no_reused_descriptor(held):
    """A handler still running when the server stops later wakes the server's loop through a
    pipe; had the pipe been closed, its numbers would now be the new pipe's, which would get
    the byte (a PostgreSQL connection's socket, in the intermittent CI failures)."""
    server, loop, release = held
    stop_serving(server, loop, timeout=0.2, cancel_pending=True)
    assert not loop.is_alive() and not server.trigger._closed  # kept for the late thread
    read_end, write_end = os.pipe()  # takes the lowest free numbers: a closed pipe's
    try:
        os.set_blocking(read_end, False)
        release.set()
        handler_threads_ended(server)
        with pytest.raises(BlockingIOError):
            os.read(read_end, 1)
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_stopped_server_closed_its_port_and_its_connections(held):
    server, loop, release = held
    address = server.socket.getsockname()[:2]
    release.set()  # the request in hand ends in time
    stop_serving(server, loop, timeout=5)
    assert not loop.is_alive() and server._map == {}
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=5)
