"""Tests for kpn.model.reference: the plain stages are for the tests alone (the tests of
each stage compare its fast path against them: test_features, test_apply, test_mlp,
test_tiling)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "kpn"


def imported_modules(path: Path) -> set[str]:
    """The modules a file imports, and ``package.name`` for each ``from package import name``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_library_module_imports_the_reference() -> None:
    importers = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name != "reference.py" and "kpn.model.reference" in imported_modules(path)
    ]
    assert importers == []


def test_import_scan_sees_both_forms(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from kpn.model import reference\nimport kpn.model.reference as r\n")
    assert "kpn.model.reference" in imported_modules(module)
    module.write_text("from kpn.model import network\n")
    assert "kpn.model.reference" not in imported_modules(module)
