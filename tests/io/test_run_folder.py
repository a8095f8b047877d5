"""RunFolder: the names of a run folder's files, the contract between the trainer and the
readers of its runs (inference, export, the scripts)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from kpn.config import Config
from kpn.io.checkpoint import TrainingState, load_checkpoint, save_checkpoint
from kpn.io.run_folder import RunFolder


def test_names_of_the_files() -> None:
    folder = RunFolder(Path("runs") / "quick")
    assert folder.path == Path("runs/quick")
    assert folder.config == Path("runs/quick/config.toml")
    assert folder.checkpoint == Path("runs/quick/checkpoint.pt")
    assert folder.previous_checkpoint == Path("runs/quick/checkpoint.prev.pt")
    assert folder.best == Path("runs/quick/best.pt")
    assert folder.weights == Path("runs/quick/weights.lut")


def test_a_string_is_a_path_and_folders_compare_by_it() -> None:
    assert RunFolder("runs/quick") == RunFolder(Path("runs/quick"))
    assert RunFolder("runs/quick") != RunFolder("runs/other")
    assert len({RunFolder("a"), RunFolder(Path("a"))}) == 1
    assert isinstance(RunFolder("a").path, Path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        RunFolder("a").path = Path("b")  # type: ignore[misc]


def test_nothing_need_exist(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "not yet")
    assert not folder.path.exists() and not folder.checkpoint.exists()


def state_at(step: int) -> TrainingState:
    """A checkpoint's state of a small model, told apart by ``step``."""
    weights = {"weight": torch.full((2, 2), float(step))}
    return TrainingState(Config(), weights, {}, step, 0, step, torch.get_rng_state(), -math.inf)


def test_the_checkpoint_kept_before_the_latest_is_the_previous_checkpoint(
    tmp_path: Path,
) -> None:
    """What save_checkpoint keeps beside the latest is where the folder says it is."""
    folder = RunFolder(tmp_path)
    save_checkpoint(folder.checkpoint, state_at(3), keep_previous=True)
    assert not folder.previous_checkpoint.exists()  # nothing before the first
    save_checkpoint(folder.checkpoint, state_at(6), keep_previous=True)
    assert load_checkpoint(folder.checkpoint).step == 6
    assert load_checkpoint(folder.previous_checkpoint).step == 3
    written = {p.name for p in tmp_path.iterdir()}  # no temporary file left behind
    assert written == {folder.checkpoint.name, folder.previous_checkpoint.name}


def test_stale_temps_are_the_killed_writes_of_its_files(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    assert folder.stale_temps() == []
    stale = [
        tmp_path / ".checkpoint.pt.0123abcd.tmp.pt",
        tmp_path / ".checkpoint.prev.pt.deadbeef.tmp.pt",
        tmp_path / ".config.toml.00ff00ff.tmp.toml",
        tmp_path / ".weights.lut.12345678.tmp.lut",
        tmp_path / ".best.pt.abcdef01.tmp.pt",
    ]
    others = [
        tmp_path / ".checkpoint.pt.xyz.tmp.pt",  # not a token
        tmp_path / ".notes.txt.0123abcd.tmp.txt",  # not a run folder's file
        tmp_path / "checkpoint.pt",
    ]
    for path in stale + others:
        path.write_bytes(b"x")
    assert folder.stale_temps() == sorted(stale)
    assert RunFolder(tmp_path / "not yet").stale_temps() == []
