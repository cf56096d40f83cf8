"""Packaging: the wheel namespaces every folder under ``s360bridge`` and ships the schemas and the
migrations; the simulator is a wheel of its own that adds ``s360bridge.simulator``, never part of
the product's."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


class Wheel:
    def __init__(self, path: Path):
        self.zip = zipfile.ZipFile(path)
        self.names = self.zip.namelist()
        self.dist_info = next(n for n in self.names if n.endswith(".dist-info/METADATA"))[:-9]
        self.metadata = Parser().parsestr(self.read("METADATA"))

    def read(self, name: str) -> str:
        return self.zip.read(self.dist_info + "/" + name).decode("utf-8")


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Wheel]:
    """The product's wheel and the simulator's, built as pip builds them, from a clean copy of
    the sources (a build/ folder left in the tree would add its stale files to the wheel), with
    the virtualenv's setuptools: nothing is downloaded at test time."""
    out, src = tmp_path_factory.mktemp("wheels"), tmp_path_factory.mktemp("src") / "s360bridge"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "var", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index",
                    "--no-build-isolation", "-w", str(out), str(src), str(src / "simulator")],
                   check=True, capture_output=True, timeout=600)
    return {w.metadata["Name"]: w for w in map(Wheel, out.glob("*.whl"))}


def test_wheel_installs_nothing_generic_at_the_top_level(wheels):
    wheel = wheels["s360bridge"]
    assert {n.split("/")[0] for n in wheel.names} == {"s360bridge", wheel.dist_info}
    for needed in ("s360bridge/core/config.schema.json", "s360bridge/plugins/orders/schema.json",
                   "s360bridge/plugins/contacts/schema.json",
                   "s360bridge/plugins/ticketchecks/__init__.py",
                   "s360bridge/core/storage/migrations/engine_0001_schema_of_b60f5fd.py",
                   "s360bridge/core/operator/app.py", "s360bridge/core/instruments.py",
                   "s360bridge/plugins/offers/migrations/offers_0001_schema_of_b60f5fd.py",
                   "s360bridge/core/storage/migrations/crm_0001_schema_of_b60f5fd.py",
                   "s360bridge/plugins/contacts/migrations/contacts_0001_schema_of_b60f5fd.py"):
        assert needed in wheel.names
    assert "s360bridge = s360bridge.core.cli.main:main" in wheel.read("entry_points.txt")


def test_the_product_wheel_ships_every_module_schema_and_template(wheels):
    """A folder missing from setup.cfg's package list is not in the wheel, and neither are
    its templates: the console would only work from a checkout."""
    sources = {f"s360bridge/{p.relative_to(ROOT).as_posix()}"
               for folder in ("core", "plugins") for p in (ROOT / folder).rglob("*")
               if p.suffix in (".py", ".json", ".html") and "__pycache__" not in p.parts}
    missing = sources - set(wheels["s360bridge"].names)
    assert not missing, sorted(missing)


def test_the_product_wheel_has_no_simulator(wheels):
    wheel = wheels["s360bridge"]
    assert not [n for n in wheel.names if n.startswith("s360bridge/simulator")]
    assert "simulator" not in wheel.read("entry_points.txt")


def test_the_simulator_wheel_adds_it_to_the_namespace_and_plugs_in(wheels):
    wheel, product = wheels["s360bridge-simulator"], wheels["s360bridge"]
    assert {n.split("/")[0] for n in wheel.names} == {"s360bridge", wheel.dist_info}
    assert "s360bridge/__init__.py" not in wheel.names  # the namespace stays shared
    assert {"s360bridge/simulator/plugin.py", "s360bridge/simulator/webhooks.py"} \
        <= set(wheel.names)
    assert "[s360bridge]\nsimulator = s360bridge.simulator.plugin" in wheel.read(
        "entry_points.txt")
    assert wheel.metadata["Version"] == product.metadata["Version"]
    assert f"s360bridge=={product.metadata['Version']}" in wheel.metadata.get_all("Requires-Dist")
