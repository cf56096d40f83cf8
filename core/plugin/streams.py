"""What a stream is, and the validation helper stream plugins use in their ``receive`` hook."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator

from s360bridge.core.plugin.hookspecs import hookimpl

# Result-envelope fields S-360 may put on a record; they do not make a new version of it.
ENVELOPE_FIELDS = frozenset({"requestId", "statusCode", "statusDetail", "statusMessage",
                             "expectedException"})


@dataclass(frozen=True)
class Stream:
    """A kind of record that arrives on ``POST /{route}/{institution}``: by default
    ``s360/{name}``, as S-360's webhooks call; a stream fed by another system (the CRM) names
    its own route."""

    name: str
    title: str
    route: str = ""  # e.g. "crm/contacts"; "" means "s360/{name}"
    envelope_fields: frozenset[str] = ENVELOPE_FIELDS
    personal_data: bool = False  # holds a contact's personal data (for `forget`)
    check_options: Callable[[dict], None] | None = None  # raises ConfigError on bad options
    # the date-time the history cut-off applies to, as S-360 writes it (None: always kept)
    dated: Callable[[Any, dict], str | None] | None = None
    # a flat stream turns a CSV row (strings) into a record, for imports and reconcile
    from_csv: Callable[[Any, dict[str, str]], dict] | None = None
    # how the versions of a key are ordered before arrival: a version of a lower rank never
    # replaces one of a higher rank in any target, whatever the arrival order (a final state
    # ranks above the others); None: arrival order alone (core/pipeline/versions.py)
    rank: Callable[[Any, dict], int] | None = None
    # the top-level fields, besides the key, an operator finds a record by (a ticket's
    # barcode), for an institution; searched in the stored text, not indexed (a scan of the
    # institution's records of the stream: core/operations/search.py)
    search_fields: Callable[[Any], tuple[str, ...]] | None = None

    @property
    def url_path(self) -> str:
        return self.route or f"s360/{self.name}"


@dataclass
class ReceivedBatch:
    """A batch split into accepted ``(key, record)`` pairs and rejected ``(record, reason)``."""

    accepted: list[tuple[str, dict]] = field(default_factory=list)
    rejected: list[tuple[Any, str]] = field(default_factory=list)


def load_schema(package: str, name: str = "schema.json") -> dict:
    """Read a JSON schema shipped inside a plugin package."""
    return json.loads(resources.files(package).joinpath(name).read_text("utf-8"))


class RecordValidator:
    """Validates one record at a time against a JSON schema (draft 2020-12), built once.

    The schema itself is checked when the plugin loads; records are checked by jsonschema-rs,
    whose compiled validator keeps the receiver fast (REFERENCE-sized orders: ~9x faster than
    a pure-Python validator; see bench/README.md)."""

    def __init__(self, schema: dict):
        Draft202012Validator.check_schema(schema)
        self._validator = jsonschema_rs.validator_for(schema)
        root = {k: schema[k] for k in ("$schema", "$defs") if k in schema}
        item = {k: v for k, v in schema.items() if k not in root}
        self._batch = jsonschema_rs.validator_for({**root, "type": "array", "items": item})

    def all_valid(self, records: Sequence[Any]) -> bool:
        """One call for a whole batch: the common case, where every record is valid."""
        return self._batch.is_valid(list(records))

    def error(self, record: Any) -> str | None:
        """None when ``record`` is valid, else a one-line reason naming the field."""
        if self._validator.is_valid(record):
            return None
        err = next(iter(self._validator.iter_errors(record)))
        where = "/".join(str(p) for p in err.instance_path) or "(record)"
        return f"{where}: {err.message}"


def schema_error(validator: Draft202012Validator, instance: Any, sep: str = ".",
                 root: str = "(options)") -> str | None:
    """The first error of ``instance`` against a jsonschema validator, as one line that names
    where it is (``contacts.url: 'url' is a required property``), or None when it is valid."""
    error = next(iter(validator.iter_errors(instance)), None)
    if error is None:
        return None
    message = error.message
    if error.validator == "additionalProperties":  # "… were unexpected" reads as an accusation
        message = re.sub(r" (were|was) unexpected$", " not expected", message)
    return f"{sep.join(map(str, error.absolute_path)) or root}: {message}"


def split_batch(records: Sequence[Any], validator: RecordValidator,
                key_of: Callable[[dict], str]) -> ReceivedBatch:
    """Validate each record and key the valid ones; one bad record never rejects the others."""
    if validator.all_valid(records):
        return ReceivedBatch([(key_of(r), r) for r in records])
    batch = ReceivedBatch()
    for record in records:
        reason = validator.error(record)
        if reason is None:
            batch.accepted.append((key_of(record), record))
        else:
            batch.rejected.append((record, reason))
    return batch


@dataclass(frozen=True)
class StoredRecord:
    """A record as the worker hands it to ``transform``: its arrival number is its version."""

    seq: int  # inbox id: increases with arrival, so a larger seq is a newer version
    key: str
    record: dict
    payload: str  # the record as stored: canonical JSON text
    received_at: float
    institution: str = ""
    stream: str = ""

    @property
    def idempotency_key(self) -> str:
        """The same for every delivery of this version, whatever the attempt or process:
        ``institution/stream/key@seq``."""
        return f"{self.institution}/{self.stream}/{self.key}@{self.seq}"


def stream_hooks(stream: Stream, validator_for: Callable[[Any], RecordValidator],
                 key_for: Callable[[Any], Callable[[dict], str]]):
    """The ``register_streams`` and ``receive`` hooks of a stream plugin, which every stream
    writes alike: ``validator_for`` and ``key_for`` take the institution, as a venue may
    shape its records (e.g. the columns of a data-export query)."""
    own = stream

    @hookimpl
    def register_streams(register):
        register(own)

    @hookimpl
    def receive(institution, stream, records):
        if stream.name != own.name:
            return None
        return split_batch(records, validator_for(institution), key_for(institution))

    return register_streams, receive
