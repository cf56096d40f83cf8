"""Declarative field mappings, written in YAML, from one JSON shape to another.

A mapping is ``{output field: rule}``. An output field may be dotted (``a.b``) to build nested
objects. A rule is one of:

* ``"individualContact.email"``: a path into the record (dots; list items by number, ``0``);
* ``{path: …, convert: …, default: …}``: a path with a named conversion (below);
* ``{const: value}``: a constant;
* ``{each: path, mapping: {…}}``: a list, mapping every item of the list at ``path``.

Conversions: ``amount`` (S-360 integer thousandths to a decimal string, ``digits`` places,
default 2, never a float), ``date`` (an ISO date-time re-formatted with ``format``, in
``timezone`` if given), ``lower``, ``upper``, ``string``, ``strip``.
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from s360bridge.core.errors import ConfigError


def lookup(record: Any, path: str) -> Any:
    """The value at a dotted path, or None when any step is missing."""
    node = record
    for step in path.split("."):
        if isinstance(node, dict):
            node = node.get(step)
        elif isinstance(node, list) and step.isdigit() and int(step) < len(node):
            node = node[int(step)]
        else:
            return None
        if node is None:
            return None
    return node


def _amount(value, rule):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"amount: expected integer thousandths, got {value!r}")
    places = Decimal(1).scaleb(-int(rule.get("digits", 2)))
    return str((Decimal(value) / 1000).quantize(places, rounding=ROUND_HALF_EVEN))


def _date(value, rule):
    t = dt.datetime.fromisoformat(str(value))
    if rule.get("timezone") and t.tzinfo is not None:
        t = t.astimezone(ZoneInfo(rule["timezone"]))
    return t.strftime(rule.get("format", "%Y-%m-%dT%H:%M:%S%z"))


CONVERSIONS = {
    "amount": _amount,
    "date": _date,
    "lower": lambda v, r: str(v).lower(),
    "upper": lambda v, r: str(v).upper(),
    "string": lambda v, r: str(v),
    "strip": lambda v, r: str(v).strip(),
}
_RULE_KEYS = {"path", "convert", "default", "digits", "format", "timezone"}


class Mapping:
    """A checked mapping, applied to many records."""

    def __init__(self, spec: dict, where: str = "mapping"):
        if not isinstance(spec, dict) or not spec:
            raise ConfigError(f"{where}: expected a mapping of output field to rule")
        self.spec = spec
        for out, rule in spec.items():
            self._check(rule, f"{where}.{out}")
        self._each = {out: Mapping(r["mapping"], f"{where}.{out}.mapping")
                      for out, r in spec.items() if isinstance(r, dict) and "each" in r}

    @staticmethod
    def _check(rule, where: str) -> None:
        if isinstance(rule, str):
            return
        if not isinstance(rule, dict):
            raise ConfigError(f"{where}: a rule is a path, {{path: …}}, {{const: …}} or "
                              "{each: …, mapping: …}")
        if "const" in rule or "each" in rule:
            extra = set(rule) - ({"const"} if "const" in rule else {"each", "mapping"})
            if extra:
                raise ConfigError(f"{where}: unexpected {', '.join(sorted(extra))}")
            return
        unknown = set(rule) - _RULE_KEYS
        if "path" not in rule or unknown:
            raise ConfigError(f"{where}: needs a path (unknown keys: "
                              f"{', '.join(sorted(unknown)) or 'none'})")
        if "convert" in rule and rule["convert"] not in CONVERSIONS:
            raise ConfigError(f"{where}: unknown conversion {rule['convert']!r} "
                              f"(known: {', '.join(sorted(CONVERSIONS))})")
        if rule.get("timezone"):
            ZoneInfo(rule["timezone"])

    def sources(self) -> set[str]:
        """The source paths this mapping reads (constants and lists aside)."""
        return {r if isinstance(r, str) else r.get("path") for r in self.spec.values()} - {None}

    def apply(self, record: dict, drop_missing: bool = False) -> dict:
        """Map one record (fields without a value become None, or are left out with
        ``drop_missing``); raises ValueError naming the field a conversion failed on."""
        out: dict = {}
        for name, rule in self.spec.items():
            value = self._value(name, rule, record)
            if value is None and drop_missing:
                continue
            node = out
            *parents, leaf = name.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
        return out

    def _value(self, name: str, rule, record: dict):
        if isinstance(rule, str):
            return lookup(record, rule)
        if "const" in rule:
            return rule["const"]
        if "each" in rule:
            items = lookup(record, rule["each"]) or []
            return [self._each[name].apply(item) for item in items]
        value = lookup(record, rule["path"])
        if value is None:
            return rule.get("default")
        if "convert" in rule:
            try:
                value = CONVERSIONS[rule["convert"]](value, rule)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{name}: {exc}") from None
        return value
