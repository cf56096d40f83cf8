"""The text of each record of a webhook body, exactly as it was sent: found by matching
brackets and strings, without parsing. Used on the slow paths only: to quarantine an invalid
record as received, and to take a body that orjson cannot parse as a whole apart (a record
nested deeper than its 1,024 levels, a number beyond a double's range) so that such a record
is quarantined and its neighbours stored."""

from __future__ import annotations

import re

_WHITESPACE = b" \t\r\n"
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_SPECIAL = re.compile(rb'["\[\]{}]')


def elements(body: bytes) -> list[bytes] | None:
    """The text of each object of a body that is a JSON array of objects (one object: the
    body), or None when the body is not shaped so: not an array or an object, something else
    than objects between the array's commas, an unterminated string or bracket."""
    text = body.strip(_WHITESPACE)
    if text[:1] == b"{":  # one object: the body must be that object, complete
        found = elements(b"[" + text + b"]")
        return found if found is not None and len(found) == 1 else None
    if text[:1] != b"[" or text[-1:] != b"]":
        return None
    found: list[bytes] = []
    depth, start, pos = 0, 0, 1
    while (m := _SPECIAL.search(text, pos)) is not None:
        at, char = m.start(), text[m.start()]
        if depth == 0:  # between two objects: a comma after each, nothing else
            gap = text[pos:at].strip(_WHITESPACE)
            if char == ord("]"):
                return found if at == len(text) - 1 and not gap else None
            if char != ord("{") or gap != (b"," if found else b""):
                return None
            start = at
        if char == ord('"'):
            string = _STRING.match(text, at)
            if string is None:
                return None
            pos = string.end()
            continue
        depth += 1 if char in b"[{" else -1
        if depth == 0:
            found.append(text[start:at + 1])
        pos = at + 1
    return None


def texts(body: bytes) -> list[str]:
    """The text of each record of a body orjson parsed (so valid UTF-8), in order."""
    return [t.decode() for t in elements(body) or ()]


def storable(text: bytes) -> str:
    """Text that may not parse (bytes that are not UTF-8, a NUL) as a database holds it."""
    return text.decode("utf-8", "replace").strip().replace("\x00", "\ufffd")
