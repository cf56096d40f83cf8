"""Reading ``GET /metrics``: the operator listener's configuration for tests, and the samples of
a scrape by name and labels."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

OPERATOR_PASSWORD = "operator-pa55word-never-shown"
OPERATOR_ENV = {"TEST_OPERATOR_PASSWORD": OPERATOR_PASSWORD}
OPERATOR_AUTH = ("ops", OPERATOR_PASSWORD)


def operator_settings(port: int = 8361) -> dict:
    """``engine.operator`` of a test configuration: on, with basic authentication."""
    return {"enabled": True, "port": port,
            "auth": {"type": "basic", "username": "ops",
                     "password": {"$env": "TEST_OPERATOR_PASSWORD"}}}


class Scrape:
    """The samples of one exposition, by name and labels."""

    def __init__(self, text: str):
        self.text = text
        self.samples = {(s.name, frozenset(s.labels.items())): s.value
                        for family in text_string_to_metric_families(text)
                        for s in family.samples}

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}

    def get(self, metric: str, /, **labels) -> float | None:
        return self.samples.get((metric, frozenset(labels.items())))

    def __call__(self, metric: str, /, **labels) -> float:
        """The sample's value; 0 when it is not there (a counter never incremented)."""
        return self.get(metric, **labels) or 0.0


def gate_console_config(tmp_path, monkeypatch) -> dict:
    """The test configuration with the console: orders go to the warehouse and to a gate
    that refuses them (dead letters); the operator's password in the environment."""
    from ..conftest import base_config

    for k, v in OPERATOR_ENV.items():
        monkeypatch.setenv(k, v)
    cfg = base_config(tmp_path)
    cfg["targets"]["gate"] = {"type": "gate", "mode": "reject"}
    cfg["streams"]["orders"]["targets"] = ["datx", "gate"]
    cfg["engine"]["operator"] = operator_settings()
    return cfg
