"""The ``contacts`` warehouse table and how a contact maps into it."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, DateTime, String

from s360bridge.core.api import StoredRecord, WarehouseRow, utc_of, warehouse_table

CONTACTS = warehouse_table(
    "contacts",
    Column("contact_number", String(20), primary_key=True),
    Column("contact_id", BigInteger),
    Column("type", String(40)),
    Column("role", String(40)),
    Column("title", String(40)),
    Column("first_name", String(200)),
    Column("last_name", String(200)),
    Column("structure_name", String(200)),
    Column("email", String(320)),
    Column("phone", String(80)),
    Column("country_code", String(8)),
    Column("zip_code", String(20)),
    Column("locality", String(200)),
    Column("birth_date", String(40)),
    Column("has_warning", Boolean),
    Column("creation_date_utc", DateTime),
    personal_key="contact_number",  # `forget` erases the contact's row
)


def _main_address(record: dict) -> dict:
    addresses = record.get("addresses") or []
    return next((a for a in addresses if a.get("isMain")), addresses[0] if addresses else {})


def contact_row(institution, stored: StoredRecord) -> WarehouseRow:
    r = stored.record
    person = r.get("individualContact") or {}
    structure = r.get("structureContact") or {}
    address = _main_address(r)
    return WarehouseRow(CONTACTS, {
        "institution": institution.code,
        "contact_number": r["contactNumber"],
        "contact_id": r.get("contactId"),
        "type": r.get("type"),
        "role": r.get("role"),
        "title": person.get("individualTitle"),
        "first_name": person.get("individualFirstname"),
        "last_name": person.get("individualLastname"),
        "structure_name": structure.get("structureName"),
        "email": person.get("email"),
        "phone": person.get("phoneNumber1"),
        "country_code": person.get("countryCode") or address.get("countryCode"),
        "zip_code": address.get("zipCode") or person.get("zipCode"),
        "locality": address.get("locality"),
        "birth_date": person.get("individualBirthDate"),
        "has_warning": r.get("hasWarning"),
        "creation_date_utc": utc_of(r.get("creationDate"), institution.timezone),
        "source_seq": stored.seq,
        "received_at": stored.received_at,
        "raw": stored.payload,
    })
