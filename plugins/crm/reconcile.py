"""A CRM's side of a reconciliation: its export file, whose columns the target's mapping gives."""

from __future__ import annotations

from s360bridge.core.api import Comparison, Reconciliation, Side


def crm_side(target, stream: str, comparison: Comparison, zone: str) -> Reconciliation:
    """The CRM export has the columns the mapping writes: a field is compared when the mapping
    copies its S-360 path as it is, or as an amount (written in currency units)."""
    key, fields = comparison.key, comparison.fields
    spec = target.mappings[stream].spec if stream in target.mappings else {}
    by_path = {}
    for out, rule in spec.items():
        path = rule if isinstance(rule, str) else rule.get("path")
        convert = None if isinstance(rule, str) else rule.get("convert")
        if path and convert in (None, "amount", "lower", "upper", "strip", "string"):
            by_path.setdefault(path, out)
    kept = [f for f in fields if f.path in by_path]
    columns = {f.name: by_path[f.path] for f in (key, *kept) if f.path in by_path}
    if key.name not in columns:
        columns[key.name] = key.name
    return Reconciliation(key, kept, Side(columns, "units", zone))
