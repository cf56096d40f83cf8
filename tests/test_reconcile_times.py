"""Reconcile's normalisation, made cheap: a zone's offset found among its changes reads a wall
time as the bridge reads S-360's (core/s360/times.py) around every change of zones with and
without summer time, in both hemispheres, with half-hour and 45-minute offsets and changes a
week apart, and as DuckDB's ICU outside the years of the changes; offsets written in a value
count; texts compared as written are normalised where they differ; keys and amounts are read
as ``trim`` would read them; and errors about S-360's export come first."""

from __future__ import annotations

import bisect
import datetime as dt
import random
import re
import zoneinfo
from zoneinfo import ZoneInfo

import pytest

from s360bridge.core.operations.reconcile import (
    Field,
    ReconcileError,
    Reconciliation,
    Side,
    compare,
    differences,
)
from s360bridge.core.operations.reconcile_times import (
    FROM,
    UNTIL,
    local_us,
    transitions,
    utc_seconds,
)
from s360bridge.core.s360.times import utc_of

ZONES = ["Europe/Zurich", "America/New_York", "Australia/Sydney", "Australia/Lord_Howe",
         "America/St_Johns", "Asia/Kolkata", "Pacific/Chatham", "Europe/Dublin",
         "America/Sao_Paulo", "Europe/Moscow", "America/Recife", "America/Cambridge_Bay",
         "Asia/Gaza", "America/Vancouver", "Africa/Casablanca"]


@pytest.fixture(scope="module")
def duck():
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    yield con
    con.close()


def converted(duck, values: list[str], zone: str) -> list[tuple[str, int, int]]:
    """Each value with our conversion and the expected one: the bridge's (``utc_of``) within
    the years of the changes, ICU's (``timezone()``) outside them; None for a value with an
    offset or that is no time."""
    duck.execute("CREATE OR REPLACE TEMP TABLE v AS SELECT unnest(?) AS v", [values])
    found = duck.execute(f"""
        SELECT v, {utc_seconds('v', 'l', zone)},
               CAST(floor(epoch(timezone('{zone}', try_cast(trim(v) AS TIMESTAMP)))) AS BIGINT)
        FROM (SELECT v, {local_us('v')} AS l FROM v)""").fetchall()
    lo, hi = dt.datetime(FROM, 1, 1), dt.datetime(UNTIL, 1, 1)
    tz = ZoneInfo(zone)

    def expected(v: str, icu: int) -> int | None:  # None: a value that is not a plain wall time
        try:
            wall = dt.datetime.fromisoformat(v)
        except ValueError:
            return None
        if wall.tzinfo is not None:
            return None
        if not lo <= wall < hi:
            return icu
        return int(utc_of(v, tz).replace(tzinfo=dt.UTC).timestamp())

    return [(v, ours, expected(v, icu)) for v, ours, icu in found]


