"""Orders stream: the S-360 Order webhook V2, one ``{"orderDetailsData": {...}}`` per record.

Natural key ``orderDetailsData.orderId`` (64-bit integer). Finalised orders arrive: closed or
abandoned; an ``orderState`` or ``orderType`` value not seen before is stored as it is.
"""

from __future__ import annotations

from s360bridge.core.hookspecs import hookimpl
from s360bridge.core.streams import RecordValidator, Stream, load_schema, stream_hooks
from s360bridge.core.timeutil import utc_or_none
from s360bridge.plugins.sql import SqlTarget

from .warehouse import order_row

STREAM = Stream("orders", "S-360 orders", dated=lambda inst, r: utc_or_none(
    r["orderDetailsData"].get("creationDateTime"), inst.timezone))
VALIDATOR = RecordValidator(load_schema(__name__))


def order_key(record: dict) -> str:
    return str(record["orderDetailsData"]["orderId"])


register_streams, receive = stream_hooks(STREAM, lambda inst: VALIDATOR, lambda inst: order_key)


@hookimpl
def transform(institution, stream, target, records):
    if stream.name != STREAM.name or not isinstance(target, SqlTarget):
        return None
    return [order_row(institution, r) for r in records]
