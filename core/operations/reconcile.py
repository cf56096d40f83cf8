"""Data-consistency check: an S-360 flat-file export against a target's side, by unique key.

Both sides are read as text into DuckDB (files directly; a warehouse through the project's own
connection, streamed to a temporary file), normalised per field kind, and joined on the key;
texts are compared as written first and normalised only where they differ (a few rows).
What differs is written as CSV or JSON lines, one row per field, with both values as found.

Kinds: ``text`` (whitespace trimmed and collapsed), ``ci_text`` (also case-folded, e.g. e-mail),
``amount`` (to integer thousandths; a side says whether it writes ``thousandths`` or currency
``units``), ``datetime`` (to UTC seconds; a side names the zone of values without an offset).
"""

from __future__ import annotations

import csv
import dataclasses
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from s360bridge.core.errors import S360BridgeError
from s360bridge.core.operations.reconcile_times import local_us, transitions, utc_seconds

KINDS = ("text", "ci_text", "amount", "datetime")
TEXTS = ("text", "ci_text")  # compared as written first, normalised only where that differs
PLAIN = ("text",)  # kinds whose compared value is shown in reports instead of the raw one
MISSING_IN_TARGET, MISSING_IN_S360, DIFFERENT = "missing_in_target", "missing_in_s360", "different"


class ReconcileError(S360BridgeError):
    """The comparison cannot run (a file, a column or a setting is wrong)."""


@dataclass(frozen=True)
class Field:
    """A compared field: its kind, its column in the S-360 export (by default) and where it
    sits in the webhook's record (which tells a CRM mapping's column for it)."""

    name: str
    kind: str
    s360_column: str
    path: str | None = None


@dataclass(frozen=True)
class Side:
    """How one side writes its values: the column of each field, amounts, zone-less times."""

    columns: dict[str, str]
    amount_unit: str = "units"  # or "thousandths"
    timezone: str = "UTC"


@dataclass
class Comparison:
    """What a stream plugin says about comparing it with its targets (the ``reconcile`` hook):
    the key and compared fields, its warehouse table with the column of each field (for a
    target that writes the warehouse), and how to read records again from S-360 for repair:
    ``fetch(keys, export_rows)``, where ``export_rows(keys)`` gives the export's own rows."""

    key: Field
    fields: list[Field]
    table: Any = None  # the stream's warehouse table (warehouse_table), if it has one
    columns: dict[str, str] = field(default_factory=dict)  # field name -> warehouse column
    fetch: Callable[[list[str], Callable], dict[str, dict | None]] | None = None


@dataclass
class Reconciliation:
    """One target's side of a comparison (``Target.reconcile_side``).

    ``target_rows(fields)`` streams the target's rows (key first, then those fields) when the
    target is a database; a target without it is compared through an export file whose columns
    are ``target_columns``. ``drop`` removes target rows so that a re-delivery rewrites them."""

    key: Field
    fields: list[Field]
    target_side: Side
    target_rows: Callable[[list[Field]], Iterable[tuple]] | None = None
    drop: Callable[[list[str]], None] | None = None
    # repair: the S-360 records of these keys (None: not found), e.g. through the API;
    # ``export_rows(keys)`` gives the export's own rows, for flat streams
    fetch: Callable[[list[str], Callable], dict[str, dict | None]] | None = None


@dataclass
class Summary:
    s360_records: int = 0
    target_records: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # status -> records
    field_counts: dict[str, int] = field(default_factory=dict)  # field -> records different

    @property
    def in_sync(self) -> bool:
        return not any(self.counts.values())


def configured(spec: Reconciliation, inst, stream: str) -> tuple[Reconciliation, Side]:
    """The stream's reconciliation with the institution's ``reconcile`` settings applied."""
    cfg = inst.reconcile.get(stream, {})
    known = {f.name for f in (spec.key, *spec.fields)}
    for what in ("columns", "target_columns", "compare"):
        unknown = set(cfg.get(what) or ()) - known
        if unknown:
            raise ReconcileError(f"{inst.source}: reconcile.{stream}.{what}: unknown field(s) "
                                 f"{', '.join(sorted(unknown))} (known: "
                                 f"{', '.join(sorted(known))})")
    if "compare" in cfg:
        spec = dataclasses.replace(spec, fields=[f for f in spec.fields
                                                 if f.name in cfg["compare"]])
    if cfg.get("target_columns"):
        side = spec.target_side
        spec = dataclasses.replace(spec, target_side=dataclasses.replace(
            side, columns={**side.columns, **cfg["target_columns"]}))
    columns = cfg.get("columns") or {}
    s360 = Side({f.name: columns.get(f.name, f.s360_column) for f in (spec.key, *spec.fields)},
                cfg.get("amount_unit", "units"), cfg.get("timezone", inst.timezone.key))
    return spec, s360


