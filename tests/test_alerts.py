"""deploy/prometheus/alerts.yml: every rule is complete, and every metric its expressions name
is exported by /metrics once the bridge has had some traffic (webhooks, a dead letter, calls to
S-360 with a 509, the periodic jobs), with the labels its annotations use."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests
import yaml

from s360bridge.core.pipeline.processes import Process
from s360bridge.core.pipeline.server import listen

from .conftest import bridge_of, fixture, post
from .helpers.metrics import OPERATOR_AUTH, OPERATOR_ENV, Scrape, operator_settings
from .helpers.plugins import registered
from .helpers.processes import checks, wait_until
from .helpers.world import World
from .test_metrics_gauges import GatePlugin

ALERTS = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "alerts.yml"
RULES = [rule for group in yaml.safe_load(ALERTS.read_text("utf-8"))["groups"]
         for rule in group["rules"]]
METRIC = re.compile(r"\bs360bridge_[a-z0-9_]+")


@pytest.mark.parametrize("rule", RULES, ids=[r["alert"] for r in RULES])
def test_each_rule_is_complete(rule):
    assert rule["alert"].startswith("S360Bridge")
    assert METRIC.search(rule["expr"]), rule["expr"]
    assert rule["labels"]["severity"] in ("critical", "warning", "info")
    assert rule["annotations"]["summary"]


@pytest.fixture
def traffic(tmp_path, monkeypatch, secrets_env) -> Scrape:
    """A scrape of the operator listener after webhooks, a dead letter, S-360 calls with a 509
    and a run of the periodic jobs."""
    for k, v in OPERATOR_ENV.items():
        monkeypatch.setenv(k, v)

    def configure(data):
        data["engine"]["operator"] = operator_settings()
        data["s360_api"]["monthly_calls"] = 10_000  # a plan with a quota (the quota's alert)
        data["targets"]["gate"] = {"type": "gate", "mode": "reject"}
        data["streams"]["ticketchecks"]["targets"] = ["datx", "gate"]

    with registered(GatePlugin(), "gate-plugin"):
        world = World(tmp_path, monkeypatch, configure=configure)
        operator = Process(bridge_of(world.config), receiver=False, workers=0, scheduler=True,
                           operator=listen("127.0.0.1", 0))
        operator.start()
        try:
            post(world.client, "ticketchecks", checks(90_000_000_000, 2))
            person = fixture("contacts_person.json")[0]
            world.known_to_both(person)
            world.crm.create(contact_number="0099001", first_name="Al", last_name="Ert")
            world.store.add([dict(person, contactNumber="0099001")])
            world.api.force_509 = 1
            world.crm_pushes_changes()
            assert world.api.count(status=509) == 1

            def scrape() -> Scrape:
                r = requests.get(f"{operator.url_of('operator')}/metrics", auth=OPERATOR_AUTH,
                                 timeout=10)
                assert r.status_code == 200
                return Scrape(r.text)

            wait_until(lambda: scrape().get("s360bridge_job_last_success_timestamp_seconds",
                                            name="purge"), 30, "the purge to run")
            return scrape()
        finally:
            operator.shutdown()
            world.close()


def test_every_metric_the_alerts_use_is_exported(traffic):
    exported = traffic.names()
    for rule in RULES:
        used = set(METRIC.findall(rule["expr"]))
        assert used <= exported, f"{rule['alert']}: not exported: {used - exported}"
        labels = {label for (name, pairs) in traffic.samples if name in used
                  for label, _ in pairs}
        for label in re.findall(r"\$labels\.(\w+)", yaml.safe_dump(rule["annotations"])):
            assert label in labels, f"{rule['alert']}: no metric it uses has label {label}"
    assert traffic("s360bridge_s360_api_calls_total", institution="testvenue",
                   method="saveIndividualContactData", code="509") >= 1
    assert traffic("s360bridge_dead_letter_records", institution="testvenue",
                   stream="ticketchecks") == 2
