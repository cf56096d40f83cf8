"""The OpenAPI 3.1 document of the resellers' API (reseller_api.py), built from the schemas the
API checks requests with (offering.py), so that the two cannot drift apart; tests validate it
and compare its paths with the routes."""

from __future__ import annotations

from .offering import CANCEL, FOLLOW_UPS, LINE, OFFER, PURCHASER

ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
ORDER = {"type": "object", "required": ["id", "state", "url"], "properties": {
    "id": {"type": "integer"}, "institution": {"type": "string"},
    "idempotency_key": {"type": "string"}, "action": {"type": "string"},
    "state": {"enum": ["new", "ordering", "open", "closing", "uncertain", "failed", "closed",
                       "released", "cancelled"],
              "description": "where the order is; once finished, what it is"},
    "order_id": {"type": ["integer", "null"], "description": "S-360's order id"},
    "file_id": {"type": ["integer", "null"]}, "expires_at": {"type": ["string", "null"]},
    "error": {"type": ["string", "null"]}, "order_type": {"type": "string"},
    "order_state": {"type": "string"},
    "amounts": {"type": "object", "description": "S-360's integer amounts (thousandths)",
                "additionalProperties": {"type": ["integer", "null"]}},
    "currency": {"type": ["string", "null"]},
    "barcodes": {"type": "array", "items": {"type": "string"}},
    "tickets": {"type": "array", "items": {"$ref": "#/components/schemas/Ticket"}},
    "cancelled": {"type": "array", "items": {"type": "integer"},
                  "description": "the movement ids of the tickets cancelled"},
    "url": {"type": "string"}}}
TICKET = {"type": "object", "required": ["movement_id"], "properties": {
    "movement_id": {"type": "integer", "description": "what a partial cancel names"},
    "operation_id": {"type": ["integer", "null"]}, "product_id": {"type": ["integer", "null"]},
    "product": {"type": ["string", "null"]}, "performance_id": {"type": ["integer", "null"]},
    "seat_category_id": {"type": ["integer", "null"]}, "tariff_id": {"type": ["integer", "null"]},
    "price": {"type": ["integer", "null"], "description": "S-360's integer amount"},
    "barcode": {"type": ["string", "null"]}, "holder": {"type": ["string", "null"]},
    "seat": {"description": "INFERRED: where S-360 puts the seat is not documented"},
    "cancelled": {"type": "boolean"}}}


def _answers(*codes: int, ok: str = "Order") -> dict:
    said = {200: "Done", 201: "Done", 202: "Still running, or uncertain: poll its url",
            304: "Not modified", 400: "The request is not valid", 401: "Wrong credentials",
            403: "Not allowed to this reseller", 404: "No such order of this reseller",
            409: "Not enough places, or not a follow-up of this order",
            410: "The uncertain order expired: nothing was sold",
            422: "Refused by the catalog, the limits or S-360", 429: "Over the order rate",
            503: "Not ready yet, or S-360 unavailable"}
    out = {}
    for code in codes:
        schema = {"$ref": f"#/components/schemas/{ok}"} if code < 300 else \
            {"$ref": "#/components/schemas/Error"}
        out[str(code)] = {"description": said[code]} if code == 304 else {
            "description": said[code], "content": {"application/json": {"schema": schema}}}
    return out


def _malformed(paths: dict) -> dict:
    """Every operation may get a 400: from the API (JSON) or, for a request HTTP itself does
    not allow (a header with control characters), from the server (text)."""
    for operation in (op for ops in paths.values() for op in ops.values()):
        operation["responses"]["400"] = {"description": "The request is not valid", "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}},
            "text/plain": {"schema": {"type": "string"}}}}
    return paths


def _security(auth) -> dict:
    if auth.type == "basic":
        return {"type": "http", "scheme": "basic"}
    return {"type": "apiKey", "in": "header", "name": auth.header}


