"""The operator listener's Flask application: what an operator (and Prometheus) reads, on a port
of its own, bound to localhost by default, apart from the public receiver S-360 calls.

Every request, to any path, needs the listener's credentials (``engine.operator.auth``, from
``$env``); without them the answer is a 401 with an empty body and nothing else. The pages are
blueprints, each made for the bridge by a function of ``BLUEPRINTS``: ``/metrics`` and the
operator's console (core/operator/console/).
"""

from __future__ import annotations

import logging

from flask import Flask, Response, request

from s360bridge.core.bridge import Bridge
from s360bridge.core.errors import ConfigError
from s360bridge.core.operator.console import console_blueprint
from s360bridge.core.operator.metrics import metrics_blueprint
from s360bridge.core.pipeline.receiver import presented
from s360bridge.core.pipeline.refusals import RefusalLog

log = logging.getLogger("s360bridge.operator")

BLUEPRINTS = (metrics_blueprint, console_blueprint)  # each (bridge) -> flask.Blueprint


def create_operator_app(bridge: Bridge) -> Flask:
    """The operator listener's application for one Bridge (its settings: engine.operator)."""
    settings = bridge.settings.engine.operator
    if settings.auth.type == "none":
        raise ConfigError(f"{settings.source or 'engine.operator'}: engine.operator.auth: the "
                          "operator listener needs credentials of its own: basic or api_key")
    settings.check_secret()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024  # its forms are small (server.py also says so)
    app.extensions["s360bridge"] = bridge
    refusals = RefusalLog(log)
    challenge = {"WWW-Authenticate": 'Basic realm="s360bridge operator"'} \
        if settings.auth.type == "basic" else {}

    @app.before_request
    def _authenticate():
        if not presented(settings.auth):
            refusals.refused("401 operator", "%s %s from %s refused with 401: missing or wrong "
                             "operator credentials", request.method, request.path,
                             request.remote_addr)
            return Response(b"", 401, challenge)
        return None

    for make in BLUEPRINTS:
        app.register_blueprint(make(bridge))
    return app
