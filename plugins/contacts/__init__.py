"""Contacts stream: the S-360 Contact webhook V2 (one ``getContactData`` result per record).

Natural key ``contactNumber``: a string of up to 20 characters whose leading zeros matter.
"""

from __future__ import annotations

from s360bridge.core.hookspecs import hookimpl
from s360bridge.core.streams import RecordValidator, Stream, load_schema, stream_hooks
from s360bridge.plugins.sql import SqlTarget

from .warehouse import CONTACTS, contact_row

STREAM = Stream("contacts", "S-360 contacts", personal_data=True)
VALIDATOR = RecordValidator(load_schema(__name__))
register_streams, receive = stream_hooks(STREAM, lambda inst: VALIDATOR,
                                         lambda inst: lambda r: r["contactNumber"])


@hookimpl
def transform(institution, stream, target, records):
    if stream.name != STREAM.name or not isinstance(target, SqlTarget):
        return None
    return [contact_row(institution, r) for r in records]


@hookimpl
def forget(bridge, institution, contact_number):
    removed = []
    cfg = institution.streams.get(STREAM.name)
    for name in cfg.targets if cfg else ():
        target = bridge.target(institution, name)
        if isinstance(target, SqlTarget):
            n = target.delete(CONTACTS, {"institution": institution.code,
                                         "contact_number": contact_number})
            removed.append(f"target {name}: {n} row(s) from table contacts")
    return removed
