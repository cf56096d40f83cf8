"""Stream ``crm_contacts``: contact changes made in the CRM, on their way to S-360.

Two ways in, both into the engine's inbox (the durable outbox of this direction): the CRM POSTs
its changes to ``/crm/contacts/{institution}`` (authenticated like the S-360 endpoints), or a
scheduled job reads the CRM's "changed since" URL from a stored watermark (``options.poll``).
Records are the CRM's own, keyed by its id (``options.key``, default ``crm_id``), and a mapping
(``options.mapping``) says which CRM field feeds which S-360 contact field. The ``s360_contacts``
target (to_s360.py) delivers them through the Contact API.
"""

from __future__ import annotations

import logging
from functools import cache

import orjson
from jsonschema import Draft202012Validator
from sqlalchemy import Column, MetaData, String, Table, Text, select

from s360bridge.core.api import (
    AUTH_SCHEMA,
    ConfigError,
    Mapping,
    RecordValidator,
    Stream,
    TargetUnavailable,
    dialect_insert,
    hookimpl,
    ingest,
    schema_error,
    send,
    session_for,
    stream_hooks,
    write,
)

from . import migrations

log = logging.getLogger("s360bridge.crm_contacts")

# CRM field -> S-360 field, for the reference CRM (s360bridge.simulator.crm)
DEFAULT_MAPPING = {
    "contactNumber": "contact_number",
    "individualContact.individualFirstname": "first_name",
    "individualContact.individualLastname": "last_name",
    "individualContact.email": "email",
    "individualContact.phoneNumber1": "phone",
}
OPTIONS_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "key": {"type": "string", "minLength": 1},
        "mapping": {"type": "object"},
        "match_by_email": {"type": "boolean"},
        "poll": {"type": "object", "required": ["url"], "additionalProperties": False,
                 "properties": {"url": {"type": "string", "pattern": "^https?://"},
                                "every_seconds": {"type": "number", "minimum": 1},
                                "auth": AUTH_SCHEMA,
                                "timeout_seconds": {"type": "number", "exclusiveMinimum": 0},
                                "since_param": {"type": "string"},
                                "items_field": {"type": "string"},
                                "watermark_field": {"type": "string"},
                                "max_pages": {"type": "integer", "minimum": 1}}},
    },
}
_OPTIONS = Draft202012Validator(OPTIONS_SCHEMA)


def check_options(options: dict) -> None:
    error = schema_error(_OPTIONS, options)
    if error:
        raise ConfigError(error)
    mapping(options)


def mapping(options: dict) -> Mapping:
    """The inbound mapping; its sources must be top-level CRM fields (they are compared)."""
    m = Mapping(options.get("mapping") or DEFAULT_MAPPING, "mapping")
    nested = sorted(p for p in m.sources() if "." in p)
    if nested:
        raise ConfigError(f"mapping: read top-level CRM fields only (not {', '.join(nested)})")
    if "contactNumber" not in m.spec:
        raise ConfigError("mapping: contactNumber is required (the CRM field holding the S-360 "
                          "contact number, empty for a contact S-360 does not know yet)")
    return m


@cache
def _validator(key: str) -> RecordValidator:
    return RecordValidator({"$schema": "https://json-schema.org/draft/2020-12/schema",
                            "type": "object", "required": [key],
                            "properties": {key: {"type": ["string", "integer"], "minLength": 1}}})


def _key(inst) -> str:
    return inst.streams[STREAM.name].options.get("key", "crm_id")


# keyed by the CRM's id, not by contact number: `forget` reaches them through the CRM link
STREAM = Stream("crm_contacts", "CRM contact changes", route="crm/contacts",
                check_options=check_options)


def _key_of(inst):
    key = _key(inst)
    return lambda record: str(record[key])


register_streams, receive = stream_hooks(STREAM, lambda inst: _validator(_key(inst)), _key_of)


# -- polling the CRM ----------------------------------------------------------------------------
# the table is made by migrations/ (branch ``contacts``): change both
WATERMARKS = Table("crm_watermark", MetaData(),
                   Column("institution", String(40), primary_key=True),
                   Column("stream", String(40), primary_key=True),
                   Column("value", Text, nullable=False))


def watermark(engine, institution: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(select(WATERMARKS.c.value).where(
            WATERMARKS.c.institution == institution,
            WATERMARKS.c.stream == STREAM.name)).scalar()


def _store_watermark(engine, institution: str, value: str) -> None:
    with write(engine) as conn:
        ins = dialect_insert(conn, WATERMARKS).values(
            institution=institution, stream=STREAM.name, value=value)
        conn.execute(ins.on_conflict_do_update(index_elements=["institution", "stream"],
                                               set_={"value": ins.excluded.value}))


def poll(bridge, inst) -> int:
    """Read the CRM's changes since the stored watermark into the inbox; answer how many."""
    opts = inst.streams[STREAM.name].options["poll"]
    session = session_for(opts.get("auth"))
    items_field = opts.get("items_field", "items")
    mark_field = opts.get("watermark_field", "watermark")
    total = 0
    try:
        for _ in range(opts.get("max_pages", 20)):
            since = watermark(bridge.engine, inst.code)
            params = {opts.get("since_param", "since"): since} if since is not None else {}
            resp = send(session, "GET", opts["url"], opts.get("timeout_seconds", 10.0),
                        params=params)
            try:
                body = orjson.loads(resp.content)
                items, mark = body[items_field], body[mark_field]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                raise TargetUnavailable(f"GET {opts['url']}: expected an object with "
                                        f"{items_field!r} and {mark_field!r}") from None
            if items:
                result = ingest(bridge, inst, STREAM, items)
                total += len(items)
                if result.quarantined:
                    log.warning("%s: %d CRM change(s) quarantined", inst.code,
                                result.quarantined)
            if mark is None or str(mark) == since:
                break
            _store_watermark(bridge.engine, inst.code, str(mark))  # after the changes are kept
            if not items:
                break
    finally:
        session.close()
    return total


@hookimpl
def register_migrations(register):
    register(migrations)  # crm_watermark


@hookimpl
def register_jobs(register, bridge):
    for inst in bridge.settings.institutions.values():
        cfg = inst.streams.get(STREAM.name)
        if cfg is not None and cfg.enabled and "poll" in cfg.options:
            register(f"poll CRM changes of {inst.code}", cfg.options["poll"].get(
                "every_seconds", 60), lambda inst=inst: poll(bridge, inst))
