"""``/crm/offers/{institution}``: the CRM operator creates an offer, follows it up, reads it;
and the catalog (offering.py says how requests are answered). The operator calls with the
service's own ``auth``; a reseller's credentials are for its own API (reseller_api.py)."""

from __future__ import annotations

import datetime as dt
import logging

from flask import Blueprint, request

from s360bridge.core.api import (
    RequestRefused,
    S360ApiError,
    S360AuthError,
    S360BusinessError,
    S360QuotaSpent,
    json_response,
    service_request,
)

from . import catalog as cache
from . import offering, resellers
from .sequence import CREDENTIALS_REFUSED

log = logging.getLogger("s360bridge.offers")
bp = Blueprint("offers", __name__)


@bp.errorhandler(S360ApiError)
def _s360_unavailable(exc: S360ApiError):
    """S-360 could not be read (the catalog, a contact): nothing was ordered, ask again."""
    if isinstance(exc, S360AuthError):  # the details name the venue's set-up: the log only
        log.error("%s %s: %s", request.method, request.path, exc)
        return json_response({"error": CREDENTIALS_REFUSED, "status": 503}, 503,
                             {"Retry-After": "300"})
    if isinstance(exc, S360BusinessError):
        return json_response({"error": str(exc), "status": 422}, 422)
    if isinstance(exc, S360QuotaSpent):
        now = dt.datetime.now(dt.UTC)  # the quota is whole again next month (UTC)
        month = (now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
                 + dt.timedelta(days=32)).replace(day=1)
        return json_response({"error": str(exc), "status": 429}, 429, {
            "Retry-After": str(int((month - now).total_seconds()) + 1)})
    done = ", nothing was ordered" if request.method == "POST" else ""
    return json_response({"error": f"S-360 is unavailable{done}: {exc}", "status": 503}, 503,
                         {"Retry-After": "30"})


def admitted(code: str):
    """The request (see service_request), made with the operator's credentials."""
    req = service_request("offers", code)
    if req.caller is not None:
        raise RequestRefused(403, f"these are the credentials of reseller "
                                  f"{req.caller.name!r}: its API is /resellers/v1/{code}")
    return req


def _base(code: str) -> str:
    return f"/crm/offers/{code}"


@bp.post("/crm/offers/<code>")
def create(code: str):
    req = admitted(code)
    body = offering.requested_offer()
    resellers.check_offer(req.bridge, req.institution, "", body)  # the CRM's own settings
    return offering.create(req, body, "", _base(code))


@bp.get("/crm/offers/<code>/<int:offer_id>")
def show(code: str, offer_id: int):
    req = admitted(code)
    return offering.answer(offering.owned(req, "", offer_id), _base(code))


@bp.post("/crm/offers/<code>/<int:offer_id>/<action>")
def follow_up(code: str, offer_id: int, action: str):
    req = admitted(code)
    return offering.follow_up(req, offering.owned(req, "", offer_id), action, _base(code))


@bp.get("/crm/catalog/<code>")
def catalog(code: str):
    req = admitted(code)
    channel = resellers.channel_of(req.institution, "")
    data, pos = cache.catalog_of(req.bridge, req.institution, channel)
    if req.config.options.get("families"):  # the CRM operator's own, if it has some
        data = resellers.catalog_for(data, set(req.config.options["families"]))
    left = (cache.availability_of(req.bridge, req.institution, channel) or {}).get("data", {})
    return json_response({"catalog": data, "audiences": pos["audiences"],
                          "availability": left})
