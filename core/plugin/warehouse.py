"""The declarative warehouse table spec: stream plugins declare their tables and rows here, and
whichever target writes a warehouse (the built-in ``sql`` target) reads them from here."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import BigInteger, Column, Float, MetaData, String, Table, Text

WAREHOUSE = MetaData()  # every warehouse table, whichever plugin declares it


def warehouse_table(name: str, *columns: Column, child: bool = False,
                    personal_key: str | None = None) -> Table:
    """A warehouse table with the common columns: ``institution``, and on top-level tables the
    version (``source_seq``), arrival time and the raw JSON beside the typed columns.
    ``personal_key`` names the column holding a contact number: ``forget`` erases its rows."""
    common = [Column("institution", String(40), primary_key=True)]
    if not child:
        common += [Column("source_seq", BigInteger, nullable=False),
                   Column("received_at", Float, nullable=False),
                   Column("raw", Text, nullable=False)]
    table = Table(name, WAREHOUSE, *common, *columns)
    table.info["personal_key"] = personal_key
    return table


@dataclass
class WarehouseRow:
    """One version of one record for a top-level table, with the child rows it owns."""

    table: Table
    values: dict
    children: dict[Table, list[dict]] = field(default_factory=dict)
