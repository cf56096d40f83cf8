"""The built-in ``http_crm`` target: contacts and orders pushed to any CRM that speaks HTTP/JSON.

Each stream has a URL and a declarative mapping (core/connectors/mapping.py) from the S-360 record
to the CRM's fields; items are POSTed as a JSON array, ``batch_size`` at a time, with their
idempotency keys in one header. Non-2xx answers follow the engine's rules: unavailable (408,
429, 502-504 with Retry-After, refused credentials) retries the batch later; a 500 halves it;
another 4xx isolates the refused record, a dead letter at once.

Contacts the CRM already holds as they are (the API's ``crm_links``) are not pushed again: this
is what stops a change that came from the CRM from going back to it through the S-360 contact
webhook.
"""

from __future__ import annotations

import orjson
from jsonschema import Draft202012Validator

from s360bridge.core.api import (
    AUTH_SCHEMA,
    ConfigError,
    Mapping,
    Target,
    crm_links,
    erase_versions,
    hookimpl,
    schema_error,
    send,
    session_for,
    target_hooks,
)

from .reconcile import crm_side

DEFAULT_MAPPINGS = {
    "contacts": {
        "contact_number": "contactNumber",
        "kind": "type",
        "first_name": "individualContact.individualFirstname",
        "last_name": "individualContact.individualLastname",
        "email": "individualContact.email",
        "phone": "individualContact.phoneNumber1",
        "city": "addresses.0.locality",
        "country": "addresses.0.countryCode",
        "s360_created": {"path": "creationDate", "convert": "date", "format": "%Y-%m-%d"},
    },
    "orders": {
        "order_id": "orderDetailsData.orderId",
        "contact_number": "orderDetailsData.contactReference",
        "type": "orderDetailsData.orderType",
        "state": "orderDetailsData.orderState",
        "created": "orderDetailsData.creationDateTime",
        "sale_amount": {"path": "orderDetailsData.saleAmount", "convert": "amount"},
        "reservation_amount": {"path": "orderDetailsData.reservationAmount",
                               "convert": "amount"},
        "currency": "orderDetailsData.catalogCurrency.currencyCode",
        "lines": {"each": "orderDetailsData.operationDatas", "mapping": {
            "product": "productCode", "quantity": "quantity",
            "unit_price": {"path": "unitPrice", "convert": "amount"},
            "amount": {"path": "totalAmount", "convert": "amount"}}},
    },
}
_URL = {"type": "string", "minLength": 1}
_STREAM_OPTIONS = {"type": "object", "required": ["url"], "additionalProperties": False,
                   "properties": {"url": _URL, "mapping": {"type": "object"}}}
OPTIONS_SCHEMA = {
    "type": "object", "additionalProperties": False, "minProperties": 1,
    "properties": {
        "base_url": {"type": "string", "pattern": "^https?://"},
        "auth": AUTH_SCHEMA,
        "timeout_seconds": {"type": "number", "exclusiveMinimum": 0},
        "batch_size": {"type": "integer", "minimum": 1, "maximum": 5000},
        "contacts": _STREAM_OPTIONS,
        "orders": _STREAM_OPTIONS,
        "contact_numbers_url": _URL,
        "idempotency_header": {"type": "string", "pattern": "^[A-Za-z0-9-]+$"},
    },
}
_VALIDATOR = Draft202012Validator(OPTIONS_SCHEMA)


