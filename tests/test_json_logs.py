"""``s360bridge --log-format json``: a real `s360bridge run` writes one JSON object per line on
standard error, with the institution, stream, target and key where they apply, and none of the
secrets it read, even when a CRM echoes them back in its error page."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import subprocess
from pathlib import Path

import requests
from flask import Flask, Response, request

from s360bridge.core.logs import FIELDS, JsonFormatter, context
from s360bridge.simulator.serving import Served

from .conftest import API_KEY, PASSWORD, base_config, fixture, write_config
from .helpers.processes import S360BRIDGE, free_port, healthy, start, stop, wait_until

URL_PASSWORD = "hunter2-in-the-crm-url"
CRM_KEY = "x-key-the-crm-echoes-back"
SECRETS = (PASSWORD, API_KEY, URL_PASSWORD, CRM_KEY)
ROOT = Path(__file__).resolve().parent.parent
ORDER = fixture("order_sale.json")[0]
ORDER_ID = str(ORDER["orderDetailsData"]["orderId"])


def echoing_crm() -> Flask:
    """A CRM that is down and says so with the key it was sent (some do, in error pages)."""
    app = Flask("echoing-crm")

    @app.post("/api/<path:what>")
    def down(what):
        return Response(f"unavailable: key {request.headers.get('x-api-key')} refused", 503)
    return app


def lines_of(log) -> list[dict]:
    text = log.read_text("utf-8") if log.exists() else ""
    return [json.loads(line) for line in text.splitlines()]  # each line one object, or fail


def test_run_logs_one_json_object_per_line_without_secrets(tmp_path, monkeypatch):
    with Served(echoing_crm()) as crm:
        monkeypatch.setenv("TEST_CRM_URL", crm.url.replace("//", f"//bridge:{URL_PASSWORD}@"))
        monkeypatch.setenv("TEST_CRM_KEY", CRM_KEY)
        cfg = base_config(tmp_path)
        cfg["targets"]["crm"] = {"type": "http_crm", "base_url": {"$env": "TEST_CRM_URL"},
                                 "auth": {"type": "api_key", "header": "x-api-key",
                                          "key": {"$env": "TEST_CRM_KEY"}},
                                 "orders": {"url": "/api/orders"}}
        cfg["streams"]["orders"]["targets"] = ["datx", "crm"]
        path, log, port = write_config(tmp_path, cfg), tmp_path / "stderr.log", free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start(["--log-format", "json", "run", "-c", str(path), "--port", str(port)], log)
        try:
            wait_until(lambda: healthy(url), 30, "the receiver to be ready", proc)
            good = requests.post(f"{url}/s360/orders/testvenue", json=[ORDER], timeout=10)
            bad = requests.post(f"{url}/s360/contacts/testvenue", json=[{"contactNumber": 12}],
                                auth=("s360", PASSWORD), timeout=10)
            refused = requests.post(f"{url}/s360/contacts/testvenue", json=[],
                                    auth=("s360", "not-the-password"), timeout=10)
            assert (good.json()["accepted"], bad.json()["quarantined"]) == (1, 1)
            assert refused.status_code == 401

            def failing():
                return any(line.get("target") == "crm" for line in lines_of(log))
            wait_until(failing, 30, "the worker to log the CRM's failure", proc)
        finally:
            assert stop(proc) == 0
    lines = lines_of(log)
    text = log.read_text("utf-8")
    for secret in SECRETS:
        assert secret not in text
    for line in lines:
        assert {"time", "level", "logger", "message"} <= set(line), line
        assert dt.datetime.fromisoformat(line["time"]).utcoffset() == dt.timedelta(0)
    worker = next(line for line in lines if line.get("target") == "crm")
    assert worker["level"] == "WARNING" and worker["logger"] == "s360bridge.worker"
    assert (worker["institution"], worker["stream"], worker["key"]) == \
        ("testvenue", "orders", ORDER_ID)
    assert f"http://bridge:***@127.0.0.1:{crm.url.rsplit(':', 1)[1]}" in worker["message"]
    assert "HTTP 503 unavailable: key *** refused" in worker["message"]
    held = next(line for line in lines if "quarantined (see" in line["message"])
    assert (held["level"], held["institution"], held["stream"]) == \
        ("WARNING", "testvenue", "contacts")
    assert any(line["message"] == "testvenue/orders: accepted 1, duplicates 0, quarantined "
               "0, before the cut-off 0" and line["stream"] == "orders" for line in lines)
    refusal = next(line for line in lines if "refused with 401" in line["message"])
    assert "key" not in refusal and "institution" not in refusal  # outside any record's work


def test_the_json_formatter_masks_every_field_and_keeps_the_traceback():
    formatter = JsonFormatter()
    try:
        raise ValueError(f"cannot open http://u:{URL_PASSWORD}@crm")
    except ValueError as exc:
        record = logging.LogRecord("s360bridge.test", logging.ERROR, __file__, 1,
                                   "failed on %s", ("it",), (type(exc), exc, exc.__traceback__))
    record.key = f"https://x:{URL_PASSWORD}@k"  # extra= of a field
    record.colour = "blue"  # an attribute that is not a field of the line
    with context(institution="testvenue", stream="orders"):
        line = json.loads(formatter.format(record))
    assert line["message"] == "failed on it" and line["level"] == "ERROR"
    assert (line["institution"], line["stream"], line["key"]) == \
        ("testvenue", "orders", "https://x:***@k")
    assert "ValueError: cannot open http://u:***@crm" in line["traceback"]
    assert "colour" not in line and URL_PASSWORD not in json.dumps(line)


def test_an_error_that_stops_a_command_is_a_json_line_too(tmp_path):
    cfg = base_config(tmp_path)
    cfg["targets"]["crm"] = {"type": "http_crm", "base_url": {"$env": "TEST_UNSET_CRM_URL"},
                             "orders": {"url": "/api/orders"}}
    path = write_config(tmp_path, cfg)
    env = {k: v for k, v in os.environ.items() if k != "TEST_UNSET_CRM_URL"}
    done = subprocess.run([S360BRIDGE, "--log-format", "json", "worker", "-c", str(path)],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    [line] = [json.loads(text) for text in done.stderr.splitlines()]
    assert (line["level"], line["logger"]) == ("ERROR", "s360bridge.cli")
    assert line["message"] == (f"error: {path}: targets.crm.base_url: environment variable "
                               "TEST_UNSET_CRM_URL is not set (or empty)")


def test_the_documented_line_holds_the_fields_the_formatter_writes():
    section = (ROOT / "docs" / "operations.md").read_text("utf-8").split("### Logs\n")[1]
    section = section.split("\n## ")[0]
    example = json.loads(re.search(r"```json\n(.*?)\n```", section, re.S)[1])
    written = {"time", "level", "logger", "message", "traceback", *FIELDS}
    assert {"time", "level", "logger", "message"} <= set(example) <= written
    assert all(f"`{name}`" in section for name in written)
