"""Reconcile's date-times as SQL: a value to whole UTC seconds, its zone's offset found among
the zone's changes instead of through DuckDB's ICU conversion of every value.

A zone changes its offset a few times a year at most, so the offset of a wall time is a
comparison with the changes (a tree of ``CASE``, about eight deep for a zone with summer time):
at a million values a side this halves the cost of a time column, the most costly part of the
comparison (bench/README.md). The changes are ICU's own, found by asking ICU for the offset
every other day from ``FROM`` to ``UNTIL`` and bisecting to the second where it moved, so the
answers are ICU's: a wall time that a change skips (spring) or repeats (autumn) takes the
smaller of its two offsets, a repeated time being read as its second occurrence
(``tests/test_reconcile_times.py`` checks them against ICU around every change). Wall times
before ``FROM`` or from ``UNTIL`` on are converted by ICU value by value.
"""

from __future__ import annotations

import datetime as dt

FROM, UNTIL = 1990, 2060  # years whose wall times are converted by the changes (ICU: the rest)
# the grid's step: two changes of a zone are at least 6.9 days apart in the tz database from
# 1970 (America/Cambridge_Bay, 2000), so a step holds one change at most
_STEP = 2 * 86400
# a value that writes its offset (or Z) after its time; spaces of any kind may follow. A space
# before the offset is matched too: DuckDB then reads no time (an empty value, a difference
# the report shows) rather than the wall time without its offset
OFFSET = r"\d\d:\d\d(:\d\d(\.\d*)?)?\s*(Z|[+-]\d\d(:?\d\d)?)[\s\p{Z}]*$"
_US = 1_000_000
_found: dict[str, tuple[int, tuple[tuple[int, int], ...]]] = {}  # ICU's data is the process's


def _offset_at(t: str) -> str:
    """SQL: the zone's (``$zone``) offset in seconds at ``t``, seconds since 1970 UTC."""
    return f"(epoch(timezone($zone, to_timestamp({t})))::BIGINT - ({t}))"


def transitions(con, zone: str) -> tuple[int, tuple[tuple[int, int], ...]]:
    """The zone's offset (seconds) at the start of ``FROM``, and each change until ``UNTIL``
    as (the first wall time, in seconds since 1970 read as UTC, with the new offset; that
    offset), from ICU through ``con``. From a change's instant T, that wall time is T + the
    offset after it: the skipped wall times before it keep the old (smaller) offset, the
    repeated ones from it take the new (smaller) one."""
    found = _found.get(zone)
    if found is None:
        lo, hi = (int(dt.datetime(y, 1, 1, tzinfo=dt.UTC).timestamp()) for y in (FROM, UNTIL))
        params = {"zone": zone, "lo": lo, "hi": hi, "step": _STEP}
        # the grid's steps whose offset moved, each halved until its change's first second
        changes = con.execute(f"""
            WITH RECURSIVE halves(a, b, before) AS (
                SELECT t, t + $step, {_offset_at('t')} FROM range($lo, $hi, $step) r(t)
                WHERE {_offset_at('t')} <> {_offset_at('t + $step')}
              UNION ALL
                SELECT CASE WHEN {_offset_at('m')} = before THEN m ELSE a END,
                       CASE WHEN {_offset_at('m')} = before THEN b ELSE m END, before
                FROM (SELECT a, b, before, (a + b) // 2 AS m FROM halves WHERE b - a > 1))
            SELECT b + {_offset_at('b')}, {_offset_at('b')} FROM halves WHERE b - a = 1
            ORDER BY b""", params).fetchall()
        first = con.execute(f"SELECT {_offset_at('$lo')}", {"zone": zone, "lo": lo}).fetchone()[0]
        found = _found[zone] = (first, tuple(map(tuple, changes)))
    return found


def local_us(value: str) -> str:
    """SQL: the wall time written in ``value`` (text) in microseconds since 1970, read as if
    it were UTC (an offset written in it is ignored); casts skip spaces, ``trim`` the rest."""
    return (f"epoch_us(coalesce(try_cast({value} AS TIMESTAMP), "
            f"try_cast(trim({value}) AS TIMESTAMP)))")


def utc_seconds(con, value: str, local: str, zone: str) -> str:
    """SQL: the time written in ``value`` as whole seconds since 1970 UTC. An offset written in
    the value counts; a value without one is a wall time in ``zone``. ``local`` names a column
    holding ``local_us(value)``, computed below this expression, which reads it many times;
    ``con`` (DuckDB) gives the zone's changes."""
    written = (f"epoch_us(coalesce(try_cast({value} AS TIMESTAMPTZ), "
               f"try_cast(trim({value}) AS TIMESTAMPTZ)))")
    if zone == "UTC":
        wall = local
    else:
        first, changes = transitions(con, zone)
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
