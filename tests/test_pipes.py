"""A reader that stops reading ends a command quietly: ``kpn-infer ... | head -1`` exits
141 (as SIGPIPE ends a C program) with no BrokenPipeError traceback and no partial file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kpn.cli import BROKEN_PIPE_STATUS
from kpn.io.pfm import write_pfm

ROOT = Path(__file__).resolve().parent.parent


def closed_reader(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python argv...`` with its stdout a pipe whose reader has already gone."""
    process = subprocess.Popen(
        [sys.executable, *argv],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # `| head -0`: nothing will ever be read
    stderr = process.stderr.read()
    return subprocess.CompletedProcess(process.args, process.wait(timeout=120), "", stderr)


@pytest.mark.parametrize(
    "argv",
    [
        ["infer.py", "photo.pfm", "--noise-a", "2e4", "--noise-b", "4", "--sure", "off"],
        ["-m", "kpn", "summary", "--config", "design"],
    ],
    ids=["kpn-infer", "python -m kpn"],
)
def test_closed_stdout_ends_quietly(tmp_path: Path, argv: list[str]) -> None:
    rng = np.random.default_rng(0)
    write_pfm(tmp_path / "photo.pfm", (0.3 + 0.02 * rng.standard_normal((16, 16, 3))).astype("f4"))
    argv = [str(ROOT / argv[0]) if argv[0].endswith(".py") else argv[0], *argv[1:]]
    done = closed_reader(*argv, cwd=tmp_path)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == BROKEN_PIPE_STATUS, done.stderr
    # kpn-infer prints its weights line before it writes anything: no output, no temp file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.pfm"]