def text(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


@pytest.mark.parametrize("zone", ZONES)
def test_wall_times_around_every_change_convert_as_the_bridge_does(duck, zone):
    """Every change, each side of it, inside the skipped or repeated hour, and wall times drawn
    at random from 1970 to 2100; the range's ends, and beyond them ICU."""
    first, changes = transitions(zone)
    values = [text(at + d) for at, _ in changes
              for d in (-7201, -3601, -1800, -1, 0, 1, 1799, 3599, 3600, 7200)]
    rnd = random.Random(zone)
    lo, hi = (int(dt.datetime(y, 1, 1, tzinfo=dt.UTC).timestamp()) for y in (FROM, UNTIL))
    values += [text(rnd.randrange(lo, hi)) for _ in range(2000)]
    values += [text(lo - 1), text(lo), text(lo + 3600), text(hi - 1), text(hi),
               "1901-07-01 12:00:00", "2150-07-01 12:00:00"]
    assert len(changes) > 0 or zone == "Asia/Kolkata"
    unlike = [(v, ours, want) for v, ours, want in converted(duck, values, zone) if ours != want]
    assert unlike == []


@pytest.mark.parametrize("zone", ZONES)
def test_no_change_is_missed_at_noon_of_any_day(zone):
    """The offset the changes give, at noon UTC of every day from 1970 to 2100, is zoneinfo's:
    a change the scan missed (two closer than its step, as Recife's week of summer time in 2000
    would be for a scan a week apart) would show."""
    first, changes = transitions(zone)
    tz = ZoneInfo(zone)
    offsets = [first] + [offset for _, offset in changes]
    # a change's instant: its first wall time less the larger of its offsets
    instants = [at - max(offsets[i], offsets[i + 1]) for i, (at, _) in enumerate(changes)]
    day = int(dt.datetime(FROM, 1, 1, 12, tzinfo=dt.UTC).timestamp())
    wrong = []
    while day < int(dt.datetime(UNTIL, 1, 1, tzinfo=dt.UTC).timestamp()):
        ours = offsets[bisect.bisect_right(instants, day)]
        theirs = int(dt.datetime.fromtimestamp(day, tz).utcoffset().total_seconds())
        if ours != theirs:
            wrong.append(text(day))
        day += 86400
    assert wrong == []
    if zone == "America/Recife":  # summer time from 8 to 15 October 2000, and then no more
        assert [text(at) for at, _ in changes if at // 86400 * 86400 == 970963200] == [
            "2000-10-08 01:00:00"]


def test_a_skipped_or_repeated_wall_time_is_read_as_the_bridge_reads_it(duck):
    """Zurich: 02:30 on 31 March 2024 does not exist (read at +01:00, the offset before), 02:30
    on 27 October 2024 happens twice (its first occurrence, +02:00), as core/s360/times.py
    reads a zone-less time of S-360's."""
    got = {v: ours for v, ours, _ in converted(
        duck, ["2024-03-31 02:30:00", "2024-03-31 03:00:00", "2024-10-27 02:30:00",
               "2024-10-27 01:59:59", "2024-10-27 03:00:00"], "Europe/Zurich")}
    assert {v: text(s) for v, s in got.items()} == {
        "2024-03-31 02:30:00": "2024-03-31 01:30:00",
        "2024-03-31 03:00:00": "2024-03-31 01:00:00",
        "2024-10-27 02:30:00": "2024-10-27 00:30:00",
        "2024-10-27 01:59:59": "2024-10-26 23:59:59",
        "2024-10-27 03:00:00": "2024-10-27 02:00:00"}


@pytest.mark.parametrize("value, utc", [
    ("2024-07-01T10:00:00Z", "2024-07-01 10:00:00"),
    ("2024-07-01 10:00:00+02:00", "2024-07-01 08:00:00"),
    ("2024-07-01T10:00:00+0200", "2024-07-01 08:00:00"),
    ("2024-07-01T10:00:00+02", "2024-07-01 08:00:00"),
    ("2024-07-01T10:00:00-03:30", "2024-07-01 13:30:00"),
    ("2024-07-01T10:00:00.750+00:00 ", "2024-07-01 10:00:00"),
    ("  2024-07-01 10:00:00Z\u00a0", "2024-07-01 10:00:00"),
    ("2024-07-01 10:00:00", "2024-07-01 08:00:00"),  # no offset: Zurich's, summer
    ("2024-01-15 10:00:59.999", "2024-01-15 09:00:59"),  # winter, cut to the second
    ("\u00a02024-01-15 10:00:00\u00a0", "2024-01-15 09:00:00"),  # trim's spaces
    ("2024-07-01", "2024-06-30 22:00:00"),  # a date: local midnight, not an offset
])
def test_an_offset_written_in_the_value_counts(duck, value, utc):
    ((_, ours, _),) = converted(duck, [value], "Europe/Zurich")
    assert text(ours) == utc


def test_a_value_that_is_no_time_stays_empty(duck):
    assert [ours for _, ours, _ in converted(
        duck, ["soon", "", "2024-13-01 10:00:00", "10:00:00+02:00"], "Europe/Zurich")] == [
        None, None, None, None]


def test_texts_differ_only_once_normalised_and_are_reported_so(tmp_path):
    """Spaces around or inside a text, and an e-mail's case, are no difference; a real one is
    reported trimmed (an e-mail as written, case and all)."""
    s360, target = tmp_path / "s360.csv", tmp_path / "target.csv"
    s360.write_text("ID,NAME,MAIL\n1, Ada  Lovelace ,ADA@EXAMPLE.ORG\n2,Bob,bob@example.org\n"
                    "3,,\n4,Eve ,Eve@Example.org\n", "utf-8")
    target.write_text("id,name,mail\n1,Ada Lovelace,ada@example.org \n2,Bob,bob@example.org\n"
                      "3, , \n4,  Eva,eve@example.com\n", "utf-8")
    spec = Reconciliation(Field("id", "text", "ID"),
                          [Field("name", "text", "NAME"), Field("mail", "ci_text", "MAIL")],
                          Side({"id": "id", "name": "name", "mail": "mail"}))
    report = tmp_path / "report.csv"
    summary = compare(spec, Side({"id": "ID", "name": "NAME", "mail": "MAIL"}), s360, target,
                      report)
    assert summary.counts["different"] == 1 and summary.field_counts == {"name": 1, "mail": 1}
    assert [(d["key"], d["field"], d["s360_value"], d["target_value"])
            for d in differences(report, "csv")] == [
        ("4", "mail", "Eve@Example.org", "eve@example.com"), ("4", "name", "Eve", "Eva")]


def test_a_field_named_with_a_quote_is_reported_under_its_name(tmp_path):
    """A third-party plugin's field name goes into the report's SQL as a literal."""
    s360, target = tmp_path / "s360.csv", tmp_path / "target.csv"
    s360.write_text("ID,NOTE\n1,a\n", "utf-8")
    target.write_text("id,note\n1,b\n", "utf-8")
    spec = Reconciliation(Field("id", "text", "ID"), [Field("o'note", "text", "NOTE")],
                          Side({"id": "id", "o'note": "note"}))
    report = tmp_path / "report.csv"
    compare(spec, Side({"id": "ID", "o'note": "NOTE"}), s360, target, report)
    assert [(d["key"], d["field"]) for d in differences(report, "csv")] == [("1", "o'note")]


def test_keys_amounts_and_times_compare_as_trimmed(tmp_path):
    """Keys with spaces (Unicode's too) meet their trimmed twins; amounts and times with spaces
    equal their plain writing; a repeated wall time equals its first occurrence in UTC."""
    s360, target = tmp_path / "s360.csv", tmp_path / "target.csv"
    s360.write_text("ID,AMOUNT,AT\n"
                    " 1,\u00a01.5 ,2024-10-27 02:30:00\n"
                    "2\u00a0,\"1,200.25\",\u00a02024-03-31 02:30:00\n"
                    "3,3,2024-10-27 02:30:00\n", "utf-8")
    target.write_text("id,amount,at\n"
                      "1,1500,2024-10-27 00:30:00\n"
                      "2,\u00a01200250 ,2024-03-31T01:30:00Z\n"
                      "3,3000,2024-10-27 01:30:00\n", "utf-8")
    spec = Reconciliation(Field("id", "text", "ID"),
                          [Field("amount", "amount", "AMOUNT"), Field("at", "datetime", "AT")],
                          Side({"id": "id", "amount": "amount", "at": "at"}, "thousandths"))
    report = tmp_path / "report.csv"
    summary = compare(spec, Side({"id": "ID", "amount": "AMOUNT", "at": "AT"}, "units",
                                 "Europe/Zurich"), s360, target, report)
    assert summary.counts == {"missing_in_target": 0, "missing_in_s360": 0, "different": 1}
    assert [(d["key"], d["field"], d["s360_value"], d["target_value"])
            for d in differences(report, "csv")] == [
        ("3", "at", "2024-10-27 02:30:00", "2024-10-27 01:30:00")]


@pytest.mark.parametrize("target_export", [True, False])
def test_what_is_wrong_with_the_s360_export_is_said_first(tmp_path, target_export):
    """The two files are sniffed at once, but S-360's export's error comes first, and before
    a target without an export file has its rows read."""
    read = []
    spec = Reconciliation(Field("id", "text", "ID"), [Field("amount", "amount", "AMOUNT")],
                          Side({"id": "id", "amount": "amount"}, "thousandths"),
                          target_rows=lambda fields: read.append(fields) or [])
    s360 = tmp_path / "s360.csv"
    s360.write_text("ID,SUM\n1,2\n", "utf-8")
    target = tmp_path / "nowhere.csv" if target_export else None
    with pytest.raises(ReconcileError, match=f"{re.escape(str(s360))}: no column AMOUNT"):
        compare(spec, Side({"id": "ID", "amount": "AMOUNT"}), s360, target,
                tmp_path / "report.csv")
    assert read == []


def _known(zone: str) -> bool:
    try:
        ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


@pytest.mark.skipif(not _known("posixrules"),
                    reason="no system tz database: posixrules is not in the tzdata package")
@pytest.mark.parametrize("with_time", [True, False])
def test_a_zone_duckdb_does_not_know_is_refused_where_a_time_needs_it(tmp_path, with_time):
    """``posixrules`` is in the system's tz database, not in DuckDB's: refused when a date-time
    field is read in it, and no matter to a comparison without one."""
    s360 = tmp_path / "s360.csv"
    s360.write_text("ID,AT\n1,2024-01-01 10:00:00\n", "utf-8")
    kind = "datetime" if with_time else "text"
    spec = Reconciliation(Field("id", "text", "ID"), [Field("at", kind, "AT")],
                          Side({"id": "ID", "at": "AT"}))
    side = Side({"id": "ID", "at": "AT"}, timezone="posixrules")
    if not with_time:
        assert compare(spec, side, s360, s360, tmp_path / "report.csv").in_sync
        return
    with pytest.raises(ReconcileError, match="unknown time zone 'posixrules' \\(DuckDB's ICU"):
        compare(spec, side, s360, s360, tmp_path / "report.csv")
