"""A venue that sells through the bridge's offers: S-360's simulator with its sales side, the
bridge's receiver with the offers service, and S-360's order webhook to the bridge."""

from __future__ import annotations

import requests

from s360bridge.simulator.channels import Channel
from s360bridge.simulator.webhooks import WebhookQueue, WebhookSettings

from .world import World

PERF, CAT1 = 10228231109243, "CAT1"
LINES = {
    "open pass": {"product": "MUSPASS", "tariff": "ADULT", "quantity": 2},
    "visit pass": {"product": "VISIT10", "timeslot": 10228231108630, "tariff": "CHILD",
                   "quantity": 2},
    "event": {"product": "HAMLET", "performance": PERF, "seat_category": "CAT2",
              "tariff": "ADULT", "quantity": 2},
    "season ticket": {"product": "SEASON26", "tariff": "ADULT", "quantity": 1},
}


# two resellers beside the CRM operator: one sells events and passes on a sales channel of its
# own (EVENTIM_CHANNEL: the venue put the play and the open pass on it, not the guided visit),
# one passes only on the institution's channel
EVENTIM_CHANNEL = Channel(pos_id=101053522399, code="EVENTIM", pending_account=16371,
                          products=frozenset({"HAMLET", "MUSPASS"}))
RESELLERS = {"eventim": {"families": ["SINGLE_ENTRY", "PASS"], "contacts": "attach",
                         "max_tickets_per_order": 6, "operator": "TEST_EVENTIM"},
             "passhop": {"families": ["PASS"], "orders_per_minute": 3, "calls_per_minute": 1}}
RESELLER_KEYS = {name: f"key-of-reseller-{name}-0123456789" for name in RESELLERS}


def with_offers(data: dict) -> None:
    data["services"] = {"offers": {
        "auth": {"type": "api_key", "header": "x-api-key", "key": {"$env": "TEST_CRM_IN_KEY"}},
        "options": {"wait_seconds": 10, "open_order_seconds": 2, "lease_seconds": 1},
        "callers": {name: {"auth": {"type": "api_key", "header": "x-api-key",
                                    "key": {"$env": f"TEST_RESELLER_{name.upper()}_KEY"}},
                           "options": options} for name, options in RESELLERS.items()}}}


class Shop(World):
    def __init__(self, tmp_path, monkeypatch, crm_settings: dict | None = None):
        """``crm_settings``: the CRM operator's own, beside the service's options."""
        for name, key in RESELLER_KEYS.items():
            monkeypatch.setenv(f"TEST_RESELLER_{name.upper()}_KEY", key)

        def configure(data: dict) -> None:
            with_offers(data)
            data["services"]["offers"]["options"].update(crm_settings or {})
        super().__init__(tmp_path, monkeypatch, calls=500, configure=configure)
        self.api.access["testvenue"].channels["TEST_EVENTIM"] = EVENTIM_CHANNEL
        self.sales = self.api.sales["testvenue"]
        self.orders_webhook = WebhookQueue(WebhookSettings(
            f"{self.proc.url}/s360/orders/testvenue", batch_size=100, bucket_size=20))
        self.sales.on_close = lambda record: self.orders_webhook.enqueue([record])
        self.sales.open_seconds = 2

    def offer(self, key: str, *lines, kind: str = "sale", **extra) -> requests.Response:
        body = {"idempotency_key": key, "type": kind, "lines": list(lines),
                "purchaser": {"contact_number": "0001234"}, **extra}
        return requests.post(f"{self.proc.url}/crm/offers/testvenue", json=body,
                             headers={"x-api-key": "crm-posts-its-changes-with-this"},
                             timeout=30)

    def follow_up(self, offer_id: int, action: str) -> requests.Response:
        return requests.post(f"{self.proc.url}/crm/offers/testvenue/{offer_id}/{action}",
                             headers={"x-api-key": "crm-posts-its-changes-with-this"},
                             timeout=30)

    def reseller(self, name: str, method: str, path: str, **kwargs) -> requests.Response:
        """A call of reseller ``name`` to its API (``path`` under /resellers/v1/testvenue)."""
        headers = {"x-api-key": RESELLER_KEYS[name], **kwargs.pop("headers", {})}
        return requests.request(method, f"{self.proc.url}/resellers/v1/testvenue{path}",
                                headers=headers, timeout=30, **kwargs)

    def left(self, *quota) -> int:
        return self.api.catalogs["testvenue"].left[quota]
