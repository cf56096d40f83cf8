"""The world around the bridge for CRM and offers tests: the simulator's S-360 API, the
reference CRM and the bridge's receiver, all served on loopback."""

from __future__ import annotations

import threading
import time

import requests

from s360bridge.core.pipeline.processes import Process
from s360bridge.core.pipeline.receiver import create_app
from s360bridge.core.pipeline.worker import Worker
from s360bridge.core.s360.budget import CallBudget
from s360bridge.simulator.api import ApiAccess, S360Api
from s360bridge.simulator.crm import ReferenceCrm
from s360bridge.simulator.serving import Served
from s360bridge.simulator.webhooks import WebhookQueue, WebhookSettings

from ..conftest import PASSWORD, base_config, bridge_of, post, write_config

API_SECRET = "jwt-shared-secret-of-the-partner-0123456789"


CRM_KEY = "crm-key-for-pushes-abcdef"


CRM_IN_KEY = "crm-posts-its-changes-with-this"


class World:
    """The simulator's S-360 API, the reference CRM and the bridge's receiver, all served."""

    def __init__(self, tmp_path, monkeypatch, api_secret=API_SECRET, calls=50, window=1.0,
                 client_calls=None, s360_limit=None, configure=None):
        monkeypatch.setenv("TEST_S360_SECRET", api_secret)
        monkeypatch.setenv("TEST_CRM_KEY", CRM_KEY)
        monkeypatch.setenv("TEST_CRM_IN_KEY", CRM_IN_KEY)
        self.api = S360Api({"testvenue": ApiAccess(API_SECRET, frozenset({"TEST_OP"}),
                                                   s360_limit or calls, window)})
        self.crm = ReferenceCrm(api_key=CRM_KEY)
        self.api_server, self.crm_server = Served(self.api.app()), Served(self.crm.app())
        crm = self.crm_server.url
        data = base_config(tmp_path)
        data["s360_api"] = {"base_url": f"{self.api_server.url}/testvenue",
                            "operator": "TEST_OP", "partner": "tests",
                            "secret": {"$env": "TEST_S360_SECRET"},
                            "calls_per_minute": client_calls or calls, "window_seconds": window,
                            "retries": 3}
        data["targets"]["crm"] = {
            "type": "http_crm",
            "auth": {"type": "api_key", "header": "x-api-key", "key": {"$env": "TEST_CRM_KEY"}},
            "contacts": {"url": f"{crm}/api/contacts"}, "orders": {"url": f"{crm}/api/orders"},
            "contact_numbers_url": f"{crm}/api/contact-numbers"}
        data["targets"]["s360"] = {"type": "s360_contacts", "contact_numbers_to": "crm"}
        data["streams"]["contacts"]["targets"] = ["datx", "crm"]
        data["streams"]["orders"]["targets"] = ["datx", "crm"]
        data["streams"]["crm_contacts"] = {
            "auth": {"type": "api_key", "header": "x-api-key",
                     "key": {"$env": "TEST_CRM_IN_KEY"}},
            "targets": ["s360"],
            "options": {"poll": {"url": f"{crm}/api/changes", "auth": {
                "type": "api_key", "header": "x-api-key", "key": {"$env": "TEST_CRM_KEY"}}}}}
        if configure is not None:
            configure(data)
        self.config = write_config(tmp_path, data)
        self.bridge = bridge_of(self.config)
        self.inst = self.bridge.institution("testvenue")
        self.proc = Process(self.bridge, receiver=True, workers=0, scheduler=False, port=0)
        self.proc.start()
        self.client = create_app(self.bridge).test_client()
        self.webhook = WebhookQueue(WebhookSettings(
            f"{self.proc.url}/s360/contacts/testvenue", batch_size=100, bucket_size=20,
            auth=("basic", "s360", PASSWORD)))
        self.store = self.api.stores["testvenue"]
        self.store.on_change = lambda contact: self.webhook.enqueue([contact])
        self.seen = 0  # CRM changes already sent to the bridge

    def close(self):
        self.proc.shutdown()
        self.api_server.close()
        self.crm_server.close()

    def drain(self, later: float = 0.0) -> None:
        """Deliver everything due (``later`` seconds from now, to pass retry delays)."""
        worker = Worker(self.bridge, clock=lambda: time.time() + later)
        while worker.run_once():
            pass

    def s360_webhook(self) -> None:
        """S-360 runs its contact webhook, then the bridge delivers what it took in."""
        while self.webhook.pending:
            assert self.webhook.run_once().failed_posts == 0
        self.drain()

    def crm_pushes_changes(self) -> int:
        """The CRM POSTs its new changes to the bridge, which delivers them."""
        items = self.crm.changes_since(self.seen)
        self.seen += len(items)
        if items:
            r = requests.post(f"{self.proc.url}/crm/contacts/testvenue", json=items,
                              headers={"x-api-key": CRM_IN_KEY}, timeout=10)
            assert r.status_code == 200, r.text
        self.drain()
        return len(items)

    def known_to_both(self, person: dict) -> str:
        """A contact S-360 has and has pushed to the CRM; answers its CRM id."""
        self.store.add([person])
        post(self.client, "contacts", [person])
        self.drain()
        return self.crm.by_number(person["contactNumber"])["crm_id"]

    def calls(self, method: str) -> int:
        return self.api.count(method, 200)


def spend_concurrently(engines, calls: int, window: float) -> list[float]:
    """Each engine, like a process of its own, spends ``calls`` of one shared budget of
    ``calls`` per ``window``; answers the times the budget admitted the calls, in order (as
    its clock read them: the time a thread returns to the test is not the admission time on
    a loaded machine)."""
    taken: list[float] = []
    seen = threading.local()

    def clock() -> float:
        seen.last = time.time()
        return seen.last

    def spend(engine):
        budget = CallBudget(engine, calls, window, clock=clock)
        for _ in range(calls):
            assert budget.acquire("v/contact.saveIndividualContactData", timeout=10)
            taken.append(seen.last)  # the last reading: the one the admission was made at

    threads = [threading.Thread(target=spend, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(taken)
