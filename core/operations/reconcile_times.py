"""Reconcile's date-times as SQL: a value to whole UTC seconds, its zone's offset found among
the zone's transitions instead of through DuckDB's ICU conversion of every value.

A zone changes its offset a few times a year at most, so the offset of a wall time is a
comparison with the changes (a tree of ``CASE``, about eight deep for a zone with summer time
since the 1940s): at a million values a side this halves the cost of a time column, the most
costly part of the comparison (bench/README.md). The answers are ICU's, which
``tests/test_reconcile_times.py`` checks around every change of several zones: a wall time
that a change skips (spring) or repeats (autumn) takes the smaller of its two offsets, so a
repeated time is read as its second occurrence. Wall times before ``FROM`` or from ``UNTIL``
on are converted by ICU.
"""

from __future__ import annotations

import datetime as dt
from functools import cache
from zoneinfo import ZoneInfo

FROM, UNTIL = 1970, 2100  # years whose wall times are converted by the transitions
_STEP = 7 * 86400  # changes are looked for a week apart: two within a week would be missed
# a value that writes its offset (or Z) after its time; spaces of any kind may follow
OFFSET = r"\d\d:\d\d(:\d\d(\.\d*)?)?\s*(Z|[+-]\d\d(:?\d\d)?)[\s\p{Z}]*$"
_US = 1_000_000


@cache
def transitions(zone: str) -> tuple[int, tuple[tuple[int, int], ...]]:
    """The zone's offset (seconds) at the start of ``FROM``, and each change until ``UNTIL``
    as (the first wall time, in seconds since 1970 read as UTC, with the new offset; that
    offset). From a change's instant T and offsets before and after it, that wall time is
    T + the offset after: the skipped wall times before it keep the old (smaller) offset, the
    repeated ones from it take the new (smaller) one."""
    tz = ZoneInfo(zone)

    def offset(t: int) -> int:
        return int(dt.datetime.fromtimestamp(t, tz).utcoffset().total_seconds())

    start = int(dt.datetime(FROM, 1, 1, tzinfo=dt.UTC).timestamp())
    end = int(dt.datetime(UNTIL, 1, 1, tzinfo=dt.UTC).timestamp())
    first = now = offset(start)
    changes, t = [], start
    while t < end:
        if offset(t + _STEP) == now:
            t += _STEP
            continue
        lo, hi = t, t + _STEP  # the change is in (lo, hi]: find its first second
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if offset(mid) == now else (lo, mid)
        now, t = offset(hi), hi
        changes.append((hi + now, now))
    return first, tuple(changes)


def local_us(value: str) -> str:
    """SQL: the wall time written in ``value`` (text) in microseconds since 1970, read as if
    it were UTC (an offset written in it is ignored); casts skip spaces, ``trim`` the rest."""
    return (f"epoch_us(coalesce(try_cast({value} AS TIMESTAMP), "
            f"try_cast(trim({value}) AS TIMESTAMP)))")


def utc_seconds(value: str, local: str, zone: str) -> str:
    """SQL: the time written in ``value`` as whole seconds since 1970 UTC. An offset written in
    the value counts; a value without one is a wall time in ``zone``. ``local`` names a column
    holding ``local_us(value)``, computed below this expression, which reads it many times."""
    written = (f"epoch_us(coalesce(try_cast({value} AS TIMESTAMPTZ), "
               f"try_cast(trim({value}) AS TIMESTAMPTZ)))")
    if zone == "UTC":
        wall = local
    else:
        first, changes = transitions(zone)
        lo, hi = (int(dt.datetime(y, 1, 1, tzinfo=dt.UTC).timestamp()) * _US
                  for y in (FROM, UNTIL))
        name = zone.replace("'", "''")
        icu = f"epoch_us(timezone('{name}', make_timestamp({local})))"
        wall = (f"CASE WHEN {local} < {lo} OR {local} >= {hi} THEN {icu} "
                f"ELSE {local} - {_offset_us(local, first, changes)} END")
    utc = f"CASE WHEN regexp_matches({value}, '{OFFSET}') THEN {written} ELSE {wall} END"
    return f"CAST(floor(({utc}) / {_US}) AS BIGINT)"


def _offset_us(local: str, first: int, changes: tuple[tuple[int, int], ...]) -> str:
    """A binary search over the changes, as nested ``CASE``: the offset of ``local``."""

    def tree(lo: int, hi: int, before: int) -> str:  # changes[lo:hi]; ``before`` until them
        if lo == hi:
            return str(before * _US)
        mid = (lo + hi) // 2
        at, after = changes[mid]
        return (f"CASE WHEN {local} < {at * _US} THEN {tree(lo, mid, before)} "
                f"ELSE {tree(mid + 1, hi, after)} END")

    return f"({tree(0, len(changes), first)})"