def _norm(kind: str, value: str, side: Side, local: str) -> str:
    """The SQL that normalises ``value`` (a text column) for its kind (texts are normalised in
    the join: ``_text``); ``local`` names the column of its wall time
    (``reconcile_times.local_us``), which a date-time reads."""
    if kind == "amount":  # casts skip spaces; ``trim`` (slower) only for what they refuse
        if side.amount_unit == "thousandths":
            return f"coalesce(try_cast({value} AS BIGINT), try_cast(trim({value}) AS BIGINT))"
        plain = f"CASE WHEN contains({value}, ',') THEN replace({value}, ',', '') ELSE {value} END"
        number = (f"coalesce(try_cast({plain} AS DECIMAL(18, 3)), "
                  f"try_cast(replace(trim({value}), ',', '') AS DECIMAL(18, 3)))")
        return f"CAST({number} * 1000 AS BIGINT)"
    if kind == "datetime":  # to whole UTC seconds; a value without an offset is in the zone
        return utc_seconds(value, local, side.timezone)
    raise ReconcileError(f"unknown field kind {kind!r} (known: {', '.join(KINDS)})")


def _text(kind: str, value: str) -> str:
    """A text trimmed, its runs of spaces collapsed (and case-folded for ``ci_text``)."""
    text = (f"nullif(trim(CASE WHEN contains({value}, '  ') THEN regexp_replace({value}, "
            f"'\\s+', ' ', 'g') ELSE {value} END), '')")
    return text if kind == "text" else f"lower({text})"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sniff(con, path: Path) -> tuple[str, list[str]]:
    """A file's dialect, as ``read_csv`` options, and its columns: sniffed once, so that
    binding the view that reads the file with them costs nothing more."""
    import duckdb

    try:
        ((delim, quote, escape, new_line, comment, skip, found),) = con.execute(
            "SELECT Delimiter, Quote, Escape, NewLineDelimiter, Comment, SkipRows, Columns "
            "FROM sniff_csv(?, all_varchar = true, header = true)", [str(path)]).fetchall()
    except duckdb.Error as exc:
        raise ReconcileError(f"{path}: cannot read as CSV: {_reason(exc)}") from None
    dialect = {"delim": delim, "quote": quote, "escape": escape, "new_line": new_line,
               "comment": comment}  # sniff_csv writes an empty option as "(empty)"
    options = ", ".join(f"{k} = {_lit('' if v == '(empty)' else v)}" for k, v in dialect.items())
    return f"skip = {int(skip)}, {options}", [c["name"] for c in found]


def _view(con, view: str, path: Path, sniffed: tuple[str, list[str]], spec: Reconciliation,
          side: Side) -> None:
    """One side as a view over its file (read with what ``_sniff`` found): its key, a mark
    that the side has the row, and per field the normalised value and, where the report
    shows it, the raw one. A view, not a table: the comparison reads the file as it joins, in
    one pass, instead of holding both sides."""
    options, names = sniffed
    wanted = [spec.key, *spec.fields]
    lacking = [side.columns[f.name] for f in wanted if side.columns[f.name] not in names]
    if lacking:
        raise ReconcileError(f"{path}: no column {', '.join(lacking)} (columns: "
                             f"{', '.join(names)}); set the names under reconcile.<stream>")
    columns = ", ".join(f"{_lit(n)}: 'VARCHAR'" for n in names)
    con.execute(f"CREATE TEMP VIEW {view}_file AS SELECT * FROM read_csv({_lit(str(path))}, "
                f"auto_detect = false, header = true, {options}, "
                f"columns = {{{columns}}})")
    # the key's and the fields' columns numbered (v0, v1… in the fields' order), and below the
    # normalisation what it reads many times (a date-time's wall time, l1…), once a row
    inner = [f"{_q(side.columns[spec.key.name])} AS v0"]
    # a key is trimmed (the join's costliest expression) unless it starts and ends with a
    # printable ASCII character, which ``trim`` would keep (it removes spaces, Unicode's too)
    cols = ["CASE WHEN v0[1] BETWEEN '!' AND '~' AND v0[-1] BETWEEN '!' AND '~' THEN v0 "
            "ELSE trim(v0) END AS k", "true AS p"]
    for i, f in enumerate(spec.fields, 1):
        inner.append(f"{_q(side.columns[f.name])} AS v{i}")
        if f.kind == "datetime":
            inner.append(f"{local_us(f'v{i}')} AS l{i}")
        if f.kind in TEXTS:  # normalised in the join, where the texts as written differ
            cols.append(f"v{i} AS {_q('n_' + f.name)}")
            continue
        cols.append(f"{_norm(f.kind, f'v{i}', side, f'l{i}')} AS {_q('n_' + f.name)}")
        cols.append(f"v{i} AS {_q('raw_' + f.name)}")
    con.execute(f"CREATE TEMP VIEW {view} AS SELECT {', '.join(cols)} FROM "
                f"(SELECT {', '.join(inner)} FROM {view}_file)")


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _reason(exc: Exception) -> str:
    """DuckDB's reason, without the row it quotes (a contact's data) or its own options."""
    lines = str(exc).split("\n")
    return " ".join(x for x in lines[:lines.index("") if "" in lines else None]
                    if not x.startswith("Original Line"))


