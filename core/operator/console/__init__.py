"""The operator's console: server-rendered pages on the operator listener (core/operator/),
behind its credentials, every action a POST with a CSRF token (Flask-WTF).

Pages: the overview per institution (what ``/metrics`` shows, core/operator/console/figures.py),
search by key, dead letters and quarantine with replay (a dry run first), pause and resume of a
target, reconcile runs, the audit trail, and the pages plugins add (``operator_pages``). Every
action goes through the same function as the CLI's (core/operations/), which records it in the
audit trail with the operator's name.
"""

from __future__ import annotations

import secrets

from flask import Blueprint
from flask_wtf.csrf import CSRFProtect

from .views import register_views


def console_blueprint(bridge) -> Blueprint:
    blueprint = Blueprint("console", __name__, template_folder="templates")

    @blueprint.record_once
    def _protect(state) -> None:
        app = state.app
        # one operator listener process: a key of its own per start (a restart asks the
        # operator to load the form again, nothing else)
        app.secret_key = app.secret_key or secrets.token_hex(32)
        app.config.setdefault("WTF_CSRF_TIME_LIMIT", 8 * 3600)
        CSRFProtect(app)

    @blueprint.after_request
    def _headers(response):
        # never framed (a framed console would let another page click its forms), never kept
        # by a cache (its pages name contacts and orders)
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
        response.headers["Cache-Control"] = "no-store"
        return response

    register_views(blueprint, bridge)
    return blueprint
