"""Where a benchmark's figures came from, and how its results are written.

Every results file starts with :func:`provenance`: the machine, the date, the commit and
the command, so that a table can be traced to the run that made it. Files are written
atomically (:func:`kpn.io.atomic.atomic_write_bytes`): a killed benchmark leaves the last
complete results, never half a table.
"""

from __future__ import annotations

import csv
import datetime
import importlib
import io
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

try:  # a --baseline child of speed.py imports that revision's kpn, which may be flat
    from kpn.io.atomic import atomic_write_bytes
except ImportError:  # kpn before its subpackages (1a63088 and earlier)
    from kpn.fileio import atomic_write_bytes  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
MATMUL_SIZE = 2048  # the square matmul whose speed stands for the machine's FLOP limit


def missing_bench_extra(*modules: str) -> int | None:
    """2, with one line naming the first of ``modules`` (the ``bench`` extra's) that does
    not import, or None when all do."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            print(f"error: {error.name} is missing: pip install -e '.[bench]'", file=sys.stderr)
            return 2
    return None


def matmul_gflops(dtype: torch.dtype) -> float:
    """GFLOP/s of one ``MATMUL_SIZE`` square matmul in ``dtype`` on the CPU, after a warm-up."""
    a = torch.rand(MATMUL_SIZE, MATMUL_SIZE).to(dtype)
    a @ a
    start = time.perf_counter()
    a @ a
    return 2 * MATMUL_SIZE**3 / (time.perf_counter() - start) / 1e9


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo``), or what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    """The checked-out commit, ``+changes`` when the work tree differs from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def provenance(command: Sequence[str] | None = None) -> list[str]:
    """Markdown lines: machine, date, commit, software and the command that ran."""
    argv = sys.argv if command is None else command
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return [
        f"- machine: {cpu_name()}, {os.cpu_count()} cores, {gpu}; torch {torch.__version__} "
        f"with {torch.get_num_threads()} threads",
        f"- date: {now}; commit {git_commit()}",
        f"- command: `python {shlex.join(argv)}`",
    ]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table; the first column is left-aligned, the others right."""
    align = [":--"] + ["--:"] * (len(header) - 1)
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode("utf-8"))


def write_csv(path: Path, rows: Sequence[dict[str, object]]) -> None:
    """One row per dict; the columns are every key in the order first seen."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())