class HttpCrmTarget(Target):
    kind = "http_crm"
    SECRETS = frozenset({"auth.password", "auth.key", "auth.token"})

    def __init__(self, name, options, ctx):
        super().__init__(name, options, ctx)
        error = schema_error(_VALIDATOR, options)
        if error:
            raise ConfigError(error)
        self.urls = {s: self._url(options[s]["url"]) for s in DEFAULT_MAPPINGS if s in options}
        self.contact_numbers_url = self._url(options.get("contact_numbers_url"))
        self.mappings = {s: Mapping(options[s].get("mapping") or DEFAULT_MAPPINGS[s],
                                    f"{s}.mapping") for s in self.urls}
        self.batch_size = options.get("batch_size", 100)
        self.timeout = options.get("timeout_seconds", 10.0)
        self.idempotency_header = options.get("idempotency_header", "Idempotency-Key")
        self.session = session_for(options.get("auth"))
        self.takes_contact_numbers = bool(self.contact_numbers_url)

    def _url(self, url: str | None) -> str | None:
        """An absolute URL, or one relative to the ``base_url`` option."""
        if url is None or url.startswith(("http://", "https://")):
            return url
        if not self.options.get("base_url"):
            raise ConfigError(f"{url}: a relative URL needs the base_url option")
        return self.options["base_url"].rstrip("/") + "/" + url.lstrip("/")

    def describe(self) -> str:
        auth = (self.options.get("auth") or {}).get("type", "none")
        return f"http_crm {', '.join(f'{s} -> {u}' for s, u in self.urls.items())} ({auth})"

    def post(self, url: str, items: list[dict], keys: list[str] | None = None):
        """POST a JSON array; ``keys``: the idempotency key of each item, in order, sent as one
        header (comma-separated; a comma inside a key is written %2C)."""
        headers = {"Content-Type": "application/json"}
        if keys:
            headers[self.idempotency_header] = ", ".join(k.replace(",", "%2C") for k in keys)
        return send(self.session, "POST", url, self.timeout, data=orjson.dumps(items),
                    headers=headers)

    def deliver(self, inst, stream, items: list[tuple[str, dict, str]]) -> None:
        """POST ``(key, body, idempotency key)`` items; contacts the CRM already holds as they
        are are skipped."""
        institution, stream = inst.code, stream.name
        if stream == "contacts":
            known = crm_links.views(self.ctx.engine, institution, [i[0] for i in items])
            items = [i for i in items if not crm_links.holds(known.get(i[0]), i[1])]
        if items:
            self.post(self.urls[stream], [i[1] for i in items], [i[2] for i in items])
        if stream == "contacts":
            crm_links.remember(self.ctx.engine, institution, [(i[0], None, i[1]) for i in items])

    def write_contact_numbers(self, institution, pairs: list[dict]) -> None:
        if not self.contact_numbers_url:
            super().write_contact_numbers(institution, pairs)
        self.post(self.contact_numbers_url, pairs)

    def reconcile_side(self, institution, stream, comparison):
        return crm_side(self, stream, comparison, institution.timezone.key)

    def close(self) -> None:
        self.session.close()


register_targets, push = target_hooks(HttpCrmTarget)


def _configured_for(institution, stream: str, target) -> str | None:
    """A CRM target serves a stream only when its options give a URL for it."""
    if stream in target.urls:
        return None
    return (f"target {target.name} has no URL for stream {stream} "
            f"(configured: {', '.join(target.urls) or 'none'})")


@hookimpl
def register_transforms(register):
    for stream in DEFAULT_MAPPINGS:
        register(stream, HttpCrmTarget.kind, check=_configured_for)


@hookimpl
def transform(institution, stream, target, records):
    mapping = target.mappings[stream.name]
    return [(r.key, mapping.apply(r.record), r.idempotency_key) for r in records]


@hookimpl
def forget(bridge, institution, contact_number):
    """The contact's link, and the CRM's changes of it waiting in the inbox (keyed by the
    CRM's id, which only the link knows): the changes first, once none is on its way to S-360
    (that push would write the link again), the link last, so that an erasure stopped while
    waiting can be run again."""
    if not bridge.targets_of(institution, HttpCrmTarget.kind):
        return []
    crm_id = crm_links.crm_id(bridge.engine, institution.code, contact_number)
    n = erase_versions(bridge, institution, ["crm_contacts"], crm_id) if crm_id else 0
    crm_links.forget(bridge.engine, institution.code, contact_number)
    return [f"crm link: {'1 row' if crm_id else 'none'}; CRM changes in the inbox: {n}"]
