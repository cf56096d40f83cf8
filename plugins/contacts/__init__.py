"""Contacts stream: the S-360 Contact webhook V2 (one ``getContactData`` result per record).

Natural key ``contactNumber``: a string of up to 20 characters whose leading zeros matter.
"""

from __future__ import annotations

from s360bridge.core.api import (
    Comparison,
    ConfigError,
    Field,
    RecordValidator,
    Stream,
    hookimpl,
    load_schema,
    lookup,
    stream_hooks,
)

from .warehouse import CONTACTS, contact_row


def check_options(options: dict) -> None:
    unknown = set(options) - {"updated_field"}
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(sorted(unknown))} (known: "
                          "updated_field)")


def updated(institution, record: dict):
    """The date the history cut-off applies to: the contact payload carries no update date,
    so only a field named by ``options.updated_field`` (a column an export adds) counts;
    without it a contact is always kept, and a webhook push means it changed just now."""
    field = institution.streams[STREAM.name].options.get("updated_field")
    return lookup(record, field) if field else None


STREAM = Stream("contacts", "S-360 contacts", personal_data=True,
                check_options=check_options, dated=updated)
VALIDATOR = RecordValidator(load_schema(__name__))
register_streams, receive = stream_hooks(STREAM, lambda inst: VALIDATOR,
                                         lambda inst: lambda r: r["contactNumber"])


@hookimpl
def register_transforms(register):
    register(STREAM.name, "sql")  # rows of the warehouse table CONTACTS


@hookimpl
def transform(institution, stream, target, records):
    return [contact_row(institution, r) for r in records]


KEY = Field("contact_number", "text", "contactNumber", "contactNumber")
COMPARED = [
    Field("first_name", "text", "individualFirstname", "individualContact.individualFirstname"),
    Field("last_name", "text", "individualLastname", "individualContact.individualLastname"),
    Field("email", "ci_text", "email", "individualContact.email"),
]


@hookimpl
def reconcile(institution, stream, target):
    return Comparison(KEY, COMPARED, CONTACTS, {f.name: f.name for f in (KEY, *COMPARED)},
                      lambda keys, export_rows: fetch_contacts(target.ctx, institution, keys))


def fetch_contacts(bridge, institution, numbers: list[str]) -> dict[str, dict | None]:
    """Contacts as S-360 has them now (``getContactData``), inside the call budget."""
    return bridge.s360(institution).fetch_each(
        "contactInformationPublicService", "getContactData", numbers,
        lambda number: {"contactNumber": number})
