"""The client of the S-360 backend APIs (REST), shared by every stream that calls S-360.

A call is ``POST {base_url}/{module}/backend-apis/{service}/{version}/{method}`` with a JSON body
and a fresh HS256 JWT (REFERENCE §e.2, §e.3). Each call first takes its place in the shared
per-method budget (core/s360/budget.py); an HTTP 509 waits for the next window; connection errors
and 5xx are retried with backoff (tenacity); the result envelope's ``statusCode`` turns into
typed errors (§e.5). Business errors are never retried.

The sales calls that change an order (CHANGES_ORDERS) are not idempotent (§e.7, INFERRED: made
twice, ``createOrUpdateOrder`` adds its items twice), so they are made again only where S-360
certainly did nothing: a 509, no room in the budget, a connection refused. After a timeout, a
5xx, a lost connection or an ``in_progress`` answer S-360 may have done the work: the call
raises S360Uncertain, and the caller reads what S-360 holds before it sends anything else.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

import jwt
import requests
import urllib3
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from s360bridge.core import instruments
from s360bridge.core.config import S360ApiSettings
from s360bridge.core.errors import S360BridgeError

if TYPE_CHECKING:  # the budget (pyrate-limiter) loads only in processes that call S-360
    from s360bridge.core.s360.budget import CallBudget

log = logging.getLogger("s360bridge.s360api")

# service -> (module path segment, version) as found in the reference (§e.2, §e.6)
SERVICES = {
    "contactInformationPublicService": ("tnco", "v2_21"),
    "externalOrderFacade": ("tnseb", "v1_33"),
    "externalOrderService": ("tnseb", "v1_33"),
    "catalogService": ("tnseb", "v1_33"),
    "availabilityService": ("tnseb", "v1_33"),
}


class S360ApiError(S360BridgeError):
    """A call to an S-360 backend API failed."""


class S360Unavailable(S360ApiError):
    """S-360 cannot answer now (connection, timeout, 5xx): the call may be made again later."""


class S360OverLimit(S360Unavailable):
    """S-360 answered HTTP 509, or the shared call budget had no room in time."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class S360InProgress(S360Unavailable):
    """S-360 answered ``statusCode: in_progress``: the same call must be made again later."""


class S360Unreachable(S360Unavailable):
    """No connection to S-360 could be made: the request never left, S-360 did nothing."""


class S360Uncertain(S360ApiError):
    """A call that changes an order got no clear answer (timeout, 5xx, lost connection, in
    progress): S-360 may or may not have done it. Read what S-360 holds before anything else
    is sent; never make the call again blindly."""


CHANGES_ORDERS = frozenset({  # §h.2–h.4: each call makes or changes an order, or pays
    "createOrUpdateOrder", "createOrUpdateOrderWithGranularity", "closeOrder",
    "createPaymentsAndCloseOrder", "cancelOperations", "abandonMovements", "notifyOrder",
    "reopenOrder"})
NOTHING_DONE = (S360OverLimit, S360Unreachable)  # what even those calls may be made again on
# the caller on whose behalf this thread calls S-360, and its share of the budget (``share``)
_SHARE: ContextVar[tuple[str, CallBudget] | None] = ContextVar("s360_share", default=None)


class S360QuotaSpent(S360ApiError):
    """The month's call quota is spent (or only the sales' reserve is left, for a catalog or
    availability read): nothing was sent, and waiting minutes will not help."""


class S360AuthError(S360ApiError):
    """S-360 refused the credentials (HTTP 401/403): nothing will work until they are fixed."""


class S360BusinessError(S360ApiError):
    """S-360 refused the request itself (``statusCode`` other than success)."""

    def __init__(self, method: str, status_code: str, detail: str | None,
                 expected_exception: str | None):
        what = "; ".join(x for x in (detail, expected_exception) if x) or "no detail given"
        super().__init__(f"S-360 {method} answered {status_code}: {what}")
        self.status_code = status_code
        self.detail = detail
        self.expected_exception = expected_exception


