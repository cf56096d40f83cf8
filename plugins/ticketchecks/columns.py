"""The columns of the venue's data-export query, and the record schema built from them."""

from __future__ import annotations

from dataclasses import dataclass

from s360bridge.core.api import ConfigError

ID_MAX = 2**63 - 1
_ID = {"type": "integer", "minimum": 1, "maximum": ID_MAX}
_TEXT = {"type": "string", "minLength": 1}
# The canonical columns (those of the official example query, REFERENCE §d) and their types.
CANONICAL = {
    "ticket_check_id": _ID,
    "movement_id": {**_ID, "type": ["integer", "null"]},
    "ticket_id": {**_ID, "type": ["integer", "null"]},
    "barcode": {"type": "string", "minLength": 1, "pattern": r"^\S+$",
                "description": "Always a string: leading zeros matter."},
    "access_time": {"type": "string", "pattern":
                    r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})?$",
                    "description": "Local time of the venue when it carries no offset."},
    "check_flow": _TEXT,
    "result": _TEXT,
    "failure_reason": {"type": ["string", "null"]},
}
REQUIRED = ("barcode", "access_time", "check_flow", "result")


@dataclass(frozen=True)
class Columns:
    """Canonical column → the venue's column name, and which canonical column is the key."""

    mapping: tuple[tuple[str, str], ...]
    key: str = "ticket_check_id"

    @classmethod
    def from_options(cls, options: dict) -> Columns:
        given = options.get("columns") or {}
        unknown = set(given) - set(CANONICAL)
        if unknown:
            raise ConfigError(f"columns: unknown column(s) {', '.join(sorted(unknown))} "
                              f"(known: {', '.join(CANONICAL)})")
        key = options.get("key", "ticket_check_id")
        if key not in CANONICAL:
            raise ConfigError(f"key: {key!r} is not a column (known: {', '.join(CANONICAL)})")
        mapping = {c: c for c in CANONICAL} | {c: str(n) for c, n in given.items()}
        return cls(tuple(mapping.items()), key)

    def name(self, canonical: str) -> str:
        return dict(self.mapping)[canonical]

    @property
    def key_column(self) -> str:
        """The venue's name of the key column."""
        return self.name(self.key)


def record_schema(cols: Columns) -> dict:
    """The JSON schema of one row: unknown extra columns are allowed."""
    props = {cols.name(c): spec for c, spec in CANONICAL.items()}
    required = sorted({cols.name(c) for c in (cols.key, *REQUIRED)})
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "S-360 data-export row: ticket check", "type": "object",
            "required": required, "properties": props}
