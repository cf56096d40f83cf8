"""A venue that sells through the bridge's offers: S-360's simulator with its sales side, the
bridge's receiver with the offers service, and S-360's order webhook to the bridge."""

from __future__ import annotations

import requests

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


def with_offers(data: dict) -> None:
    data["services"] = {"offers": {
        "auth": {"type": "api_key", "header": "x-api-key", "key": {"$env": "TEST_CRM_IN_KEY"}},
        "options": {"wait_seconds": 10, "open_order_seconds": 2, "lease_seconds": 1}}}


class Shop(World):
    def __init__(self, tmp_path, monkeypatch):
        super().__init__(tmp_path, monkeypatch, calls=500, configure=with_offers)
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

    def left(self, *quota) -> int:
        return self.api.catalogs["testvenue"].left[quota]
