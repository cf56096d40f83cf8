"""Reconcile's date-times as SQL: a value to whole UTC seconds, its zone's offset found among
the zone's changes instead of through a conversion of every value.

A wall time is read as the bridge reads S-360's (core/s360/times.py: the zone's rules from
Python's ``zoneinfo``, the first occurrence of a repeated hour), so that S-360's export compares
equal to what the bridge delivered. A zone changes its offset a few times a year at most, so
the offset of a wall time is a comparison with the changes (a tree of ``CASE``, about eight
deep for a zone with summer time): at a million values a side this halves the cost of a time
column, the most costly part of the comparison (bench/README.md). The changes are found by
asking ``zoneinfo`` for the offset every ``_STEP`` from ``FROM`` to ``UNTIL`` and bisecting to
the second where it moved; ``tests/test_reconcile_times.py`` checks the answers against
``core/s360/times.py`` around every change. Wall times before ``FROM`` or from ``UNTIL`` on are
converted by DuckDB's ICU value by value (its own zone data, and a repeated hour's second
occurrence).
"""

from __future__ import annotations

import datetime as dt
from functools import cache
from zoneinfo import ZoneInfo

FROM, UNTIL = 1970, 2100  # years whose wall times are converted by the changes (ICU: the rest)
# the scan's step: two changes less than a step apart would be missed; the closest in the tz
# database from 1970 to 2100 are 6.96 days apart (Recife's summer time of 2000, Gaza's in 2040)
_STEP = 3 * 86400
# a value that writes its offset (or Z) after its time; spaces of any kind may follow. A space
# before the offset is matched too: DuckDB then reads no time (an empty value, a difference
# the report shows) rather than the wall time without its offset
OFFSET = r"\d\d:\d\d(:\d\d(\.\d*)?)?\s*(Z|[+-]\d\d(:?\d\d)?)[\s\p{Z}]*$"
_US = 1_000_000


@cache
def transitions(zone: str) -> tuple[int, tuple[tuple[int, int], ...]]:
    """The zone's offset (seconds) a day before ``FROM``, and each change from then until a
    day after ``UNTIL`` as (the first wall time, in seconds since 1970 read as UTC, with the
    new offset; that offset). From a change's instant T and its offsets before and after, that
    wall time is T + the larger of the two: a wall time that the change skips (spring) keeps
    the offset before, and one that it repeats (autumn) is its first occurrence, under the
    offset before, as ``zoneinfo`` reads a wall time (``fold=0``)."""
    tz = ZoneInfo(zone)

    def offset(t: int) -> int:
        return int(dt.datetime.fromtimestamp(t, tz).utcoffset().total_seconds())

    # from a day before FROM: a wall time just after it may be an instant before it
    start = int(dt.datetime(FROM, 1, 1, tzinfo=dt.UTC).timestamp()) - 86400
    end = int(dt.datetime(UNTIL, 1, 1, tzinfo=dt.UTC).timestamp()) + 86400
    first = now = offset(start)
    changes, t = [], start
    while t < end:
        if offset(t + _STEP) == now:
            t += _STEP
            continue
        lo, hi = t, t + _STEP  # the change is in (lo, hi]: bisected to its first second
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if offset(mid) == now else (lo, mid)
        before, now, t = now, offset(hi), hi
        changes.append((hi + max(before, now), now))
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
