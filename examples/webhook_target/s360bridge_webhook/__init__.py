"""s360bridge-webhook: a target type that forwards the records of any stream to one URL as
signed webhooks, the Standard Webhooks way (https://www.standardwebhooks.com/).

One POST per record (a message per event), with

* the body: the record as compact UTF-8 JSON,
  ``{"institution": …, "stream": …, "key": …, "seq": …, "record": {…}}``;
* ``webhook-id``: the record's idempotency key, ``institution/stream/key@seq``, the same on
  every delivery of that version, so that the receiver drops a repeat by it (percent-encoded
  but for letters, digits and ``/@_-~``, and a dot too: the spec forbids dots in the id, and
  HTTP headers take ASCII only);
* ``webhook-timestamp``: the time of this attempt, in Unix seconds;
* ``webhook-signature``: ``v1,`` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")).

The secret comes from an environment variable and is written as Standard Webhooks writes
secrets: ``whsec_`` followed by the base64 of the key, 24 to 64 bytes. Anything else stops
start-up: a raw passphrase would be read as bytes by some receivers and as base64 by others,
and their signatures would never match.

This plugin imports nothing of s360bridge but its public API (docs/plugins.md walks through it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from urllib.parse import quote

from s360bridge.core.api import (
    ANY_STREAM,
    ConfigError,
    PushResult,
    Refused,
    ServerError,
    Target,
    TargetUnavailable,
    hookimpl,
    require,
    send,
    session_for,
)

require(3, "s360bridge-webhook")  # per-item push outcomes and idempotency keys

SECRET_PREFIX = "whsec_"


def signing_key(secret) -> bytes:
    """The HMAC key of a Standard Webhooks secret: ``whsec_`` + base64 of 24 to 64 bytes.
    The messages name the variable, never its value."""
    text, where = secret.value, f"secret (${secret.env})"
    if not text.startswith(SECRET_PREFIX):
        raise ConfigError(f"{where}: expected whsec_ followed by the base64 of the key, as "
                          "Standard Webhooks writes secrets")
    encoded = text.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        raise ConfigError(f"{where}: what follows whsec_ is not base64") from None
    if not 24 <= len(key) <= 64:
        raise ConfigError(f"{where}: the key has {len(key)} bytes; Standard Webhooks keys have "
                          "24 to 64")
    return key


def message_id(idempotency_key: str) -> str:
    """The ``webhook-id`` of a record: its idempotency key, with no dot and only ASCII."""
    return quote(idempotency_key, safe="/@").replace(".", "%2E")


def message_body(institution: str, stream: str, record) -> bytes:
    """The body of one message, serialized once: the bytes signed are the bytes sent."""
    return json.dumps({"institution": institution, "stream": stream, "key": record.key,
                       "seq": record.seq, "record": record.record},
                      ensure_ascii=False, separators=(",", ":")).encode()


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: HMAC-SHA256 over ``{id}.{timestamp}.{body}``."""
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def _positive(options: dict, name: str, default, kind, what: str):
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
        raise ConfigError(f"{name}: expected {what} above 0, got {value!r}")
    return value


class WebhookTarget(Target):
    kind = "webhook"
    OPTIONS = frozenset({"url", "secret", "timeout_seconds", "batch_size"})
    SECRETS = frozenset({"secret"})  # only {$env: NAME}; it arrives as a Secret

    def __init__(self, name, options, ctx):
        super().__init__(name, options, ctx)  # refuses options not in OPTIONS
        self.url = options.get("url")
        if not isinstance(self.url, str) or not self.url.startswith(("https://", "http://")):
            raise ConfigError("url: required, the http(s) URL the messages are POSTed to")
        if "secret" not in options:
            raise ConfigError("secret: required, as {$env: NAME}; NAME holds whsec_…")
        self.key = signing_key(options["secret"])
        self.secret_env = options["secret"].env
        self.timeout = _positive(options, "timeout_seconds", 15, int | float, "seconds")
        self.batch_size = _positive(options, "batch_size", 50, int, "a whole number")
        self.session = session_for(None)  # the signature is the authentication

    def describe(self) -> str:
        return f"webhook {self.url} (Standard Webhooks, secret ${self.secret_env})"

    def post(self, msg_id: str, body: bytes) -> None:
        """POST one message, signed now; raises as ``send`` does unless the answer is 2xx."""
        timestamp = int(time.time())
        headers = {"content-type": "application/json", "webhook-id": msg_id,
                   "webhook-timestamp": str(timestamp),
                   "webhook-signature": signature(self.key, msg_id, timestamp, body)}
        send(self.session, "POST", self.url, self.timeout, data=body, headers=headers)

    def push(self, messages: list[tuple[str, bytes]]) -> PushResult:
        """One POST per message, and what became of each: a 2xx delivered it; a 4xx but 408
        and 429 (``Refused``) rejects it, a dead letter at once; a 500 retries it later; a
        receiver that is down (no answer, timeout, 408, 429, 502-504, 401/403) retries it and
        every message after it, which are not sent now."""
        result = PushResult()
        for i, (msg_id, body) in enumerate(messages):
            try:
                self.post(msg_id, body)
            except Refused as exc:
                result.reject(i, str(exc))
            except ServerError as exc:  # before TargetUnavailable: it is one
                result.retry_later(i, str(exc))
            except TargetUnavailable as exc:
                for rest in range(i, len(messages)):
                    result.retry_later(rest, str(exc), after=exc.retry_after)
                break
        return result

    def close(self) -> None:
        self.session.close()


@hookimpl
def register_targets(register):
    register(WebhookTarget.kind, WebhookTarget)


@hookimpl
def register_transforms(register):
    register(ANY_STREAM, WebhookTarget.kind)  # any stream's records, as they are


@hookimpl
def transform(institution, stream, target, records):
    return [(message_id(r.idempotency_key), message_body(institution.code, stream.name, r))
            for r in records]


@hookimpl
def push(institution, stream, target, items):
    return target.push(items)
