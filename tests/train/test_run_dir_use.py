"""train.py's --out: an existing folder is used when it is empty or holds only the
temporary files of killed writes (removed), and says so; anything else is refused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from kpn.io.checkpoint import load_checkpoint
from kpn.train.cli import build_parser, main, plan_run

pytestmark = pytest.mark.usefixtures("one_thread")
ONE_TILE = ("data.batch=1", "data.validation_count=1", "train.steps=2")
STALE = (".checkpoint.pt.0123abcd.tmp.pt", ".config.toml.deadbeef.tmp.toml")


def stdout_lines_about(folder: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().out.splitlines() if str(folder) in line]


def test_an_empty_folder_is_used_and_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_config: Callable[..., Path]
) -> None:
    config = tiny_config(*ONE_TILE)
    run = tmp_path / "run"
    run.mkdir()
    assert main(["--config", str(config), "--out", str(run)]) == 0
    assert stdout_lines_about(run, capsys)[0] == f"{run}: empty folder, used as the run folder"
    assert load_checkpoint(run / "checkpoint.pt").step == 2

    continued = tmp_path / "continued"  # a resume written into another, empty folder
    continued.mkdir()
    assert main(["--resume", str(run), "--out", str(continued), "--set", "train.steps=3"]) == 0
    said = stdout_lines_about(continued, capsys)[0]
    assert said == f"{continued}: empty folder, used as the run folder"
    assert load_checkpoint(continued / "checkpoint.pt").step == 3


def test_a_folder_of_a_killed_writes_temporary_files_is_cleaned_and_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_config: Callable[..., Path]
) -> None:
    config = tiny_config(*ONE_TILE)
    run = tmp_path / "run"
    run.mkdir()
    for name in STALE:
        (run / name).write_bytes(b"half a file")
    assert main(["--config", str(config), "--out", str(run)]) == 0
    said = stdout_lines_about(run, capsys)[0]
    assert said == (
        f"{run}: removed 2 stale temporary files of a killed write; used as the run folder"
    )
    assert not any((run / name).exists() for name in STALE)
    assert load_checkpoint(run / "checkpoint.pt").step == 2
    assert not [path.name for path in run.iterdir() if ".tmp" in path.name]

    fresh = tmp_path / "fresh"  # one file: the line says so in the singular
    fresh.mkdir()
    (fresh / STALE[0]).write_bytes(b"")
    plan = plan_run(build_parser().parse_args(["--config", str(config), "--out", str(fresh)]))
    assert plan.notes == (
        f"{fresh}: removed 1 stale temporary file of a killed write; used as the run folder",
    )
    assert list(fresh.iterdir()) == []


@pytest.mark.parametrize(
    "names",
    [
        ("notes.txt",),
        ("notes.txt", STALE[0]),  # stale files beside a real one: nothing is removed
        (".checkpoint.pt.not-hex.tmp.pt",),  # only looks like a temporary file
        (".notes.txt.0123abcd.tmp.txt",),  # the temporary file of no run folder's file
    ],
)
def test_a_folder_holding_anything_else_is_still_refused(
    tmp_path: Path,
    names: tuple[str, ...],
    tiny_config: Callable[..., Path],
    error_line: Callable[[], str],
) -> None:
    config = tiny_config(*ONE_TILE)
    run = tmp_path / "run"
    run.mkdir()
    for name in names:
        (run / name).write_bytes(b"someone's")
    assert main(["--config", str(config), "--out", str(run)]) == 2
    assert error_line() == f"error: {run}: run directory exists; use --resume or another --out"
    assert sorted(path.name for path in run.iterdir()) == sorted(names)