def mint_token(settings: S360ApiSettings, institution: str, now: float) -> str:
    """A JWT for one call: ``sub`` institution, ``aud`` operator, ``iss`` partner (§e.3)."""
    scale = 1000 if settings.iat_unit == "milliseconds" else 1
    iat = int(now * scale)
    claims = {"sub": institution, "aud": settings.operator, "iss": settings.partner,
              "iat": iat, "exp": iat + int(settings.token_ttl_seconds * scale)}
    return jwt.encode(claims, settings.secret.value, algorithm="HS256")


class S360Client:
    """Calls the S-360 backend APIs of one institution inside its shared call budget."""

    def __init__(self, institution: str, settings: S360ApiSettings, budget: CallBudget,
                 session: requests.Session | None = None, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep):
        self.institution = institution
        self.settings = settings
        self.budget = budget
        self.session = session or requests.Session()
        self.clock = clock
        self.sleep = sleep
        self.stats: Counter = Counter()  # (method, outcome) -> calls, for reports and benches
        self._shares: dict[tuple[str, int], CallBudget] = {}

    @contextmanager
    def share(self, name: str, calls: int) -> Iterator[None]:
        """The calls this thread makes inside the block also count against ``calls`` per
        window and method for ``name`` (a reseller's hard cap on its share of the
        institution's budget), across processes like the budget itself."""
        from s360bridge.core.s360.budget import CallBudget

        budget = self._shares.get((name, calls))
        if budget is None:
            budget = self._shares[name, calls] = CallBudget(
                self.budget.engine, calls, self.settings.window_seconds, self.budget.clock)
        token = _SHARE.set((name, budget))
        try:
            yield
        finally:
            _SHARE.reset(token)

    def url(self, service: str, method: str) -> str:
        module, version = SERVICES[service]
        version = self.settings.versions.get(service, version)
        return f"{self.settings.base_url}/{module}/backend-apis/{service}/{version}/{method}"

    def call(self, service: str, method: str, body: dict) -> dict:
        """Make one call (retrying what may be retried); answer the result object. A call
        that changes an order raises S360Uncertain where S-360 may have done it."""
        changes = method in CHANGES_ORDERS
        retrying = Retrying(
            retry=retry_if_exception_type(NOTHING_DONE if changes else S360Unavailable),
            stop=stop_after_attempt(self.settings.retries + 1),
            wait=self._wait, sleep=self.sleep, reraise=True,
            before_sleep=lambda s: log.warning(
                "%s: %s.%s, try %d: %s; trying again in %.1fs", self.institution, service,
                method, s.attempt_number, s.outcome.exception(), s.next_action.sleep))
        try:
            return retrying(self._call_once, service, method, body)
        except S360Unavailable as exc:
            if changes and not isinstance(exc, NOTHING_DONE):
                raise S360Uncertain(f"{exc}; S-360 may have done it: what it holds is read "
                                    "before anything else is sent") from exc
            raise

    def fetch_each(self, service: str, method: str, keys: list[str], body_of
                   ) -> dict[str, dict | None]:
        """One call per key (``body_of(key)``); a key S-360 refuses (not found) gives None."""
        found: dict[str, dict | None] = {}
        for key in keys:
            try:
                found[key] = self.call(service, method, body_of(key))
            except S360BusinessError:
                found[key] = None
        return found

    def _wait(self, state) -> float:
        exc = state.outcome.exception()
        if isinstance(exc, S360OverLimit):
            if exc.retry_after is not None:
                return exc.retry_after
            window = self.settings.window_seconds  # S-360 counts per window: wait for the next
            return window - self.clock() % window + random.uniform(0, min(1.0, window / 10))
        if isinstance(exc, S360InProgress):
            return self.settings.in_progress_wait_seconds
        return wait_exponential_jitter(initial=1, max=30)(state)

    def _call_once(self, service: str, method: str, body: dict) -> dict:
        key = f"{self.institution}/{service}.{method}"
        shared = _SHARE.get()
        if shared is not None and not shared[1].acquire(
                f"{self.institution}/{shared[0]}/{service}.{method}",
                timeout=2 * self.settings.window_seconds):
            raise S360OverLimit(f"{key}: no room in {shared[0]}'s share of the call budget "
                                f"({shared[1].calls} per {shared[1].window_seconds:g}s)")
        if not self.budget.acquire(key, timeout=2 * self.settings.window_seconds):
            raise S360OverLimit(f"{key}: no room in the shared call budget "
                                f"({self.budget.calls} per {self.budget.window_seconds:g}s)")
        self._count_in_month(key, service)
        headers = {"Authorization": "Bearer " + mint_token(self.settings, self.institution,
                                                           self.clock())}
        try:
            resp = self.session.post(self.url(service, method), json=body, headers=headers,
                                     timeout=self.settings.timeout_seconds,
                                     allow_redirects=False)  # a 307 would post it again
        except requests.RequestException as exc:
            self.stats[method, "unreachable"] += 1
            instruments.s360_call(self.institution, method, "unreachable")
            kind = S360Unreachable if _never_sent(exc) else S360Unavailable
            if kind is S360Unreachable:
                self._count_in_month(key, service, back=True)  # it never left
            raise kind(f"S-360 {method}: {type(exc).__name__}: {exc}") from None
        self.stats[method, str(resp.status_code)] += 1
        instruments.s360_call(self.institution, method, str(resp.status_code))
        return self._result(method, resp)

    def _count_in_month(self, key: str, service: str, back: bool = False) -> None:
        """Count the call against the plan's monthly quota, if it has one (core/s360/quota);
        ``back``: uncount one that never left."""
        s = self.settings
        if not s.monthly_calls:
            return
        from s360bridge.core.s360 import quota

        if back:
            quota.give_back(self.budget.engine, self.institution, self.clock())
            return
        reserve = s.monthly_calls // 10 if s.monthly_reserve_for_sales is None \
            else s.monthly_reserve_for_sales
        try:
            quota.spend(self.budget.engine, self.institution, self.clock(), s.monthly_calls,
                        reserve, service in quota.REFRESHES)
        except quota.QuotaSpent as exc:
            raise S360QuotaSpent(f"{key}: {exc} (s360_api.monthly_calls)") from None

    def _result(self, method: str, resp: requests.Response) -> dict:
        code = resp.status_code
        if code == 509:
            after = resp.headers.get("Retry-After")
            raise S360OverLimit(f"S-360 {method}: HTTP 509, over the per-method rate limit",
                                float(after) if after and after.isdigit() else None)
        if code in (401, 403):
            s = self.settings
            raise S360AuthError(
                f"S-360 refused the credentials for {method} (HTTP {code}): check "
                f"s360_api.secret ({s.secret}), operator {s.operator!r}, partner "
                f"{s.partner!r} and iat_unit {s.iat_unit!r}")
        if code >= 500 or code == 408 or 200 < code < 400:  # S-360 may have done it
            raise S360Unavailable(f"S-360 {method}: HTTP {code}")
        if code != 200:
            raise S360ApiError(f"S-360 {method}: HTTP {code} at {resp.url}: check "
                               "s360_api.base_url and versions")
        try:
            result = resp.json()
        except ValueError:
            raise S360Unavailable(f"S-360 {method}: the answer is not JSON") from None
        if not isinstance(result, dict):
            raise S360Unavailable(f"S-360 {method}: expected a result object")
        status = result.get("statusCode")
        if status == "in_progress":
            raise S360InProgress(f"S-360 {method}: in progress, to be called again")
        if status != "success":
            raise S360BusinessError(method, str(status), result.get("statusDetail"),
                                    result.get("expectedException"))
        return result


def _never_sent(exc: requests.RequestException) -> bool:
    """The connection itself failed (refused, no route, name not found, connect timeout): the
    request was never sent. A connection lost later may have delivered it."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.ConnectionError) and isinstance(
        reason, urllib3.exceptions.NewConnectionError | urllib3.exceptions.NameResolutionError)
