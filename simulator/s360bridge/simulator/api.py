"""S-360's backend APIs: JWT checks, the per-method rate limit (HTTP 509) and result envelopes.

``POST /{institution}/{module}/backend-apis/{service}/{version}/{method}``: the institution in
the path stands for S-360's host name (``{institution}.ws.secutix.com``), so one simulator serves
several venues. Limits and the token's freshness are configurable, so that tests and benchmarks
run in seconds (REFERENCE §e.3–§e.5).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import jwt
import orjson
from flask import Flask, Response, request

from . import catalog, channels, contacts, sales
from .catalog import Catalog
from .channels import Channel
from .contacts import BusinessError, ContactStore
from .orders import OrderStore
from .sales import Sales

# service -> (module, version prefix, methods, which store of the institution they use)
SERVICES = {
    "contactInformationPublicService": ("tnco", "v2_", contacts.METHODS, "stores"),
    "catalogService": ("tnseb", "v1_", catalog.METHODS, "catalogs"),
    "availabilityService": ("tnseb", "v1_", catalog.AVAILABILITY_METHODS, "catalogs"),
    "externalOrderFacade": ("tnseb", "v1_", sales.FACADE, "sales"),
    "externalOrderService": ("tnseb", "v1_", sales.SERVICE, "sales"),
}


@dataclass
class ApiAccess:
    """What S-360 knows of one institution's API partner, and its limits."""

    secret: str
    operators: frozenset[str] = frozenset({"SIM_OPERATOR"})
    calls_per_window: int = 60  # per method (S-360: 60 a minute)
    window_seconds: float = 60.0
    iat_unit: str = "seconds"
    # "iat must be less than 1 s old"; a whole-second iat adds up to 1 s more
    max_token_age_seconds: float = 2.0
    # the partner names S-360 issued the secret to (JWT ``iss``, [FOUND e.3]); "tests" is the
    # one the test configurations send; the demo gives the one of its configuration
    partners: frozenset[str] = frozenset({"tests"})
    # operator (JWT ``aud``) -> its sales channel; operators not named here sell on the
    # default channel (every product, the default point of sales)
    channels: dict[str, Channel] = field(default_factory=dict)

    def knows(self, operator) -> bool:
        return operator in self.operators or operator in self.channels


@dataclass(frozen=True)
class Call:
    at: float
    institution: str
    method: str
    status: int


