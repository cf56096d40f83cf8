"""The benchmarks at a tiny size, so that they cannot rot: each must run to its end and find
what it checks (every stored record delivered, the same differences, nothing left pending).
No figure is asserted: speed is measured by hand (bench/README.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def needs(what: str, present: bool) -> None:
    """CI installs what the benchmarks need; elsewhere a missing tool skips the smoke test."""
    if not present:
        if os.environ.get("CI"):
            pytest.fail(f"{what} is not installed: .ci/run must install it")
        pytest.skip(f"{what} is not installed")


def bench(script: str, *args: str, timeout: float = 180) -> str:
    out = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def test_ingest_and_end_to_end_on_both_backends():
    """Ingest with one and two gunicorn workers, drains with one and two worker processes,
    on both backends, with what each process used."""
    needs("wrk", shutil.which("wrk") is not None)
    needs("PostgreSQL", Path("/usr/lib/postgresql").exists())
    out = bench("run.py", "--seconds", "1", "--rounds", "1", "--fill", "10000",
                "--gunicorn-workers", "1,2", "--drain-workers", "1,2")
    assert "ERROR" not in out
    assert out.count("sqlite: loading the receiver until 10000") == 2
    assert out.count("ingest, ") == 2 and "gunicorn: CPU s " in out
    assert out.count("  drain ") == 4 and out.count("  backlog  the oldest record") == 4
    assert out.count("PostgreSQL: CPU ") == 2 + 2  # two ingest phases, two drains
    assert "'max_connections': '100'" in out and "sqlite scale-out: ingest" in out
    assert "postgresql / sqlite: ingest" in out


def test_worker_parts():
    out = bench("worker_parts.py", "--records", "3000")
    assert "3000 records in" in out and "; 0 left pending" in out
    assert "commits (fsync)" in out


def test_worker_parts_on_postgresql_ahead():
    """On PostgreSQL with the claims and completions in the background, as the worker runs
    there: their thread's wall and CPU time are printed beside the parts."""
    needs("PostgreSQL", Path("/usr/lib/postgresql").exists())
    out = bench("worker_parts.py", "--records", "3000", "--backend", "postgresql", "--ahead",
                "--batch-size", "1000")  # a full claim, so the next ones go to the background
    assert "3000 records in" in out and "; 0 left pending" in out
    assert "background thread: busy " in out
    assert "  claims " in out and "  completions " in out and "waiting for a core" in out


def test_claims_beside():
    """A claim beside another worker's batch, and alone, on PostgreSQL."""
    needs("PostgreSQL", Path("/usr/lib/postgresql").exists())
    out = bench("claims_beside.py", "--records", "9000", "--claims", "2", "--batch-size",
                "1000")
    assert "9000 records stored in " in out and "2 claims of 1000 in each case" in out
    assert "a claim beside another worker's batch " in out and "beside / alone " in out


def test_history_import():
    """The import's figures, and an import killed mid-store then mid-delivery that resumes
    (8,000 orders: a file large enough to be delivered beside its store)."""
    out = bench("history_import.py", "--records", "1000", "--resume-records", "8000")
    assert out.count("every record stored once and delivered") == 2
    assert "killed at line " in out
    assert "interrupted import: resumed where it stopped, every record once: OK" in out


def test_crm_to_s360():
    out = bench("crm_to_s360.py", "--changes", "20", "--limit", "600")
    assert "20 CRM changes accepted" in out
    assert "0 x 509" in out


def test_reconcile():
    needs("pandas (the bench extra)", _importable("pandas"))
    out = bench("reconcile.py", "--records", "2000")
    assert out.count("same differences") == 4 and "WRONG" not in out


def _importable(module: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {module}"],
                          capture_output=True).returncode == 0


def test_open_loop():
    out = bench("open_loop.py", "--rate", "20", "--seconds", "2")
    assert "40 POSTs, 0 not answered 200" in out
    assert "accepted 2,000 records" in out and "delivered 2,000 (2,000 distinct), 0 left" in out


def test_retention():
    """The purge beside a steady ingest on both backends: what must stay stays, nothing
    purgeable is left."""
    needs("PostgreSQL", Path("/usr/lib/postgresql").exists())
    out = bench("retention.py", "--rows", "20000", "--baseline", "1", "--rate", "20")
    assert out.count("nothing purgeable left; kept as they were: dead letters 13") == 2
    assert "ERROR" not in out and "ingest during the deletes" in out
