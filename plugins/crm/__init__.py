"""The built-in ``http_crm`` target: contacts and orders pushed to any CRM that speaks HTTP/JSON.

Each stream has a URL and a declarative mapping (core/connectors/mapping.py) from the S-360 record
to the CRM's fields; items are POSTed as a JSON array, ``batch_size`` at a time. Non-2xx answers
follow the engine's rules: unavailable (429/503 with Retry-After, 5xx, refused credentials)
retries the batch later; another 4xx isolates the refused record, which retries and then becomes
a dead letter.

Contacts the CRM already holds as they are (see links.py) are not pushed again: this is what stops
a change that came from the CRM from going back to it through the S-360 contact webhook.
"""

from __future__ import annotations

import orjson
from jsonschema import Draft202012Validator

from s360bridge.core.connectors.http import AUTH_SCHEMA, send, session_for
from s360bridge.core.connectors.mapping import Mapping
from s360bridge.core.errors import ConfigError
from s360bridge.core.operations.erasure import erase_versions
from s360bridge.core.plugin.hookspecs import hookimpl
from s360bridge.core.plugin.targets import PushResult, Target

from . import links, migrations

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
    },
}
_VALIDATOR = Draft202012Validator(OPTIONS_SCHEMA)


class HttpCrmTarget(Target):
    kind = "http_crm"

    def __init__(self, name, options, ctx):
        super().__init__(name, options, ctx)
        error = next(iter(_VALIDATOR.iter_errors(options)), None)
        if error is not None:
            where = ".".join(map(str, error.absolute_path)) or "(options)"
            message = error.message if error.validator != "additionalProperties" \
                else error.message.split(" were unexpected")[0] + " not expected"
            if error.absolute_path and error.absolute_path[-1] in ("password", "key", "token"):
                message = "expected a {$env: NAME} reference"
            raise ConfigError(f"{where}: {message}")
        self.urls = {s: self._url(options[s]["url"]) for s in DEFAULT_MAPPINGS if s in options}
        self.contact_numbers_url = self._url(options.get("contact_numbers_url"))
        self.mappings = {s: Mapping(options[s].get("mapping") or DEFAULT_MAPPINGS[s],
                                    f"{s}.mapping") for s in self.urls}
        self.batch_size = options.get("batch_size", 100)
        self.timeout = options.get("timeout_seconds", 10.0)
        self.session = session_for(options.get("auth"))

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

    def post(self, url: str, items: list[dict]):
        return send(self.session, "POST", url, self.timeout, data=orjson.dumps(items),
                    headers={"Content-Type": "application/json"})

    def push(self, institution: str, stream: str, items: list[tuple[str, dict]]) -> PushResult:
        """POST ``(key, body)`` items; contacts the CRM already holds as they are are skipped."""
        if stream == "contacts":
            known = links.views(self.ctx.engine, institution, [k for k, _ in items])
            items = [(k, body) for k, body in items if not links.holds(known.get(k), body)]
        if items:
            self.post(self.urls[stream], [body for _, body in items])
        if stream == "contacts":
            links.remember(self.ctx.engine, institution, [(k, None, b) for k, b in items])
        return PushResult()

    def close(self) -> None:
        self.session.close()


@hookimpl
def register_targets(register):
    register("http_crm", HttpCrmTarget)


@hookimpl
def register_migrations(register):
    register(migrations)  # crm_link (links.py)


@hookimpl
def transform(institution, stream, target, records):
    if not isinstance(target, HttpCrmTarget):
        return None
    mapping = target.mappings.get(stream.name)
    if mapping is None:
        raise ConfigError(f"target {target.name} has no URL for stream {stream.name} "
                          f"(configured: {', '.join(target.urls)})")
    return [(r.key, mapping.apply(r.record)) for r in records]


@hookimpl
def push(institution, stream, target, items):
    if not isinstance(target, HttpCrmTarget):
        return None
    return target.push(institution.code, stream.name, items)


@hookimpl
def forget(bridge, institution, contact_number):
    """The contact's link, and the CRM's changes of it waiting in the inbox (keyed by the
    CRM's id, which only the link knows)."""
    if not any(isinstance(bridge.target(institution, n), HttpCrmTarget)
               for n in institution.targets):
        return []
    crm_id = links.forget(bridge.engine, institution.code, contact_number)
    n = erase_versions(bridge, institution, ["crm_contacts"], crm_id) if crm_id else 0
    return [f"crm link: {'1 row' if crm_id else 'none'}; CRM changes in the inbox: {n}"]
