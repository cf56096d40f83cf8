"""The target's side of a reconciliation, whatever the target: warehouse rows or a CRM export.

Stream plugins answer the ``reconcile`` hook with this, giving their key, compared fields and
warehouse table; it picks the side that fits the target.
"""

from __future__ import annotations

from sqlalchemy import Table

from s360bridge.core.operations.reconcile import Field, Reconciliation
from s360bridge.plugins.crm import HttpCrmTarget
from s360bridge.plugins.crm.reconcile import crm_side
from s360bridge.plugins.sql import SqlTarget
from s360bridge.plugins.sql.reconcile import warehouse_side


def target_side(institution, stream: str, target, key: Field, fields: list[Field],
                table: Table, columns: dict[str, str]) -> Reconciliation | None:
    if isinstance(target, SqlTarget):
        return warehouse_side(target, institution, table, key, fields, columns)
    if isinstance(target, HttpCrmTarget):
        return crm_side(target, stream, key, fields, institution.timezone.key)
    return None
