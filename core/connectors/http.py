"""Calls from the bridge to a system over HTTP/JSON (a CRM): authentication and answers.

Authentication is one of ``{type: none}``, ``{type: basic, username, password}``,
``{type: api_key, header, key}`` or ``{type: bearer, token}``; secrets come from ``$env``
references. A 429 or 503 (with ``Retry-After`` honoured), any other 5xx, refused credentials
and connection errors mean "the system is unavailable, retry the batch later"; another 4xx
refuses the data.
"""

from __future__ import annotations

import datetime as dt
from email.utils import parsedate_to_datetime

import requests

from s360bridge.core.config_secrets import reveal
from s360bridge.core.errors import S360BridgeError, ServerError, TargetUnavailable

AUTH_SCHEMA = {
    "type": "object", "required": ["type"],
    "properties": {"type": {"enum": ["none", "basic", "api_key", "bearer"]},
                   # the secrets: {$env: NAME} references, checked by the loader
                   "username": {"type": "string"}, "password": {}, "header": {"type": "string"},
                   "key": {}, "token": {}},
    "additionalProperties": False,
    "allOf": [
        {"if": {"properties": {"type": {"const": "basic"}}},
         "then": {"required": ["username", "password"]}},
        {"if": {"properties": {"type": {"const": "api_key"}}},
         "then": {"required": ["header", "key"]}},
        {"if": {"properties": {"type": {"const": "bearer"}}}, "then": {"required": ["token"]}},
    ],
}


class Refused(S360BridgeError):
    """The system refused the data (a 4xx other than 408 and 429): sending it again will not
    help. The engine halves a batch so refused to find the item at fault, then rejects it."""


def session_for(auth: dict | None) -> requests.Session:
    """A session that authenticates every request as configured."""
    session = requests.Session()
    auth = auth or {"type": "none"}
    if auth["type"] == "basic":
        session.auth = (auth["username"], reveal(auth["password"]))
    elif auth["type"] == "api_key":
        session.headers[auth["header"]] = reveal(auth["key"])
    elif auth["type"] == "bearer":
        session.headers["Authorization"] = "Bearer " + reveal(auth["token"])
    return session


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: a number of seconds or an HTTP date."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def send(session: requests.Session, method: str, url: str, timeout: float,
         **kwargs) -> requests.Response:
    """Make one request; raise TargetUnavailable or Refused unless it answered 2xx."""
    try:  # a redirect is not followed: requests would turn a POST into a GET without a body
        resp = session.request(method, url, timeout=timeout, allow_redirects=False, **kwargs)
    except requests.RequestException as exc:
        raise TargetUnavailable(f"{method} {url}: {type(exc).__name__}") from None
    code = resp.status_code
    if 200 <= code < 300:
        return resp
    reason = resp.text[:200].strip()
    if code in (401, 403):
        raise TargetUnavailable(f"{method} {url}: HTTP {code}: the credentials were refused")
    if code == 500:
        raise ServerError(f"{method} {url}: HTTP 500 {reason}")
    if code in (408, 429) or code >= 500:
        raise TargetUnavailable(f"{method} {url}: HTTP {code} {reason}",
                                retry_after(resp.headers.get("Retry-After")))
    if 300 <= code < 400:
        raise Refused(f"{method} {url}: HTTP {code}: redirected to "
                      f"{resp.headers.get('Location', '(nowhere)')}; configure that URL")
    raise Refused(f"{method} {url}: HTTP {code} {reason}")