def _dump_rows(rows: Iterable[tuple], spec: Reconciliation, folder: str) -> Path:
    """A database side, written to a CSV file for DuckDB to read."""
    path = Path(folder) / "target.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow([spec.key.name, *(x.name for x in spec.fields)])
        out.writerows(rows)
    return path


def compare(spec: Reconciliation, s360_side: Side, s360_file: Path, target_file: Path | None,
            report: Path, fmt: str = "csv", step: Callable[[str], None] = lambda s: None
            ) -> Summary:
    """Compare both sides; write every difference to ``report``; answer the counts."""
    import duckdb  # here, not at the top: 25 MiB that no receiver or worker process needs

    summary = Summary()
    for side in (s360_side, spec.target_side):
        try:
            ZoneInfo(side.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ReconcileError(f"unknown time zone {side.timezone!r}") from None
    with tempfile.TemporaryDirectory(prefix="s360bridge-reconcile-") as tmp:
        con = duckdb.connect(config={"autoinstall_known_extensions": False,
                                     "autoload_known_extensions": False,
                                     "preserve_insertion_order": False,
                                     "temp_directory": tmp})
        try:
            con.execute("SET TimeZone = 'UTC'")  # zones are explicit in every conversion
            step("reading the S-360 export's columns")
            # both files are sniffed at once, and the zones' changes found meanwhile; what is
            # wrong with S-360's export is said first, and before a warehouse is read
            with con.cursor() as one, con.cursor() as other, ThreadPoolExecutor(2) as pool:
                s360_sniffed = pool.submit(_sniff, one, s360_file)
                target_sniffed = (pool.submit(_sniff, other, target_file)
                                  if target_file is not None else None)
                _zones(con, spec, s360_side)
                _view(con, "s", s360_file, s360_sniffed.result(), spec, s360_side)
                step("reading the target's side")
                if target_file is None:
                    if spec.target_rows is None:
                        raise ReconcileError("this target has no rows to read: give its "
                                             "export file (--target-export)")
                    target_file = _dump_rows(spec.target_rows(spec.fields), spec, tmp)
                    target = _sniff(con, target_file)
                else:
                    target = target_sniffed.result()
                _view(con, "t", target_file, target, spec, spec.target_side)
            step("comparing")
            try:
                _diff(con, spec, summary, s360_file, target_file)
            except duckdb.Error as exc:  # a row past those sampled for the dialect
                which = [str(p) for p in (s360_file, target_file) if str(p) in str(exc)]
                raise ReconcileError(f"{' or '.join(which or ['a side'])}: cannot read as "
                                     f"CSV: {_reason(exc)}") from None
            step("writing the report")
            _write(con, spec, report, fmt)
        finally:
            con.close()
    return summary


def _zones(con, spec: Reconciliation, s360_side: Side) -> None:
    """The changes of each zone that a date-time field is read in (``transitions``, kept for
    the process), and that DuckDB knows it: its ICU converts the times outside their years."""
    if not any(f.kind == "datetime" for f in spec.fields):
        return
    for zone in {s360_side.timezone, spec.target_side.timezone} - {"UTC"}:
        if not con.execute("SELECT count(*) FROM pg_timezone_names() WHERE name = ?",
                           [zone]).fetchone()[0]:
            raise ReconcileError(f"unknown time zone {zone!r} (DuckDB's ICU does not know "
                                 "it)")
        transitions(zone)


def _differs(f: Field) -> str:
    """Whether the sides' values of ``f`` differ once normalised; texts are normalised only
    where they differ as written (a few rows), the rest was normalised by the views."""
    s, t = f"s.{_q('n_' + f.name)}", f"t.{_q('n_' + f.name)}"
    if f.kind in TEXTS:
        return (f"CASE WHEN {s} IS NOT DISTINCT FROM {t} THEN false ELSE "
                f"{_text(f.kind, s)} IS DISTINCT FROM {_text(f.kind, t)} END")
    return f"{s} IS DISTINCT FROM {t}"


def _shown(f: Field, side: str) -> str:
    """What the report shows of a side's value: texts as compared (trimmed; an e-mail with
    its case), the rest as written."""
    if f.kind in PLAIN:
        return _text(f.kind, f"{side}.{_q('n_' + f.name)}")
    return f"{side}.{_q(('n_' if f.kind in TEXTS else 'raw_') + f.name)}"


def _diff(con, spec: Reconciliation, summary: Summary, s360_file: Path,
          target_file: Path) -> None:
    differs = " OR ".join(_differs(f) for f in spec.fields) or "false"
    flags = ", ".join(f"{_differs(f)} AS {_q('d_' + f.name)}" for f in spec.fields)
    # each side's records are the rows its file's scan gave the join (a full join: no filter
    # reaches a scan), as DuckDB's profile of the join counts them: no pass of their own, and
    # exact where a key is written twice, which the join's pairs are not
    con.execute("SET enable_profiling = 'no_output'")
    con.execute("SET tracked_metrics = ['operator.extra_info', 'operator.rows_scanned']")
    con.execute(f"""
        CREATE TABLE d AS
        SELECT coalesce(s.k, t.k) AS k,
               CASE WHEN t.p IS NULL THEN '{MISSING_IN_TARGET}'
                    WHEN s.p IS NULL THEN '{MISSING_IN_S360}' ELSE '{DIFFERENT}' END AS status
               {', ' + flags if flags else ''},
               {', '.join(f"{_shown(f, 's')} AS {_q('s_' + f.name)}, "
                          f"{_shown(f, 't')} AS {_q('t_' + f.name)}"
                          for f in spec.fields) or 'NULL AS none'}
        FROM s FULL OUTER JOIN t ON s.k = t.k
        WHERE s.p IS NULL OR t.p IS NULL OR {differs}""")
    scanned = _scanned(orjson.loads(con.get_profiling_information(format="json")))
    con.execute("RESET enable_profiling")
    summary.s360_records, summary.target_records = (scanned[str(s360_file)],
                                                    scanned[str(target_file)])
    summary.counts = {MISSING_IN_TARGET: 0, MISSING_IN_S360: 0, DIFFERENT: 0} | dict(
        con.execute("SELECT status, count(*) FROM d GROUP BY status").fetchall())
    if spec.fields:
        counts = con.execute("SELECT " + ", ".join(
            f"count(*) FILTER (WHERE {_q('d_' + f.name)})" for f in spec.fields) +
            f" FROM d WHERE status = '{DIFFERENT}'").fetchone()
        summary.field_counts = {f.name: n for f, n in zip(spec.fields, counts, strict=True)
                                if n}


def _scanned(profile: dict) -> dict[str, int]:
    """The rows each file's scan gave, by file name, from DuckDB's profile of a query."""
    rows, nodes = {}, list(profile["operator"])
    while nodes:
        node = nodes.pop()
        nodes += node.get("children", [])
        if node["extra_info"].get("Function") == "READ_CSV":
            rows[node["extra_info"]["Filename(s)"]] = node["rows_scanned"]
    return rows


def _write(con, spec: Reconciliation, report: Path, fmt: str) -> None:
    parts = [f"SELECT k AS key, status, NULL AS field, NULL AS s360_value, NULL AS "
             f"target_value FROM d WHERE status <> '{DIFFERENT}'"]
    parts += [f"SELECT k, status, {_lit(f.name)}, {_q('s_' + f.name)}, {_q('t_' + f.name)} FROM d "
              f"WHERE status = '{DIFFERENT}' AND {_q('d_' + f.name)}" for f in spec.fields]
    options = "FORMAT JSON" if fmt == "jsonl" else "FORMAT CSV, HEADER"
    con.execute(f"COPY ({' UNION ALL '.join(parts)} ORDER BY key, field) TO ? ({options})",
                [str(report)])


def differences(report: Path, fmt: str) -> Iterable[dict]:
    """Read back a report: one dict per difference."""
    with report.open("rb") as f:
        if fmt == "jsonl":
            yield from (orjson.loads(line) for line in f if line.strip())
        else:
            yield from csv.DictReader(line.decode("utf-8") for line in f)
