"""The offers' page in the operator's console (``register_operator_pages``): the latest offers
of the CRM operator and of each reseller, with their state, their S-360 order and what went
wrong, filtered by institution, caller and state."""

from __future__ import annotations

import orjson
from flask import Blueprint, render_template, request

from . import offering, store

LIMIT = 200
SHOWN_DONE = ("closed", "released", "cancelled")


def offers_page(bridge) -> Blueprint:
    blueprint = Blueprint("offers_console", __name__, template_folder="templates")

    @blueprint.get("/offers")
    def offers():
        code = request.args.get("institution") or None
        caller = (request.args.get("caller") or "").strip() or None
        state = (request.args.get("state") or "").strip() or None
        # a finished offer shows how it ended (closed, released, cancelled): stored as done
        stored = "done" if state in SHOWN_DONE else state
        rows = store.listing(bridge.engine, code, LIMIT,
                             None if caller is None else "" if caller == "crm" else caller,
                             stored)
        shown = []
        for row in rows:
            view = offering.view(row, "")
            if state and view["state"] != state:
                continue
            result = orjson.loads(row["result"]) if row["result"] else {}
            shown.append({**view, "caller": row["caller"] or "crm",
                          "updated_at": row["updated_at"],
                          "amount": (result.get("amounts") or {}).get("saleAmount")})
        return render_template("offers/console.html", offers=shown, limit=LIMIT,
                               institutions=sorted(bridge.settings.institutions),
                               filters={"institution": code, "caller": caller, "state": state})

    return blueprint