def document(base: str, auth) -> dict:
    """The document, its server at ``base`` (``/resellers/v1/{institution}``)."""
    order_id = {"name": "order_id", "in": "path", "required": True,
                "schema": {"type": "integer"}}
    refused = (400, 401, 403)
    return {
        "openapi": "3.1.0",
        "info": {"title": "s360bridge resellers API", "version": "1",
                 "description": "Sell a venue's S-360 products: its catalog, availabilities, "
                                "orders (sale, reservation, option) and their follow-ups."},
        "servers": [{"url": base}],
        "security": [{"reseller": []}],
        "paths": _malformed({
            "/catalog": {"get": {
                "operationId": "catalog", "summary": "The products of the families sold",
                "parameters": [{"name": "If-None-Match", "in": "header", "required": False,
                                "schema": {"type": "string"}}],
                "responses": _answers(200, 304, 401, 403, 503, ok="Catalog")}},
            "/availability": {"get": {
                "operationId": "availability", "summary": "What is left, as cached",
                "responses": _answers(200, 401, 403, 503, ok="Availability")}},
            "/orders": {"post": {
                "operationId": "createOrder", "summary": "A sale, reservation or option",
                "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                                "schema": {"type": "string", "minLength": 1,
                                           "maxLength": 200}}],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/OrderRequest"}}}},
                "responses": _answers(201, 202, *refused, 409, 410, 422, 429, 503)}},
            "/orders/{order_id}": {"get": {
                "operationId": "order", "summary": "One of this reseller's orders",
                "parameters": [order_id],
                "responses": _answers(200, 201, 202, 401, 403, 404, 409, 410, 422)}},
            "/orders/{order_id}/{action}": {"post": {
                "operationId": "followUp", "summary": "Confirm, release or cancel an order",
                "parameters": [order_id, {"name": "action", "in": "path", "required": True,
                                          "schema": {"enum": list(FOLLOW_UPS)}}],
                "requestBody": {"required": False, "description": "cancel: some tickets only",
                                "content": {"application/json": {
                                    "schema": {"$ref": "#/components/schemas/Cancel"}}}},
                "responses": _answers(200, 201, 202, *refused, 404, 409, 410, 422, 503)}},
            "/orders/{order_id}/tickets.pdf": {"get": {
                "operationId": "orderTickets", "summary": "The order's tickets as a PDF",
                "parameters": [order_id], "responses": {
                    "200": {"description": "One page a ticket", "content": {
                        "application/pdf": {"schema": {"type": "string",
                                                       "format": "binary"}}}},
                    "302": {"description": "S-360's PDF, where the venue set its URL"},
                    **_answers(401, 403, 404, 409)}}},
            "/orders/{order_id}/tickets/{movement_id}.pdf": {"get": {
                "operationId": "ticket", "summary": "One ticket as a PDF",
                "parameters": [order_id, {"name": "movement_id", "in": "path",
                                          "required": True, "schema": {"type": "integer"}}],
                "responses": {
                    "200": {"description": "The ticket", "content": {
                        "application/pdf": {"schema": {"type": "string",
                                                       "format": "binary"}}}},
                    "302": {"description": "S-360's PDF, where the venue set its URL"},
                    **_answers(401, 403, 404, 409)}}},
            "/settlement": {"get": {
                "operationId": "settlement",
                "summary": "What was sold and refunded, per day in the venue's time zone",
                "parameters": [
                    {"name": "from", "in": "query", "required": True,
                     "schema": {"type": "string", "format": "date"}},
                    {"name": "to", "in": "query", "required": True,
                     "schema": {"type": "string", "format": "date"}},
                    {"name": "format", "in": "query", "required": False,
                     "schema": {"enum": ["json", "csv"]}}],
                "responses": {"200": {"description": "The days, and the differences found",
                                      "content": {"application/json": {"schema": {
                                          "$ref": "#/components/schemas/Settlement"}},
                                                  "text/csv": {"schema": {
                                                      "type": "string"}}}},
                              **_answers(400, 401, 403)}}},
            "/openapi.json": {"get": {
                "operationId": "openapi", "summary": "This document",
                "responses": {"200": {"description": "The OpenAPI document", "content": {
                    "application/json": {"schema": {"type": "object"}}}},
                              **_answers(401, 403)}}},
        }),
        "components": {
            "securitySchemes": {"reseller": _security(auth)},
            "schemas": {
                "OrderRequest": {**OFFER, "properties": {
                    **OFFER["properties"], "purchaser": {"$ref": "#/components/schemas/Contact"},
                    "lines": {"type": "array", "minItems": 1,
                              "items": {"$ref": "#/components/schemas/Line"}}}},
                "Line": LINE, "Contact": PURCHASER, "Order": ORDER, "Error": ERROR,
                "Ticket": TICKET, "Cancel": CANCEL,
                "Settlement": {"type": "object", "required": ["days", "differences"],
                               "properties": {"days": {"type": "array", "items": {
                                   "type": "object"}}, "differences": {
                                   "type": "array", "items": {"type": "object"}}}},
                "Catalog": {"type": "object", "required": ["catalog", "audiences"],
                            "properties": {"catalog": {"type": "object"},
                                           "audiences": {"type": "object"}}},
                "Availability": {"type": "object", "required": ["availability", "age_seconds"],
                                 "properties": {
                                     "availability": {"type": "object",
                                                      "additionalProperties": {
                                                          "type": ["integer", "null"]}},
                                     "age_seconds": {"type": "number"}}},
            }},
    }
