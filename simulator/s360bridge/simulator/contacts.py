"""S-360's contact file and its Contact API methods (ContactInformationPublicService v2_21).

One store per institution feeds both the API and the contact webhook: a contact created or
changed through the API is handed to ``on_change``, which the simulator wires to the webhook
queue, so it comes back to the bridge as S-360 would send it (REFERENCE §b, §f).

Shapes marked INFERRED in the reference: the ``searchContact`` request (``email``) and answer
(``SEARCH_RESULTS``, shared with the client), and the ``saveIndividualContactData`` request
(``contactNumber`` + ``individualContact``).
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import threading
from collections.abc import Callable

from s360bridge.core.api import SEARCH_RESULTS  # INFERRED shape, one place


class BusinessError(Exception):
    """Answered as a result envelope with a non-success ``statusCode`` (HTTP 200)."""

    def __init__(self, status_code: str, detail: str):
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


def _now() -> str:
    t = dt.datetime.now(dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}+00:00"


class ContactStore:
    """The contacts of one institution, by contact number."""

    def __init__(self, first_number: int = 5_000_000, first_id: int = 10228847000000):
        self.contacts: dict[str, dict] = {}
        self.on_change: Callable[[dict], None] = lambda contact: None
        self._numbers = itertools.count(first_number)
        self._ids = itertools.count(first_id)
        self._lock = threading.Lock()

    def add(self, contacts: list[dict]) -> None:
        """Load existing contacts (e.g. generated ones) without webhook pushes."""
        with self._lock:
            for c in contacts:
                self.contacts[c["contactNumber"]] = copy.deepcopy(c)

    def _changed(self, contact: dict) -> None:
        self.on_change(copy.deepcopy(contact))

    def get(self, number: str) -> dict:
        with self._lock:
            contact = self.contacts.get(number)
            if contact is None:
                raise BusinessError("failed", f"error.contact.notFound: {number}")
            return copy.deepcopy(contact)

    def search(self, email: str) -> list[dict]:
        wanted = email.strip().lower()
        with self._lock:
            return [copy.deepcopy(c) for c in self.contacts.values()
                    if (c.get("individualContact") or {}).get("email", "").lower() == wanted]

    def create(self, data: dict) -> dict:
        """A cultural contact from a ``CulturalContactData``; answers the new contact."""
        with self._lock:
            number = str(next(self._numbers))
            person = {"individualFirstname": data.get("firstName"),
                      "individualLastname": data.get("lastName"), "email": data.get("email")}
            if data.get("createLogin"):
                person["login"] = data.get("email")
            contact = {"contactId": next(self._ids), "contactNumber": number,
                       "type": "INDIVIDUAL", "role": "PUBLIC", "creationDate": _now(),
                       "individualContact": {k: v for k, v in person.items() if v is not None}}
            self.contacts[number] = contact
        self._changed(contact)
        return copy.deepcopy(contact)

    def save_individual(self, number: str, fields: dict) -> dict:
        """Overwrite the given ``individualContact`` fields of a contact."""
        with self._lock:
            contact = self.contacts.get(number)
            if contact is None:
                raise BusinessError("failed", f"error.contact.notFound: {number}")
            if contact.get("type") == "STRUCTURE":
                raise BusinessError("failed", f"error.contact.notIndividual: {number}")
            person = contact.setdefault("individualContact", {})
            before = dict(person)
            person.update({k: v for k, v in fields.items() if v is not None})
            for k in [k for k, v in fields.items() if v is None]:
                person.pop(k, None)
            changed = person != before
        if changed:  # S-360 reports a contact whose data changed
            self._changed(contact)
        return copy.deepcopy(contact)


def _require(body: dict, name: str, kind: type):
    value = body.get(name)
    if not isinstance(value, kind) or not value:
        raise BusinessError("failed", f"error.parameter.invalid: {name}")
    return value


def get_contact_data(store: ContactStore, body: dict) -> dict:
    return store.get(_require(body, "contactNumber", str))


def search_contact(store: ContactStore, body: dict) -> dict:
    return {SEARCH_RESULTS: store.search(_require(body, "email", str))}


def create_cultural_contact(store: ContactStore, body: dict) -> dict:
    items = _require(body, "contactDataList", list)
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not (item.get("lastName") or item.get("email")):
            raise BusinessError("failed", f"error.parameter.invalid: contactDataList[{i}]")
    created = [store.create(item) for item in items]
    return {"culturalContactData": created,
            "identifierContactMap": {str(item["identifier"]): c["contactNumber"]
                                     for item, c in zip(items, created, strict=True)
                                     if item.get("identifier") is not None}}


def save_individual_contact_data(store: ContactStore, body: dict) -> dict:
    number = _require(body, "contactNumber", str)
    fields = _require(body, "individualContact", dict)
    contact = store.save_individual(number, fields)
    return {"contactNumber": contact["contactNumber"]}


METHODS = {
    "getContactData": get_contact_data,
    "searchContact": search_contact,
    "createCulturalContact": create_cultural_contact,
    "saveIndividualContactData": save_individual_contact_data,
}
