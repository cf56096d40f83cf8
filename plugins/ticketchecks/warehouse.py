"""The ``ticket_checks`` warehouse table: access time kept in UTC and in local time."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, String

from s360bridge.core.api import StoredRecord, WarehouseRow, parse_s360_time, warehouse_table

from .columns import Columns

TICKET_CHECKS = warehouse_table(
    "ticket_checks",
    Column("check_key", String(64), primary_key=True),
    Column("ticket_check_id", BigInteger),
    Column("movement_id", BigInteger),
    Column("ticket_id", BigInteger),
    Column("barcode", String(64)),
    Column("access_time_utc", DateTime),
    Column("access_time_local", DateTime),
    Column("check_flow", String(20)),
    Column("result", String(40)),
    Column("failure_reason", String(200)),
)


def _int(value):
    return None if value is None else int(value)


def check_row(institution, cols: Columns, stored: StoredRecord) -> WarehouseRow:
    r = stored.record
    get = {c: r.get(name) for c, name in cols.mapping}
    utc, local = parse_s360_time(get["access_time"], institution.timezone)
    return WarehouseRow(TICKET_CHECKS, {
        "institution": institution.code, "check_key": stored.key,
        "ticket_check_id": _int(get["ticket_check_id"]), "movement_id": _int(get["movement_id"]),
        "ticket_id": _int(get["ticket_id"]), "barcode": get["barcode"],
        "access_time_utc": utc, "access_time_local": local,
        "check_flow": get["check_flow"], "result": get["result"],
        "failure_reason": get["failure_reason"],
        "source_seq": stored.seq, "received_at": stored.received_at, "raw": stored.payload,
    })
