"""``/resellers/v1/{institution}``: the API of the offers service's resellers (resellers.py),
described by the OpenAPI document it serves (openapi.py).

A reseller calls with its own credentials, sees the catalog of the families it sells, the
cached availabilities with their age, and creates, reads and follows up its own orders only:
another reseller's order, like one that does not exist, is a 404.
"""

from __future__ import annotations

import hashlib
import time

import orjson
from flask import Blueprint, Response, request

from s360bridge.core.api import RequestRefused, json_response, service_request

from . import catalog as cache
from . import offering, openapi, pdf, resellers, settlement

bp = Blueprint("resellers", __name__, url_prefix="/resellers/v1")


def admitted(code: str):
    """The request (see service_request) and the reseller its credentials name."""
    req = service_request("offers", code)
    if req.caller is None:
        raise RequestRefused(403, f"this API is for resellers, with their own credentials "
                                  f"(services.offers.callers); the CRM's is /crm/offers/{code}")
    return req, req.caller.name


def _base(code: str) -> str:
    return f"/resellers/v1/{code}/orders"


def _families(req) -> set[str]:
    return set(req.caller.options["families"])


@bp.get("/<code>/catalog")
def catalog(code: str):
    """The catalog of the reseller's sales channel, the families it sells only; ``ETag`` /
    ``If-None-Match``."""
    req, reseller = admitted(code)
    data, pos = cache.catalog_of(req.bridge, req.institution,
                                 resellers.channel_of(req.institution, reseller))
    body = orjson.dumps({"catalog": resellers.catalog_for(data, _families(req)),
                         "audiences": pos["audiences"]}, option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256(body).hexdigest()[:32]
    tag = {"ETag": f'"{digest}"'}
    if request.if_none_match.contains_weak(digest):
        return Response(status=304, headers=tag)
    return Response(body, 200, tag, mimetype="application/json")


@bp.get("/<code>/availability")
def availability(code: str):
    """What is left of each quota of the reseller's products, as cached, and how old it is."""
    req, reseller = admitted(code)
    channel = resellers.channel_of(req.institution, reseller)
    data, _ = cache.catalog_of(req.bridge, req.institution, channel)
    cached = cache.availability_of(req.bridge, req.institution, channel)
    if cached is None:
        raise RequestRefused(503, "the availabilities are not read yet: ask again shortly",
                             headers={"Retry-After": "10"})
    keys = resellers.quotas_of(resellers.catalog_for(data, _families(req)))
    return json_response({
        "availability": {k: v for k, v in cached["data"].items() if k in keys},
        "age_seconds": round(time.time() - cached["fetched_at"], 1)})


@bp.post("/<code>/orders")
def create(code: str):
    req, reseller = admitted(code)
    body = offering.requested_offer()
    resellers.check_offer(req.bridge, req.institution, reseller, body)
    return offering.create(req, body, reseller, _base(code))


@bp.get("/<code>/orders/<int:offer_id>")
def show(code: str, offer_id: int):
    req, reseller = admitted(code)
    return offering.answer(offering.owned(req, reseller, offer_id), _base(code))


@bp.post("/<code>/orders/<int:offer_id>/<action>")
def follow_up(code: str, offer_id: int, action: str):
    req, reseller = admitted(code)
    row = offering.owned(req, reseller, offer_id)
    return offering.follow_up(req, row, action, _base(code))


@bp.get("/<code>/orders/<int:offer_id>/tickets.pdf")
def order_pdf(code: str, offer_id: int):
    """The order's tickets not cancelled, one page each."""
    req, reseller = admitted(code)
    return _pdf(req, offering.owned(req, reseller, offer_id), None)


@bp.get("/<code>/orders/<int:offer_id>/tickets/<int:movement_id>.pdf")
def ticket_pdf(code: str, offer_id: int, movement_id: int):
    """One ticket."""
    req, reseller = admitted(code)
    return _pdf(req, offering.owned(req, reseller, offer_id), movement_id)


def _pdf(req, row: dict, movement_id: int | None):
    result = orjson.loads(row["result"] or "{}")
    if row["state"] != "done" or result.get("order_type") != "SALE":
        raise RequestRefused(409, f"offer {row['id']} is not a closed sale: no tickets to print")
    tickets = [t for t in result.get("tickets", []) if not t.get("cancelled")
               and movement_id in (None, t["movement_id"])]
    if movement_id is not None and not tickets:
        raise RequestRefused(404, f"no ticket {movement_id} to print in offer {row['id']}")
    if not tickets:
        raise RequestRefused(409, f"offer {row['id']} has no ticket left to print (cancelled)")
    template = req.config.options.get("pdf") or {}
    if template.get("url"):  # S-360's PDF, where the venue knows its address
        url = template["url"].format(order_id=str(row["order_id"]),
                                     movement_id=str(movement_id) if movement_id else "")
        return Response(status=302, headers={"Location": url})
    try:
        body = pdf.render(tickets, template, result.get("currency"))
    except pdf.Unprintable as exc:
        raise RequestRefused(422, str(exc)) from None
    name = f"tickets-{row['order_id']}" + (f"-{movement_id}" if movement_id else "")
    return Response(body, 200, {"Content-Disposition": f'inline; filename="{name}.pdf"'},
                    mimetype="application/pdf")


@bp.get("/<code>/settlement")
def settlement_report(code: str):
    """What the reseller sold and was refunded, per day (``from``, ``to``); ``format=csv``."""
    req, reseller = admitted(code)
    first, last = settlement.period(request.args.get("from"), request.args.get("to"))
    found = settlement.report(req.bridge, req.institution, reseller, first, last)
    if request.args.get("format") == "csv":
        return Response(settlement.as_csv(found["days"]), 200, {
            "X-Differences": str(len(found["differences"]))}, mimetype="text/csv")
    return json_response(found)


@bp.get("/<code>/openapi.json")
def document(code: str):
    """This API's OpenAPI 3.1 document."""
    req, _ = admitted(code)
    return json_response(openapi.document(f"/resellers/v1/{code}", req.caller.auth))
