"""Date-times as S-360 prints them, turned into naive UTC (and local) datetimes."""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo


@lru_cache(maxsize=4096)  # gate checks and orders come in bursts that share their times
def parse_s360_time(text: str | None, zone: ZoneInfo) -> tuple[dt.datetime, dt.datetime] | None:
    """``(utc, local)`` naive datetimes for an S-360 date-time.

    A value with an offset (``2020-10-13T10:09:27.503+00:00``) is exact. A zone-less one, as the
    data-export webhook prints (``2023-02-09 18:25:10``), is local time of ``zone``; in the hour
    a DST change repeats, the first occurrence is taken.
    """
    if not text:
        return None
    value = dt.datetime.fromisoformat(text.replace(" ", "T", 1))
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    utc = value.astimezone(dt.UTC).replace(tzinfo=None)
    local = value.astimezone(zone).replace(tzinfo=None)
    return utc, local


def utc_of(text: str | None, zone: ZoneInfo) -> dt.datetime | None:
    parsed = parse_s360_time(text, zone)
    return parsed[0] if parsed else None


def utc_or_none(text, zone: ZoneInfo) -> dt.datetime | None:
    """``utc_of``, with None for anything that is not an S-360 date-time."""
    try:
        return utc_of(text, zone) if isinstance(text, str) else None
    except ValueError:
        return None
