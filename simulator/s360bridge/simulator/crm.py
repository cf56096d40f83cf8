"""A small reference CRM ("ExtCRM") that speaks HTTP/JSON, for tests, benchmarks and the demo.

It stores the contacts and orders the bridge pushes, keyed by contact number and order id,
gives its own ids (``crm_id``) to contacts, lets an operator (a test) create and change contacts,
and reports every change, its own and the bridge's writes alike, on a "changed since" feed, as
real CRMs do. It can be taken down for a number of requests (503 with Retry-After). It honours
the bridge's ``Idempotency-Key`` header (one key per item, comma-separated): an item whose key
it has taken already is dropped, as a CRM that deduplicates would.

Endpoints, all JSON: ``POST /api/contacts`` and ``POST /api/orders`` (arrays, upserts),
``POST /api/contact-numbers`` (``[{crm_id, contact_number}]``: numbers S-360 gave to contacts
created from the CRM), ``GET /api/changes?since=N`` (``{items, watermark}``).
"""

from __future__ import annotations

import copy
import hmac
import itertools
import secrets
import threading
from collections import Counter

import orjson
from flask import Flask, Response, request

CONTACT_FIELDS = ("contact_number", "first_name", "last_name", "email", "phone", "city",
                  "country", "email_opt_in", "kind", "s360_created")


class ReferenceCrm:
    def __init__(self, api_key: str | None = None, page_size: int = 500):
        self.api_key = api_key
        self.page_size = page_size
        self.contacts: dict[str, dict] = {}  # crm_id -> contact
        self.orders: dict[int, dict] = {}
        self.changes: list[dict] = []  # the feed: snapshots of changed contacts, in order
        self.received: Counter = Counter()  # pushes per ("contacts"|"orders", key)
        self.idempotency_keys: set[str] = set()  # of items taken: a repeat is dropped
        self.repeated = 0  # items dropped because their idempotency key was seen
        # for fault tests: a batch holding one of these keys (contact number or order id) is
        # answered with the status code given, and nothing of it is stored
        self.poison: dict[str, int] = {}
        # when set, the answer to a batch holding one of the ``hold`` keys (any batch, if
        # none are given) waits on this event after the batch is stored: a crash test
        self.answer_gate: threading.Event | None = None
        self.hold: set[str] = set()
        self.down = 0  # answer the next N requests 503
        self.retry_after = 1
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(2).upper()
        self._lock = threading.Lock()

    def _new_id(self) -> str:
        """Ids unique to this CRM, as a real CRM's are: a bridge that kept its links from an
        earlier run against another CRM never mistakes one contact for another."""
        return f"C{self._prefix}{next(self._ids):06d}"

    # -- the CRM operator's side ------------------------------------------------------------
    def create(self, **fields) -> str:
        with self._lock:
            crm_id = self._new_id()
            self.contacts[crm_id] = {"crm_id": crm_id, **dict.fromkeys(CONTACT_FIELDS), **fields}
            self._log(crm_id)
        return crm_id

    def change(self, crm_id: str, **fields) -> None:
        with self._lock:
            self.contacts[crm_id].update(fields)
            self._log(crm_id)

    def by_number(self, number: str) -> dict | None:
        with self._lock:
            return next((copy.deepcopy(c) for c in self.contacts.values()
                         if c["contact_number"] == number), None)

    def changes_since(self, since: int = 0) -> list[dict]:
        with self._lock:
            return copy.deepcopy(self.changes[since:])

    def _log(self, crm_id: str) -> None:
        snapshot = copy.deepcopy(self.contacts[crm_id])
        snapshot["updated_at"] = len(self.changes) + 1  # the feed position is the version
        self.changes.append(snapshot)

    def pushes(self) -> Counter:
        """``received`` as it is now (a copy: the server's threads go on counting)."""
        with self._lock:
            return Counter(self.received)

    # -- what the bridge calls --------------------------------------------------------------
    def _upsert_contacts(self, items: list[dict]) -> list[dict]:
        answer = []
        for item in items:
            number = item.get("contact_number")
            self.received["contacts", number] += 1
            crm_id = item.get("crm_id") or next(
                (k for k, c in self.contacts.items() if c["contact_number"] == number), None)
            if crm_id is None:
                crm_id = self._new_id()
                self.contacts[crm_id] = {"crm_id": crm_id, **dict.fromkeys(CONTACT_FIELDS)}
            self.contacts[crm_id].update({k: v for k, v in item.items() if k != "crm_id"})
            self._log(crm_id)
            answer.append({"crm_id": crm_id, "contact_number": number})
        return answer

    def _upsert_orders(self, items: list[dict]) -> list[dict]:
        for item in items:
            self.received["orders", item.get("order_id")] += 1
            self.orders[item.get("order_id")] = item
        return [{"order_id": i.get("order_id")} for i in items]

    def _set_numbers(self, items: list[dict]) -> list[dict]:
        for item in items:
            self.contacts[item["crm_id"]]["contact_number"] = item["contact_number"]
            self._log(item["crm_id"])
        return items

    def app(self) -> Flask:
        app = Flask(__name__)
        writers = {"contacts": self._upsert_contacts, "orders": self._upsert_orders,
                   "contact-numbers": self._set_numbers}

        def refuse() -> Response | None:
            with self._lock:
                if self.down > 0:
                    self.down -= 1
                    return Response("down for maintenance", 503,
                                    {"Retry-After": str(self.retry_after)})
            if self.api_key and not hmac.compare_digest(
                    request.headers.get("x-api-key", "").encode(), self.api_key.encode()):
                return Response("wrong API key", 401)
            return None

        @app.post("/api/<what>")
        def write(what):
            if what not in writers:
                return Response("not found", 404)
            refused = refuse()
            if refused:
                return refused
            items = request.get_json(silent=True)
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                return Response("expected a JSON array of objects", 400)
            codes = [self.poison[k] for i in items
                     if (k := str(i.get("order_id") or i.get("contact_number"))) in self.poison]
            if codes:
                return Response("refused by the CRM's own rules", codes[0])
            keys = [k.strip() for k in request.headers.get("Idempotency-Key", "").split(",")]
            with self._lock:
                if len(keys) == len(items) and all(keys):  # each item's key, in order
                    fresh = [(k, i) for k, i in zip(keys, items, strict=True)
                             if k not in self.idempotency_keys]
                    self.repeated += len(items) - len(fresh)
                    self.idempotency_keys.update(k for k, _ in fresh)
                    items = [i for _, i in fresh]
                answer = writers[what](items)
            if self.answer_gate is not None and (not self.hold or any(
                    str(i.get("order_id") or i.get("contact_number")) in self.hold
                    for i in items)):
                self.answer_gate.wait(60)
            return Response(orjson.dumps(answer), 200, mimetype="application/json")

        @app.get("/api/changes")
        def changes():
            refused = refuse()
            if refused:
                return refused
            since = request.args.get("since", "0")
            if not since.isdigit():
                return Response("since: expected a number", 400)
            items = self.changes_since(int(since))[:self.page_size]
            mark = items[-1]["updated_at"] if items else int(since)
            return Response(orjson.dumps({"items": items, "watermark": mark}), 200,
                            mimetype="application/json")

        return app
