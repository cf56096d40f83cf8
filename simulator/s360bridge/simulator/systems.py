"""The systems the demo runs beside S-360's webhooks: S-360's API and the reference CRM.

Their URLs reach the configuration through environment variables named after the institution
(``MYVENUE_S360_API_URL``, ``MYVENUE_CRM_URL``), as config/myvenue.yaml reads them; the API
checks the secret, operator and partner the configuration gives the bridge.
"""

from __future__ import annotations

import uuid

import click
import requests

from s360bridge.core.api import Institution, reveal

from .api import ApiAccess, S360Api
from .crm import ReferenceCrm
from .serving import Served
from .webhooks import WebhookQueue


class SideSystems:
    def __init__(self):
        self.api = S360Api({})
        self.crm = ReferenceCrm()
        self.api_served = Served(self.api.app())
        self.crm_served = Served(self.crm.app())

    def urls(self, codes) -> dict[str, str]:
        """The environment variables that point a configuration at these systems."""
        env = {}
        for code in codes:
            env[f"{code.upper()}_S360_API_URL"] = f"{self.api_served.url}/{code}"
            env[f"{code.upper()}_CRM_URL"] = self.crm_served.url
        return env

    def open_api(self, inst: Institution) -> None:
        """S-360's API opened to the institution's partner (its secret, operator and partner),
        before the bridge's scheduler first calls it."""
        api = inst.s360_api
        if api is not None:
            self.api.add(inst.code, ApiAccess(api.secret.value, frozenset({api.operator}),
                                              partners=frozenset({api.partner})))

    def connect(self, bridge, inst: Institution, contacts: list[dict], orders: list[dict],
                webhook: WebhookQueue) -> bool:
        """Give S-360 the institution's partner access, contacts and orders; its contact
        changes go to ``webhook``. False when the institution does not use the API and a CRM."""
        crm = next((t for t in map(lambda n: bridge.target(inst, n), inst.targets)
                    if t.kind == "http_crm"), None)
        if inst.s360_api is None or crm is None or "crm_contacts" not in inst.streams:
            return False
        self.open_api(inst)
        store = self.api.stores[inst.code]
        store.add(contacts)
        self.api.order_stores[inst.code].add(orders)
        store.on_change = lambda contact: webhook.enqueue([contact])
        key = reveal((crm.options.get("auth") or {}).get("key"))
        self.crm.api_key = key if (crm.options.get("auth") or {}).get("type") == "api_key" \
            else None
        return True

    def crm_edits(self, receiver_url: str, inst: Institution, changed: int, new: int) -> int:
        """The CRM operator changes and creates contacts; the CRM POSTs its changes to the
        bridge. Answers how many changes were sent."""
        mark = len(self.crm.changes)
        people = [c for c in list(self.crm.contacts.values())
                  if c["contact_number"] and c.get("kind") == "INDIVIDUAL"][:changed]
        for i, c in enumerate(people):
            self.crm.change(c["crm_id"], phone=f"+41 79 555 {i:02d} {i:02d}")
        for i in range(new):
            self.crm.create(first_name="Demo", last_name=f"Newcontact{i}",
                            email=f"demo.new{i}@example.org")
        items = self.crm.changes_since(mark)
        auth = inst.streams["crm_contacts"].auth
        headers = {auth.header: auth.key.value} if auth.type == "api_key" else {}
        basic = (auth.username, auth.password.value) if auth.type == "basic" else None
        r = requests.post(f"{receiver_url}/crm/contacts/{inst.code}", json=items,
                          headers=headers, auth=basic, timeout=30)
        if r.status_code != 200:
            raise click.ClickException(f"the bridge refused the CRM's changes: {r.text}")
        return len(items)

    def offer(self, receiver_url: str, inst: Institution, orders_webhook: WebhookQueue) -> str:
        """An operator sells two seats of the first performance through the bridge; the closed
        order comes back through S-360's order webhook. Answers what happened."""
        self.api.sales[inst.code].on_close = lambda record: orders_webhook.enqueue([record])
        auth = inst.services["offers"].auth
        headers = {auth.header: auth.key.value} if auth.type == "api_key" else {}
        product = next(p for p in self.api.catalogs[inst.code].products() if p.get("event"))
        performance = product["event"]["performances"][0]
        r = requests.post(f"{receiver_url}/crm/offers/{inst.code}", headers=headers, timeout=60,
                          json={"idempotency_key": f"demo-{uuid.uuid4().hex}", "type": "sale",
                                "lines": [{"product": product["code"],
                                           "performance": performance["id"],
                                           "seat_category": "CAT2", "tariff": "ADULT",
                                           "quantity": 2}]})
        offer = r.json()
        if r.status_code != 201:
            return f"{inst.code}: offer answered {r.status_code}: {offer.get('error')}"
        return (f"{inst.code}: offer {offer['id']}: a sale of 2 {product['code']} seats, S-360 "
                f"order {offer['order_id']} {offer['order_state']}, "
                f"{len(offer['barcodes'])} barcodes")

    def report(self, code: str) -> str:
        calls = {m: self.api.count(m, 200) for m in
                 ("saveIndividualContactData", "searchContact", "createCulturalContact")}
        pushed = sum(n for (stream, _), n in self.crm.received.items() if stream == "contacts")
        orders = sum(n for (stream, _), n in self.crm.received.items() if stream == "orders")
        return (f"{code}: CRM received {pushed} contact and {orders} order pushes; S-360 API "
                f"calls: {calls['saveIndividualContactData']} saveIndividualContactData, "
                f"{calls['searchContact']} searchContact, {calls['createCulturalContact']} "
                f"createCulturalContact, {self.api.count(status=509)} answered 509")

    def close(self) -> None:
        self.api_served.close()
        self.crm_served.close()
