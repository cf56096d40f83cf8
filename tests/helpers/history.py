"""What the import and reconcile tests share: a command's exit code and output, a warehouse
table's rows, generated records, the zone of the test venue's exports."""

from __future__ import annotations

import sqlite3
from zoneinfo import ZoneInfo

from s360bridge.simulator.data import Generator

ZURICH = ZoneInfo("Europe/Zurich")


def run(invoke, *args):
    result = invoke(*args)
    return result.exit_code, result.output


def warehouse_count(tmp_path, table: str) -> int:
    with sqlite3.connect(tmp_path / "warehouse.db") as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def generated(stream: str, n: int, seed: int = 4) -> list[dict]:
    gen = Generator(seed)
    gen.records("contacts", 20)
    return gen.records(stream, n)
