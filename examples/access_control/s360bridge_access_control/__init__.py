"""s360bridge-access-control: S-360's access-control webhook as a stream, ``accesscontrol``.

S-360 pushes the ticket list of a visit pass, performance or event to a gate system, by hand or
every M minutes, as a JSON array of tickets (REFERENCE d.1, FOUND W4): ``barcode``,
``ticketId``, ``ticketState``, ``cancellationCause``, ``tariffCode``, ``productId``,
``productCode``, ``validityStartTime``/``validityEndTime``, ``culturalContactNumber``,
``holderInfo``, ``salesChannelCodeMapping``, ``orderId``, ``creationDate``, ``groupSize``,
``price``. Point S-360's "Control Interfaces" interface at ``POST /s360/accesscontrol/{code}``.

Each ticket is a record keyed by its ``ticketId`` (the stream option ``key: barcode`` keys it
by barcode instead). The same list pushed again stores nothing: the engine keeps a new version
of a key only when its content differs from every version it holds, so a ticket gets a new
version when its state (or anything else in it) changes. Its rows go to the ``access_tickets``
warehouse table through the declarative table spec, and to any jsonl journal as they are.

This plugin imports nothing of s360bridge but its public API (docs/plugins.md walks through it).
"""

from __future__ import annotations

from functools import cache

from sqlalchemy import BigInteger, Column, DateTime, Integer, String, Text

from s360bridge.core.api import (
    ConfigError,
    RecordValidator,
    Stream,
    WarehouseRow,
    hookimpl,
    load_schema,
    require,
    stream_hooks,
    utc_or_none,
    warehouse_table,
)

require(3, "s360bridge-access-control")

KEYS = ("ticketId", "barcode")  # both documented on every ticket (REFERENCE d.1)


def check_options(options: dict) -> None:
    """The stream's ``options:``, checked at start-up."""
    if set(options) - {"key"}:
        raise ConfigError(f"unknown option(s) {', '.join(sorted(set(options) - {'key'}))} "
                          "(known: key)")
    if options.get("key", KEYS[0]) not in KEYS:
        raise ConfigError(f"key: expected one of {', '.join(KEYS)}, got {options['key']!r}")


STREAM = Stream("accesscontrol", "S-360 access-control ticket lists",
                check_options=check_options)
SCHEMA = load_schema(__name__)  # schema.json, shipped in this package


def key_field(institution) -> str:
    return institution.streams[STREAM.name].options.get("key", KEYS[0])


@cache
def validator(key: str) -> RecordValidator:
    """The schema, with the key field required too; built once per key field."""
    return RecordValidator({**SCHEMA, "required": [*SCHEMA["required"], key]})


def key_of(institution):
    field = key_field(institution)
    return lambda ticket: str(ticket[field])


register_streams, receive = stream_hooks(
    STREAM, lambda institution: validator(key_field(institution)), key_of)


ACCESS_TICKETS = warehouse_table(
    "access_tickets",
    Column("ticket_key", String(64), primary_key=True),  # the record's key
    Column("ticket_id", BigInteger),
    Column("barcode", String(64)),
    Column("ticket_state", String(40)),
    Column("cancellation_cause", Text),
    Column("tariff_code", Text),
    Column("product_id", BigInteger),
    Column("product_code", Text),
    Column("validity_start_utc", DateTime),
    Column("validity_end_utc", DateTime),
    Column("contact_number", String(40)),
    Column("sales_channel", Text),
    Column("order_id", BigInteger),
    Column("created_utc", DateTime),
    Column("group_size", Integer),
    Column("price", BigInteger),  # thousandths of the currency unit (REFERENCE c.6)
    personal_key="contact_number",  # `s360bridge forget` erases the contact's rows
)


def ticket_row(institution, stored) -> WarehouseRow:
    """One version of a ticket as a row; times in UTC (S-360 writes them with an offset)."""
    t, zone = stored.record, institution.timezone
    return WarehouseRow(ACCESS_TICKETS, {
        "institution": institution.code, "ticket_key": stored.key,
        "ticket_id": t.get("ticketId"), "barcode": t.get("barcode"),
        "ticket_state": t["ticketState"], "cancellation_cause": t.get("cancellationCause"),
        "tariff_code": t.get("tariffCode"), "product_id": t.get("productId"),
        "product_code": t.get("productCode"),
        "validity_start_utc": utc_or_none(t.get("validityStartTime"), zone),
        "validity_end_utc": utc_or_none(t.get("validityEndTime"), zone),
        "contact_number": t.get("culturalContactNumber"),
        "sales_channel": t.get("salesChannelCodeMapping"), "order_id": t.get("orderId"),
        "created_utc": utc_or_none(t.get("creationDate"), zone),
        "group_size": t.get("groupSize"), "price": t.get("price"),
        # the version and the record as received, as every top-level warehouse table has
        "source_seq": stored.seq, "received_at": stored.received_at, "raw": stored.payload,
    })


@hookimpl
def register_transforms(register):
    register(STREAM.name, "sql")  # rows of ACCESS_TICKETS; jsonl takes any stream by itself


@hookimpl
def transform(institution, stream, target, records):
    return [ticket_row(institution, r) for r in records]
