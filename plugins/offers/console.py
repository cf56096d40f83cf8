"""The offers' page in the operator's console (``register_operator_pages``): the latest offers
of the CRM operator and of each reseller, with their state, their S-360 order and what went
wrong, filtered by institution, caller and state."""

from __future__ import annotations

import orjson
from flask import Blueprint, render_template, request

from . import offering, store


def offers_page(bridge) -> Blueprint:
    blueprint = Blueprint("offers_console", __name__, template_folder="templates")

    @blueprint.get("/offers")
    def offers():
        code = request.args.get("institution") or None
        caller = request.args.get("caller")
        state = request.args.get("state") or None
        rows = store.listing(bridge.engine, code, limit=500)
        shown = []
        for row in rows:
            if caller is not None and caller != "" and row["caller"] != _caller_of(caller):
                continue
            view = offering.view(row, "")
            if state and view["state"] != state:
                continue
            result = orjson.loads(row["result"]) if row["result"] else {}
            shown.append({**view, "caller": row["caller"] or "crm",
                          "updated_at": row["updated_at"],
                          "amount": (result.get("amounts") or {}).get("saleAmount")})
        return render_template("offers/console.html", offers=shown[:200],
                               institutions=sorted(bridge.settings.institutions),
                               filters={"institution": code, "caller": caller, "state": state})

    return blueprint


def _caller_of(shown: str) -> str:
    return "" if shown == "crm" else shown
