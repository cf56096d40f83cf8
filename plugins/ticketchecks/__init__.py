"""Ticket-checks stream: gate scans from the S-360 data-export webhook.

A data-export row has the columns of the venue's query (REFERENCE §d), so the column names and
the key are options of the stream, per institution; the official example query is the default.
"""

from __future__ import annotations

from functools import lru_cache

from s360bridge.core.api import (
    Comparison,
    ConfigError,
    Field,
    RecordValidator,
    Stream,
    hookimpl,
    stream_hooks,
)

from .columns import CANONICAL, Columns, record_schema
from .warehouse import TICKET_CHECKS, check_row


def check_options(options: dict) -> None:
    """Reject unknown options or columns at start-up, with the list of known ones."""
    unknown = set(options) - {"key", "columns"}
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(sorted(unknown))} (known: key, columns)")
    Columns.from_options(options)


def from_csv(institution, row: dict[str, str]) -> dict:
    """A data-export CSV row as the webhook sends it: ids as integers, empty cells as null
    (a value that is not a number stays text, and validation names it)."""
    cols = columns_of(institution)
    numbers = {cols.name(c) for c, spec in CANONICAL.items() if "integer" in spec["type"]}
    record = {}
    for name, value in row.items():
        value = value.strip() if value is not None else ""
        if not value:
            record[name] = None
        elif name in numbers and value.isdigit():
            record[name] = int(value)
        else:
            record[name] = value
    return record


STREAM = Stream("ticketchecks", "S-360 ticket checks (data export)",
                check_options=check_options, from_csv=from_csv,
                dated=lambda inst, r: r.get(columns_of(inst).name("access_time")),
                search_fields=lambda inst: (columns_of(inst).name("barcode"),))


@lru_cache(maxsize=64)
def _validator(columns: Columns) -> RecordValidator:
    return RecordValidator(record_schema(columns))


@lru_cache(maxsize=64)
def _columns(key: str | None, columns: tuple) -> Columns:
    return Columns.from_options({"key": key, "columns": dict(columns)} if key else
                                {"columns": dict(columns)})


def columns_of(institution) -> Columns:
    """The institution's columns, parsed once per distinct options (this runs per request)."""
    options = institution.streams[STREAM.name].options
    return _columns(options.get("key"), tuple(sorted((options.get("columns") or {}).items())))


def key_for(institution):
    key_column = columns_of(institution).key_column
    return lambda record: str(record[key_column])


register_streams, receive = stream_hooks(
    STREAM, lambda inst: _validator(columns_of(inst)), key_for)


@hookimpl
def register_transforms(register):
    register(STREAM.name, "sql")  # rows of TICKET_CHECKS


@hookimpl
def transform(institution, stream, target, records):
    cols = columns_of(institution)
    return [check_row(institution, cols, r) for r in records]


FIELDS = [("barcode", "text"), ("access_time", "datetime"), ("check_flow", "text"),
          ("result", "text")]
WAREHOUSE_COLUMNS = {"barcode": "barcode", "access_time": "access_time_utc",
                     "check_flow": "check_flow", "result": "result"}


@hookimpl
def reconcile(institution, stream, target):
    """The S-360 export is the data-export query itself: its columns are the stream's."""
    cols = columns_of(institution)
    key = Field(cols.key, "text", cols.key_column, cols.key_column)
    fields = [Field(name, kind, cols.name(name), cols.name(name)) for name, kind in FIELDS
              if name != cols.key]
    return Comparison(  # nothing to fetch from an API: the export row is the record
        key, fields, TICKET_CHECKS, {cols.key: "check_key", **WAREHOUSE_COLUMNS},
        lambda keys, export_rows: {k: from_csv(institution, row) if row else None
                                   for k, row in export_rows(keys).items()})
