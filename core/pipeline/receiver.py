"""The Flask receiver: ``POST /s360/{stream}/{institution}`` (and each stream's own route, such
as ``/crm/contacts/{institution}``) answers 200 once data is stored; the routes of services
(``/crm/offers/{institution}``) admit their requests alike, through ``service_request``.

An unknown institution, a stream or service it does not enable and wrong credentials all get
the same 401: nothing tells a caller which venue codes a bridge serves. The log says why, in a
bounded number of lines (core/pipeline/refusals.py)."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import NamedTuple

import orjson
from flask import Flask, Response, current_app, g, request
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from s360bridge.core import instruments, logs
from s360bridge.core.bridge import Bridge
from s360bridge.core.config import Auth, Caller, Institution, ServiceConfig
from s360bridge.core.errors import PluginError, StoreUnavailable
from s360bridge.core.pipeline import rawjson
from s360bridge.core.pipeline.health import Readiness
from s360bridge.core.pipeline.ingest import ingest
from s360bridge.core.pipeline.refusals import RefusalLog
from s360bridge.core.storage import deadline
from s360bridge.core.storage.db import unavailable

log = logging.getLogger("s360bridge.receiver")


class RequestRefused(Exception):
    """A request unusable as a whole: answered with ``status`` and nothing is stored. The log
    counts refusals by ``kind`` (a few words, never a value of the request)."""

    def __init__(self, status: int, message: str, headers: dict | None = None,
                 kind: str = "refused"):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}
        self.kind = f"{status} {kind}"

    @property
    def answer(self) -> str:
        """What the client is told: the message."""
        return str(self)


class NotAuthorized(RequestRefused):
    """401 with one answer, whatever the reason (the message, which only the log shows)."""

    ANSWER = "not authorized (the bridge's log says why)"

    def __init__(self, kind: str, message: str):
        super().__init__(401, message, {"WWW-Authenticate": 'Basic realm="s360bridge"'}, kind)

    @property
    def answer(self) -> str:
        return self.ANSWER


def json_response(body: dict, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(body), status=status, headers=headers,
                    mimetype="application/json")


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def presented(auth: Auth) -> bool:
    """Whether the request carries the credentials ``auth`` configures."""
    if auth.type == "basic":
        creds = request.authorization
        # `&`, not `and`: both comparisons always run, so timing tells nothing about either
        return (creds is not None and creds.type == "basic"
                and _same(creds.username, auth.username) & _same(creds.password,
                                                                   auth.password.value))
    if auth.type == "api_key":
        return _same(request.headers.get(auth.header), auth.key.value)
    return True


def check_auth(auth: Auth) -> None:
    """Raise NotAuthorized (401) unless the request carries the configured credentials."""
    if not presented(auth):
        raise NotAuthorized("wrong credentials", "missing or wrong basic authentication"
                            if auth.type == "basic" else
                            f"missing or wrong API key in header {auth.header}")


def admit(inst: Institution, auth: Auth) -> None:
    """Refuse a request from outside the institution's ``allowed_sources`` (403), or without
    the credentials ``auth`` configures (401)."""
    if not inst.allows(request.remote_addr):
        raise RequestRefused(403, f"source address {request.remote_addr} is not allowed",
                             kind="source not allowed")
    check_auth(auth)


class ServiceRequest(NamedTuple):
    """What a service's route works with: the running bridge, the institution of the URL, its
    ``services:`` entry of the service, and the caller the credentials name (None: the
    service's own ``auth``)."""

    bridge: Bridge
    institution: Institution
    config: ServiceConfig
    caller: Caller | None = None


def service_request(name: str, code: str) -> ServiceRequest:
    """Admit a request to service ``name`` for institution ``code`` as the receiver admits a
    webhook: 401 for an unknown institution or one that does not enable the service, then
    ``allowed_sources`` (403) and the credentials (401): one of the service's ``callers``, or
    else its own ``auth``. The core calls it before each route of a service runs; the route
    calls it again for what it works with (and who calls)."""
    bridge = current_app.extensions["s360bridge"]
    inst = bridge.institution(code)
    if inst is None:
        raise NotAuthorized("unknown institution", f"unknown institution {code!r}")
    cfg = inst.services.get(name)
    if cfg is None or not cfg.enabled:
        raise NotAuthorized("service not enabled", f"service {name} is not enabled for {code!r}")
    admit(inst, Auth())  # the source address first (403)
    # every caller's credentials are compared, so timing does not tell which one matched
    matched = [c for c in cfg.callers.values() if presented(c.auth)]
    if matched:
        return ServiceRequest(bridge, inst, cfg, matched[0])
    admit(inst, cfg.auth)
    return ServiceRequest(bridge, inst, cfg)


class Payload(NamedTuple):
    """A body's records, the text of each as sent (``originals()``, found only when asked),
    and the ``(text, reason)`` of those that could not be parsed on their own."""

    records: list[dict]
    originals: Callable[[], list[str]]
    unreadable: list[tuple[str, str]]


def parse_records(body: bytes) -> Payload:
    """Parse a body as JSON whatever its Content-Type; one object becomes a list of one. A body
    orjson cannot parse as a whole is taken apart into its objects (rawjson), and an object
    that does not parse on its own is unreadable, not the body."""
    if not body.strip():
        raise RequestRefused(400, "empty body: expected a JSON object or an array of objects")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _parse_each(body, exc)
    if isinstance(data, dict):
        return Payload([data], lambda: rawjson.texts(body), [])
    if not isinstance(data, list):
        raise RequestRefused(400, f"expected a JSON object or an array of objects, got "
                                  f"{type(data).__name__}")
    if not data:
        raise RequestRefused(400, "empty array: nothing to store")
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise RequestRefused(400, f"element {i} of the array is {type(item).__name__}, "
                                      "expected an object")
    return Payload(data, lambda: rawjson.texts(body), [])


def _parse_each(body: bytes, error: orjson.JSONDecodeError) -> Payload:
    """The slow path of a body that does not parse as a whole: each of its objects alone."""
    parts = rawjson.elements(body)
    if not parts:
        raise RequestRefused(400, f"body is not valid JSON: {error}")
    records, texts, unreadable = [], [], []
    for part in parts:
        try:
            record = orjson.loads(part)
        except orjson.JSONDecodeError as exc:
            unreadable.append((rawjson.storable(part), f"not parsed: {exc}"))
        else:
            records.append(record)
            texts.append(part.decode())
    return Payload(records, lambda: texts, unreadable)


def create_app(bridge: Bridge) -> Flask:
    """The receiver's Flask application for one Bridge."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = bridge.settings.engine.max_body_bytes
    app.extensions["s360bridge"] = bridge

    refusals = RefusalLog(log)
    routes = {s.url_path: s for s in bridge.hooks.streams.values()}

    def _count_refused() -> None:
        """A webhook refused as a whole: its records are counted refused (one, when they were
        not read), for a configured institution and stream only: a stranger's URL makes no
        label."""
        args = request.view_args or {}
        if request.endpoint != "receive":
            return
        inst = bridge.institution(args["code"])
        stream = routes.get(f"{args['source']}/{args['path']}")
        if inst is not None and stream is not None and stream.name in inst.streams:
            instruments.refused(inst.code, stream.name, g.get("records", 1))

    @app.errorhandler(RequestRefused)
    def _refused(exc: RequestRefused):
        _count_refused()
        # S-360 will retry what it was refused: the operator needs to see why
        refusals.refused(exc.kind, "%s %s from %s refused with %d: %s", request.method,
                         request.path, request.remote_addr, exc.status, exc)
        return json_response({"error": exc.answer, "status": exc.status}, exc.status,
                             exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        _count_refused()
        message = {405: "method not allowed: S-360 webhooks use POST",
                   413: f"body larger than {bridge.settings.engine.max_body_bytes} bytes"}
        return json_response({"error": message.get(exc.code, exc.description),
                              "status": exc.code}, exc.code)

    @app.errorhandler(StoreUnavailable)
    @app.errorhandler(OperationalError)
    @app.errorhandler(PoolTimeout)
    def _store_unavailable(exc: Exception):
        _count_refused()
        reason = exc if isinstance(exc, StoreUnavailable) else unavailable(exc)
        log.error("%s %s: not stored, answering 503: %s", request.method, request.path, reason)
        return json_response({"error": "the engine database is unavailable: nothing was "
                                       "stored, send it again later", "status": 503},
                             503, {"Retry-After": "60"})

    readiness = Readiness(bridge.engine, bridge.settings.engine.ready_within_seconds)

    @app.get("/health/live")
    def live():
        return json_response({"status": "ok"})

    @app.get("/health/ready")
    @app.get("/health")
    def ready():
        problem = readiness.problem()
        if problem is not None:
            return json_response({"status": "unavailable", "reason": problem}, 503)
        return json_response({"status": "ok"})

    @app.post("/<source>/<path>/<code>")
    def receive(source: str, path: str, code: str):
        inst = bridge.institution(code)
        if inst is None:
            raise NotAuthorized("unknown institution", f"unknown institution {code!r}")
        stream = routes.get(f"{source}/{path}")
        stream_cfg = inst.streams.get(stream.name) if stream else None
        if stream is None or stream_cfg is None or not stream_cfg.enabled:
            raise NotAuthorized("stream not enabled",
                                f"stream {source}/{path} is not enabled for {code!r}")
        stream_name = stream.name
        admit(inst, stream_cfg.auth)
        payload = parse_records(request.get_data(cache=False))
        g.records = len(payload.records) + len(payload.unreadable)
        with logs.context(institution=code, stream=stream_name):
            try:
                result = ingest(bridge, inst, stream, payload.records,
                                originals=payload.originals, unreadable=payload.unreadable)
            except StoreUnavailable as exc:
                return _store_unavailable(exc)
            instruments.received(code, stream_name, result)
            if result.quarantined:
                log.warning("%s/%s: %d record(s) quarantined (see `s360bridge quarantine "
                            "list`)", code, stream_name, result.quarantined)
            log.debug("%s/%s: accepted %d, duplicates %d, quarantined %d, before the cut-off %d",
                      code, stream_name, result.accepted, result.duplicates,
                      result.quarantined, result.before_cutoff)
        return json_response(result.as_dict())

    for blueprint in bridge.hooks.blueprints():
        app.register_blueprint(blueprint)
    _serve_services(app, bridge.hooks.services)
    app.wsgi_app = instruments.counted(
        _bounded(app.wsgi_app, bridge.settings.engine.request_timeout_seconds))
    return app


def _bounded(wsgi_app, seconds: float):
    """Every database connection a request checks out is held ``seconds`` at most, then cut
    (core/storage/deadline.py): the request answers 503 instead of hanging its thread."""

    def app(environ, start_response):
        with deadline.within(seconds):
            return wsgi_app(environ, start_response)

    return app


def _serve_services(app: Flask, services: dict) -> None:
    """Serve each service's blueprint (and those nested in it); the core admits every request
    to one of their routes (``service_request``) before the route runs, so that no route can
    forget to."""
    names = {}
    for service in services.values():
        app.register_blueprint(service.blueprint)
        names[service.blueprint.name] = service.name
    for rule in app.url_map.iter_rules():
        name = names.get(rule.endpoint.partition(".")[0]) if "." in rule.endpoint else None
        if name is not None and "code" not in rule.arguments:
            raise PluginError(f"service {name!r}: route {rule.rule} has no <code> (the "
                              "institution) in its URL")

    @app.before_request
    def _admit_to_service():
        name = names.get((request.blueprint or "").partition(".")[0])
        if name is not None:
            service_request(name, request.view_args["code"])
