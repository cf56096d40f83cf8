"""Secrets that never print: the values read from ``{$env: NAME}`` and the user-info of URLs.

The configuration loader remembers every value it reads from the environment (of a URL, only
the password of its user-info: the rest says where it points); ``redact`` masks those values,
and the user-info of any URL, in a text. The errors s360bridge raises are redacted as they are
formed (``S360BridgeError``), a target's description as it is made (``Target.describe``), and
every log record of the process as it is created (``redact_logs``).
"""

from __future__ import annotations

import logging
import re
import threading
from urllib.parse import quote, unquote, urlsplit

MASK = "***"
MIN_LENGTH = 8  # a shorter value is masked only where it stands (URL user-info), not in any text:
#                 a word as short as "s360" would garble every message it occurs in

# scheme://user-info@ up to the last @ before the path (a password may hold a raw @)
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<info>[^/?#\s]*)@")
_lock = threading.Lock()
_values: set[str] = set()
_pattern: re.Pattern | None = None
_logs_redacted = False


def remember(value: str) -> None:
    """Mask ``value`` from now on, as written and percent-encoded. Of a URL (``scheme://``),
    only the password of its user-info is a secret, or the user-info alone (a token)."""
    if "://" in value:
        parts = urlsplit(value)
        value = parts.password or parts.username or ""
    variants = {v for v in (value, unquote(value), quote(value, safe=""))
                if len(v) >= MIN_LENGTH} - _values
    if not variants:
        return
    global _pattern
    with _lock:
        _values.update(variants)
        # the longest first: a secret that holds another is masked whole
        _pattern = re.compile("|".join(re.escape(v) for v in sorted(_values, key=len,
                                                                    reverse=True)))


def _userinfo(match: re.Match) -> str:
    user, colon, _ = match["info"].partition(":")
    return match["scheme"] + (f"{user}:{MASK}" if colon else MASK) + "@"


def redact(text: str) -> str:
    """``text`` with the remembered secrets and the user-info of its URLs masked."""
    text = _USERINFO.sub(_userinfo, text)
    pattern = _pattern
    return pattern.sub(MASK, text) if pattern is not None else text


def redact_logs() -> None:
    """Redact every log record of this process when it is created, whichever handler then
    writes it (the CLI's, gunicorn's, a test's): its message and its traceback."""
    global _logs_redacted
    with _lock:
        if _logs_redacted:
            return
        _logs_redacted = True
    make = logging.getLogRecordFactory()

    def redacted_record(*args, **kwargs) -> logging.LogRecord:
        record = make(*args, **kwargs)
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return record

    logging.setLogRecordFactory(redacted_record)
