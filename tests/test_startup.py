"""Starting a command: ``kpn`` imports nothing heavy, so that a Ctrl-C while torch loads
(a second or more) ends every entry point with one line and status 130, no traceback."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import kpn

ROOT = Path(__file__).resolve().parents[1]

# Ctrl-C at the moment torch starts to import, in a fresh interpreter
STOP_AT_TORCH = """
import builtins
real_import = builtins.__import__

def import_stopping_at_torch(name, *args, **kwargs):
    if name.split(".")[0] == "torch":
        raise KeyboardInterrupt
    return real_import(name, *args, **kwargs)

builtins.__import__ = import_stopping_at_torch
"""

ENTRY_POINTS = {
    "python infer.py": "import runpy; runpy.run_path('infer.py', run_name='__main__')",
    "python train.py": "import runpy; runpy.run_path('train.py', run_name='__main__')",
    "python -m kpn": "import runpy; runpy.run_module('kpn', run_name='__main__', alter_sys=True)",
    "kpn-infer": "from kpn.cli import kpn_infer; kpn_infer()",
    "kpn-train": "from kpn.cli import kpn_train; kpn_train()",
    "kpn": "from kpn.cli import kpn_tools; kpn_tools()",
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_ctrl_c_while_torch_loads_is_one_line(entry: str) -> None:
    code = STOP_AT_TORCH + ENTRY_POINTS[entry]
    result = subprocess.run(
        [sys.executable, "-c", code, "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert (result.returncode, result.stderr, result.stdout) == (130, "interrupted\n", "")


def test_the_console_scripts_are_the_launchers() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {
        "kpn": "kpn.cli:kpn_tools",
        "kpn-infer": "kpn.cli:kpn_infer",
        "kpn-train": "kpn.cli:kpn_train",
    }


def test_the_packages_names_import_when_used() -> None:
    from kpn.api import load
    from kpn.errors import KpnError
    from kpn.model.network import kpn_forward

    assert (kpn.load, kpn.KpnError, kpn.kpn_forward) == (load, KpnError, kpn_forward)
    assert set(kpn.__all__) <= set(dir(kpn))
    with pytest.raises(AttributeError, match="'kpn' has no attribute 'lode'"):
        kpn.lode  # noqa: B018
