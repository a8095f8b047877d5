"""Which modules the library pulls in: loading weights needs neither the training code nor
a command line, and no library module imports a command line."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kpn"
SHIPPED_RUN = PACKAGE / "weights" / "design"


def is_command_line(module: str) -> bool:
    """``python -m kpn`` and its per-subpackage commands, kpn-infer, train.py's, and the
    argparse helpers they share."""
    return module in ("kpn.cli", "kpn.__main__") or module.endswith(".cli")


def kpn_modules_after(code: str) -> list[str]:
    """The ``kpn.*`` modules a fresh interpreter has imported after running ``code``."""
    listing = "print(json.dumps(sorted(m for m in sys.modules if m.startswith('kpn'))))"
    script = f"{code}\nimport json, sys\n{listing}"
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_is_command_line() -> None:
    for name in ("kpn.cli", "kpn.__main__", "kpn.infer.cli", "kpn.train.cli", "kpn.vkdt.cli"):
        assert is_command_line(name), name
    for name in ("kpn", "kpn.api", "kpn.infer.weights", "kpn.vkdt.lut_model", "kpn.client"):
        assert not is_command_line(name), name


@pytest.mark.parametrize(
    "code",
    [
        "import kpn, kpn.infer.weights",
        f"import kpn; kpn.load({str(SHIPPED_RUN)!r})",
        f"import kpn; kpn.load({str(SHIPPED_RUN / 'weights.lut')!r})",
        "from kpn.infer.weights import load_weights, shipped_weights; "
        "load_weights(shipped_weights())",
    ],
    ids=["import", "load-run", "load-lut", "load-weights"],
)
def test_loading_weights_imports_no_training_and_no_command_line(code: str) -> None:
    modules = kpn_modules_after(code)
    assert "kpn.infer.weights" in modules  # the code did load something
    unwanted = [m for m in modules if m.startswith("kpn.train") or is_command_line(m)]
    assert unwanted == [], unwanted


def imported_modules(path: Path) -> set[str]:
    """Every module a source file imports, by full name (``from kpn.vkdt import cli`` gives
    ``kpn.vkdt`` and ``kpn.vkdt.cli``), wherever in the file the import stands."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def library_modules() -> dict[str, Path]:
    """kpn's modules other than the command lines, by name."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if not is_command_line(name):
            modules[name] = path
    return modules


def test_imported_modules_reads_every_form(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "import kpn.cli\nfrom kpn.vkdt import cli\ndef f():\n    from kpn.model.cli import x\n"
    )
    assert {"kpn.cli", "kpn.vkdt.cli", "kpn.model.cli"} <= imported_modules(source)


def test_no_library_module_imports_a_command_line() -> None:
    modules = library_modules()
    assert {"kpn", "kpn.api", "kpn.infer.weights", "kpn.vkdt.lut_model"} <= set(modules)
    offenders = {
        name: sorted(m for m in imported_modules(path) if is_command_line(m))
        for name, path in modules.items()
    }
    assert {name: found for name, found in offenders.items() if found} == {}
