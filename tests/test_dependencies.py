"""Dependencies are declared exactly: every third-party package the code imports is declared in
pyproject.toml (core or an extra), and every core dependency is imported somewhere."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "napari_cellclf"
# import name -> distribution name, where they differ
DISTRIBUTION = {
    "skimage": "scikit-image",
    "sklearn": "scikit-learn",
    "yaml": "pyyaml",
    "bioimageio": "bioimageio.core",
}


def _names(requirement: str) -> set[str]:
    """ "dask[distributed]>=2024" -> {"dask", "distributed"} (an extra that names a package)."""
    name = re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].strip().lower()
    extras = re.search(r"\[([^\]]*)\]", requirement)
    return {name} | ({e.strip().lower() for e in extras.group(1).split(",")} if extras else set())


def _imported() -> set[str]:
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    third_party = names - set(sys.stdlib_module_names) - {"napari_cellclf", "__future__"}
    return {DISTRIBUTION.get(name, name).lower() for name in third_party}


def test_imports_and_declared_dependencies_agree():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    core = {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].strip().lower() for r in project["dependencies"]}
    extras = {n for group in project["optional-dependencies"].values() for r in group for n in _names(r)}
    imported = _imported()
    assert not imported - core - extras, f"imported but not declared: {sorted(imported - core - extras)}"
    assert not core - imported, f"declared but never imported: {sorted(core - imported)}"
