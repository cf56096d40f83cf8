"""The process's log on standard error: lines of text, or one JSON object per line
(``s360bridge --log-format json``).

A JSON line holds ``time`` (UTC, ISO 8601 to the millisecond), ``level``, ``logger`` and
``message``; where they apply ``institution``, ``stream``, ``target`` and ``key``, taken from the
record's ``extra`` or else from the ``context`` the receiver and the worker set around the
work of one institution and stream; and ``traceback`` for an exception. No other attribute of a
record is written, and every field is redacted (core/redact.py) as the message is. That is
why this is the standard library's Formatter and orjson, not python-json-logger: the library
writes every attribute a record carries (any ``extra=`` of any plugin) unless told otherwise,
and what is kept here, a fixed set of redacted fields, is a few lines.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import orjson

from s360bridge.core.redact import redact

FORMATS = ("text", "json")
TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FIELDS = ("institution", "stream", "target", "key")
_context: ContextVar[dict[str, str] | None] = ContextVar("s360bridge_log_context", default=None)


@contextmanager
def context(**fields: str) -> Iterator[None]:
    """The JSON lines logged inside, in this thread, carry these fields (``FIELDS``)."""
    token = _context.set({**(_context.get() or {}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        when = dt.datetime.fromtimestamp(record.created, dt.UTC)
        line = {"time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "level": record.levelname, "logger": record.name,
                "message": record.getMessage()}
        around = _context.get() or {}
        for name in FIELDS:
            value = getattr(record, name, None)
            value = around.get(name) if value is None else value
            if value is not None:
                line[name] = str(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["traceback"] = record.exc_text
        return orjson.dumps({k: redact(v) for k, v in line.items()}).decode()


def configure(level: str, fmt: str = "text") -> None:
    """Log records of ``level`` and above to standard error, in the format ``fmt``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