@dataclass
class S360Api:
    """The simulated API side of S-360 for some institutions."""

    access: dict[str, ApiAccess]
    clock: object = time.time
    stores: dict[str, ContactStore] = field(default_factory=dict)
    order_stores: dict[str, OrderStore] = field(default_factory=dict)
    catalogs: dict[str, Catalog] = field(default_factory=dict)
    sales: dict[str, Sales] = field(default_factory=dict)
    open_order_seconds: float = 1200.0  # how long an open order holds its places
    calls: list[Call] = field(default_factory=list)
    force_509: int = 0  # answer the next N calls 509, whatever the budget (tests)
    # seconds to wait before answering a method, after doing its work: a client that dies
    # meanwhile never learns what S-360 did (crash tests)
    slow: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        for code, access in list(self.access.items()):
            self.add(code, access)
        self._used: Counter = Counter()
        self._lock = threading.Lock()

    def add(self, code: str, access: ApiAccess) -> None:
        """Open the API to one more institution, with empty stores."""
        self.access[code] = access
        self.stores.setdefault(code, ContactStore())
        self.order_stores.setdefault(code, OrderStore())
        self.catalogs.setdefault(code, Catalog())
        self.sales.setdefault(code, Sales(self.catalogs[code], self.order_stores[code],
                                          self.open_order_seconds, self.clock))

    def per_window(self, method: str | None = None, institution: str | None = None) -> Counter:
        """Calls answered 200 per window index, as S-360 counts them."""
        with self._lock:
            calls = list(self.calls)
        out: Counter = Counter()
        for c in calls:
            if c.status == 200 and method in (None, c.method) \
                    and institution in (None, c.institution):
                out[int(c.at // self.access[c.institution].window_seconds)] += 1
        return out

    def count(self, method: str | None = None, status: int | None = None) -> int:
        with self._lock:
            return sum(1 for c in self.calls if method in (None, c.method)
                       and status in (None, c.status))

    def _admit(self, code: str, method: str, now: float) -> bool:
        access = self.access[code]
        with self._lock:
            if self.force_509 > 0:
                self.force_509 -= 1
                return False
            window = (code, method, int(now // access.window_seconds))
            if self._used[window] >= access.calls_per_window:
                return False
            self._used[window] += 1
            return True

    def _log(self, now: float, code: str, method: str, status: int) -> None:
        with self._lock:
            self.calls.append(Call(now, code, method, status))

    def check_token(self, code: str, header: str | None, now: float) -> str | None:
        """None when the bearer token is valid for ``code``, else why it is not."""
        return self._claims(code, header, now)[0]

    def _claims(self, code: str, header: str | None, now: float) -> tuple[str | None, dict]:
        problem = self._check(code, header, now)
        if problem:
            return problem, {}
        return None, jwt.decode(header[7:], options={"verify_signature": False})

    def _check(self, code: str, header: str | None, now: float) -> str | None:
        access = self.access[code]
        if not header or not header.startswith("Bearer "):
            return "missing bearer token"
        try:
            claims = jwt.decode(header[7:], access.secret, algorithms=["HS256"],
                                options={"verify_aud": False, "verify_exp": False,
                                         "verify_iat": False})
        except jwt.InvalidTokenError as exc:
            return f"invalid token: {exc}"
        scale = 1000 if access.iat_unit == "milliseconds" else 1
        if claims.get("sub") != code:
            return "token issued for another institution"
        if not access.knows(claims.get("aud")):
            return "unknown operator"
        if claims.get("iss") not in access.partners:  # [FOUND e.3] iss = the partner name
            return "unknown partner"
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int | float) or not isinstance(exp, int | float):
            return "iat and exp are required"
        age = now - iat / scale
        if not -1.0 <= age <= access.max_token_age_seconds:
            return f"stale or future iat ({age:.1f}s old)"
        if exp / scale <= now:
            return "expired token"
        return None

    def app(self) -> Flask:
        app = Flask(__name__)

        @app.post("/<code>/<module>/backend-apis/<service>/<version>/<method>")
        def call(code, module, service, version, method):
            now = self.clock()
            if code not in self.access:
                return Response("unknown institution", 404)
            module_of, prefix, methods, stores = SERVICES.get(service, (None, "", {}, ""))
            handler = methods.get(method) \
                if module_of == module and version.startswith(prefix) else None
            if handler is None:
                self._log(now, code, method, 404)
                return Response("unknown service or method", 404)
            problem, claims = self._claims(code, request.headers.get("Authorization"), now)
            if problem:
                self._log(now, code, method, 401)
                return Response(problem, 401)
            if not self._admit(code, method, now):
                self._log(now, code, method, 509)
                return Response("Bandwidth Limit Exceeded", 509)
            self._log(now, code, method, 200)
            body = request.get_json(silent=True)
            envelope = {"requestId": body.get("requestId") if isinstance(body, dict) else None}
            channel = channels.CURRENT.set(
                self.access[code].channels.get(claims["aud"], channels.DEFAULT))
            try:
                if not isinstance(body, dict):
                    raise BusinessError("failed", "error.request.invalid: expected a JSON object")
                result = {**envelope, "statusCode": "success", "statusDetail": None,
                          **handler(getattr(self, stores)[code], body)}
            except BusinessError as exc:
                result = {**envelope, "statusCode": exc.status_code, "statusDetail": exc.detail}
            finally:
                channels.CURRENT.reset(channel)
            if self.slow.get(method):
                time.sleep(self.slow[method])
            return Response(orjson.dumps(result), 200, mimetype="application/json")

        return app
