"""Per-record outcomes and idempotency keys: what a target refuses is a dead letter at once,
a 500 halves the batch, and after a kill -9 only the push in flight goes again, dropped by key."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import types

from flask import Flask, redirect, request

from s360bridge.core.pipeline.receiver import create_app
from s360bridge.simulator.serving import Served

from .conftest import base_config, bridge_of, drain, post, write_config
from .helpers import ledger
from .helpers.processes import start, wait_until
from .helpers.records import numbered_orders


def orders(n: int) -> list[dict]:
    return numbered_orders(20_000_000, n)


def config(tmp_path, crm, batch_size=10, targets=("crm",)) -> object:
    cfg = base_config(tmp_path)
    cfg["targets"]["crm"] = {"type": "http_crm", "orders": {"url": f"{crm.url}/api/orders"},
                             "batch_size": batch_size, "timeout_seconds": 60}
    cfg["streams"]["orders"]["targets"] = list(targets)
    return write_config(tmp_path, cfg)


def states(tmp_path) -> dict[str, tuple[str, int]]:
    with sqlite3.connect(tmp_path / "engine.db") as conn:
        return {k: (s, a) for k, s, a in conn.execute(
            "SELECT record_key, state, attempts FROM inbox_state WHERE stream = 'orders'")}


def test_one_record_the_crm_answers_500_for_does_not_take_its_neighbours(tmp_path, crm,
                                                                        secrets_env):
    crm.poison["20000003"] = 500
    path = config(tmp_path, crm)
    bridge = bridge_of(path)
    book = ledger.Ledger()
    book.answer(10, post(create_app(bridge).test_client(), "orders", orders(10)))
    drain(bridge)
    received = {str(k) for (_, k) in crm.received}
    assert received == {str(20_000_000 + i) for i in range(10)} - {"20000003"}
    assert all(n == 1 for n in crm.received.values())  # halves: nobody pushed twice
    found = states(tmp_path)
    assert found["20000003"] == ("pending", 1)  # retried later, with the backoff
    assert [k for k, (s, _) in found.items() if s != "done"] == ["20000003"]

    crm.poison.clear()  # the CRM's fault is mended: the retry, when due, delivers it once
    with sqlite3.connect(tmp_path / "engine.db") as conn:
        conn.execute("UPDATE queue SET next_attempt_at = 0")  # its backoff has run out
    drain(bridge)
    bridge.close()
    book.settle(ledger.engine_url(path), "orders", lambda: [ledger.crm(crm, "orders")])


def test_a_crm_answering_500_to_everything_is_down_not_split_further(tmp_path, crm,
                                                                    secrets_env):
    calls = []
    crm.poison.update({str(20_000_000 + i): 500 for i in range(8)})
    bridge = bridge_of(config(tmp_path, crm))
    post(create_app(bridge).test_client(), "orders", orders(8))
    original = bridge.hooks.push
    bridge.hooks.push = lambda *a: calls.append(len(a[3])) or original(*a)
    drain(bridge)
    bridge.close()
    assert calls == [8, 4, 4]  # the batch, then both halves: the target is down
    assert set(states(tmp_path).values()) == {("pending", 1)}


def test_a_record_the_crm_refuses_is_a_dead_letter_at_once(tmp_path, crm, secrets_env):
    crm.poison["20000001"] = 422
    path = config(tmp_path, crm)
    bridge = bridge_of(path)
    book = ledger.Ledger()
    book.answer(4, post(create_app(bridge).test_client(), "orders", orders(4)))
    drain(bridge)
    bridge.close()
    book.settle(ledger.engine_url(path), "orders", lambda: [ledger.crm(crm, "orders")], dead=1)
    found = states(tmp_path)
    assert found.pop("20000001") == ("dead", 1)
    assert set(found.values()) == {("done", 0)}


def test_a_route_nothing_can_deliver_any_more_is_a_dead_letter_at_once(tmp_path, secrets_env):
    bridge = bridge_of(write_config(tmp_path, base_config(tmp_path)))
    post(create_app(bridge).test_client(), "orders", orders(2))
    bridge.hooks._pairs = {}  # the plugins that mapped orders are gone since the start
    drain(bridge)
    bridge.close()
    assert set(states(tmp_path).values()) == {("dead", 1)}
    with sqlite3.connect(tmp_path / "engine.db") as conn:
        errors = {e for (e,) in conn.execute("SELECT last_error FROM inbox")}
    assert errors == {"datx: no plugin maps stream 'orders' to target type 'sql'; no plugin "
                      "declares anything for this stream or this target type; journal: no "
                      "plugin maps stream 'orders' to target type 'jsonl'; no plugin declares "
                      "anything for this stream or this target type"}


def test_kill_9_between_push_and_commit_pushes_only_the_batch_in_flight_again(tmp_path, crm,
                                                                            secrets_env):
    """Three batches of 10 for the CRM: it stores the second but its answer waits, and the
    worker is killed then. The next worker does not push the first batch again (its push was
    recorded), pushes the second again (the CRM drops it by its keys), then the third."""
    path = config(tmp_path, crm)
    bridge = bridge_of(path)
    book = ledger.Ledger()
    book.answer(30, post(create_app(bridge).test_client(), "orders", orders(30)))
    bridge.close()
    crm.answer_gate, crm.hold = threading.Event(), {"20000015"}
    log = tmp_path / "worker.log"
    worker = start(["worker", "-c", str(path)], log)
    wait_until(lambda: len(crm.pushes()) == 20, 30, "the CRM to store the second batch", worker)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(10)
    crm.answer_gate.set()
    with sqlite3.connect(tmp_path / "engine.db") as conn:  # the lease must run out first
        conn.execute("UPDATE queue SET lease_until = 0")
    worker = start(["worker", "-c", str(path)], log)
    wait_until(lambda: len(crm.pushes()) == 30, 60, "every order in the CRM", worker)
    wait_until(lambda: {s for s, _ in states(tmp_path).values()} == {"done"}, 30,
               "every order done", worker)
    os.killpg(worker.pid, signal.SIGTERM)
    assert worker.wait(30) == 0
    assert set(crm.received.values()) == {1}  # each version taken once
    assert crm.repeated == 10  # the second batch only, pushed again and dropped by its keys
    book.settle(ledger.engine_url(path), "orders", lambda: [ledger.crm(crm, "orders")])


def test_a_crm_url_that_redirects_is_a_refusal_not_a_get_without_a_body(tmp_path, secrets_env):
    app, seen = Flask(__name__), []

    @app.route("/api/orders", methods=["GET", "POST"])
    def moved():
        seen.append(request.method)
        return redirect("https://crm.example/api/orders", 301)

    with Served(app) as served:
        crm = types.SimpleNamespace(url=served.url)
        bridge = bridge_of(config(tmp_path, crm))
        post(create_app(bridge).test_client(), "orders", orders(1))
        drain(bridge)
        bridge.close()
    assert seen == ["POST"]  # never followed (requests would turn it into a bodiless GET)
    with sqlite3.connect(tmp_path / "engine.db") as conn:
        state, error = conn.execute("SELECT state, last_error FROM inbox_state").fetchone()
    assert state == "dead"
    assert error.endswith("HTTP 301: redirected to https://crm.example/api/orders; configure "
                          "that URL")
