"""Packaging: the wheel namespaces every folder under ``s360bridge`` and ships the schemas and the
migrations."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_installs_nothing_generic_at_the_top_level(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("s360bridge-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"s360bridge", next(t for t in tops if t.endswith(".dist-info"))}
    for needed in ("s360bridge/core/config.schema.json", "s360bridge/plugins/orders/schema.json",
                   "s360bridge/plugins/contacts/schema.json",
                   "s360bridge/plugins/ticketchecks/__init__.py",
                   "s360bridge/core/storage/migrations/engine_0001_schema_of_b60f5fd.py",
                   "s360bridge/plugins/offers/migrations/offers_0001_schema_of_b60f5fd.py",
                   "s360bridge/core/storage/migrations/crm_0001_schema_of_b60f5fd.py",
                   "s360bridge/plugins/contacts/migrations/contacts_0001_schema_of_b60f5fd.py",
                   "s360bridge/simulator/webhooks.py"):
        assert needed in names
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt")))
    assert b"s360bridge = s360bridge.core.cli.main:main" in meta
    assert b"[s360bridge]" in meta
