"""A training run survives every kill: before its first checkpoint, mid-step Ctrl-C, a
damaged checkpoint; --resume never writes into another run's folder; best.pt."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import kpn.train.loop
from kpn.config import config_to_toml, load_config
from kpn.io.checkpoint import load_checkpoint
from kpn.train.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")
ONE_TILE = ("data.batch=1", "data.validation_count=1", "train.image_every=100")  # a sample a step


def test_run_killed_before_its_first_checkpoint_resumes_from_step_0(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tiny_config: Callable[..., Path],
    same_weights: Callable[[Path, Path], None],
) -> None:
    config = tiny_config(*ONE_TILE, "train.steps=4")
    # what a kill before the first checkpoint leaves: the resolved config (and events)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text(config_to_toml(load_config(config)), encoding="utf-8")
    (run / "events.out.tfevents.1.host.1.0").write_bytes(b"")

    assert main(["--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert "from step 0" in out and "config.toml" in out, out
    assert load_checkpoint(run / "checkpoint.pt").step == 4

    assert main(["--config", str(config), "--out", str(tmp_path / "straight")]) == 0
    same_weights(run / "checkpoint.pt", tmp_path / "straight" / "checkpoint.pt")


def test_resume_refuses_to_write_into_another_folder(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tiny_config: Callable[..., Path],
    error_line: Callable[[], str],
) -> None:
    config = tiny_config(*ONE_TILE, "train.steps=2")
    run = tmp_path / "run"
    assert main(["--config", str(config), "--out", str(run)]) == 0
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.toml").write_text("# someone else's\n", encoding="utf-8")
    capsys.readouterr()

    assert main(["--resume", str(run), "--out", str(other), "--set", "train.steps=3"]) == 2
    assert "exists" in error_line()
    assert (other / "config.toml").read_text(encoding="utf-8") == "# someone else's\n"
    assert sorted(p.name for p in other.iterdir()) == ["config.toml"]

    # the run itself, named by --out too, and a new folder are fine
    assert main(["--resume", str(run), "--out", str(run), "--set", "train.steps=3"]) == 0
    fresh = tmp_path / "continued"
    assert main(["--resume", str(run), "--out", str(fresh), "--set", "train.steps=4"]) == 0
    assert load_checkpoint(fresh / "checkpoint.pt").step == 4


def test_sigint_mid_step_then_resume_equals_the_uninterrupted_run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tiny_config: Callable[..., Path],
    same_weights: Callable[[Path, Path], None],
) -> None:
    """Ctrl-C arriving inside a step: the step finishes, the checkpoint is consistent."""
    config = tiny_config(*ONE_TILE, "train.steps=6")
    real_loss = kpn.train.loop.kpn_loss
    calls = {"training": 0}

    def loss_then_ctrl_c(output, reference, *how):
        value = real_loss(output, reference, *how)
        if output.requires_grad:
            calls["training"] += 1
            if calls["training"] == 3:  # inside step 3, after its batch was drawn
                os.kill(os.getpid(), signal.SIGINT)
        return value

    monkeypatch.setattr(kpn.train.loop, "kpn_loss", loss_then_ctrl_c)
    run = tmp_path / "run"
    assert main(["--config", str(config), "--out", str(run)]) == 130
    assert "SIGINT: stopped at step 3" in capsys.readouterr().out
    state = load_checkpoint(run / "checkpoint.pt")
    assert state.step == 3 and state.samples_seen == 3  # batch 1: one sample a step
    monkeypatch.setattr(kpn.train.loop, "kpn_loss", real_loss)

    assert main(["--resume", str(run)]) == 0
    assert main(["--config", str(config), "--out", str(tmp_path / "straight")]) == 0
    same_weights(run / "checkpoint.pt", tmp_path / "straight" / "checkpoint.pt")


def test_damaged_checkpoint_resumes_from_the_previous_one(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tiny_config: Callable[..., Path],
    same_weights: Callable[[Path, Path], None],
) -> None:
    config = tiny_config(*ONE_TILE, "train.steps=4")
    run = tmp_path / "run"
    assert main(["--config", str(config), "--out", str(run)]) == 0
    # checkpoint_every = 3: step 3, then the last step 4
    assert load_checkpoint(run / "checkpoint.prev.pt").step == 3
    assert load_checkpoint(run / "checkpoint.pt").step == 4
    (run / "checkpoint.pt").write_bytes(b"")  # a damaged latest
    capsys.readouterr()

    assert main(["--resume", str(run), "--set", "train.steps=5"]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if "prev" in line]
    assert len(notes) == 1 and "checkpoint.prev.pt (step 3)" in notes[0], notes
    assert load_checkpoint(run / "checkpoint.pt").step == 5

    steps5 = ["--set", "train.steps=5", "--out", str(tmp_path / "straight")]
    assert main(["--config", str(config), *steps5]) == 0
    same_weights(run / "checkpoint.pt", tmp_path / "straight" / "checkpoint.pt")


def test_two_damaged_checkpoints_in_a_row_still_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_config: Callable[..., Path]
) -> None:
    """The damaged latest a resume fell back from is not kept as checkpoint.prev.pt by
    the resumed run's next save: the second failure still finds step 3."""
    config = tiny_config(*ONE_TILE, "train.steps=4")
    run = tmp_path / "run"
    latest = run / "checkpoint.pt"
    assert main(["--config", str(config), "--out", str(run)]) == 0  # saves steps 3 and 4
    for steps in (5, 6):
        with open(latest, "r+b") as file:  # truncate -s 1000
            file.truncate(1000)
        capsys.readouterr()
        assert main(["--resume", str(run), "--set", f"train.steps={steps}"]) == 0
        notes = [line for line in capsys.readouterr().out.splitlines() if "prev" in line]
        assert len(notes) == 1 and "checkpoint.prev.pt (step 3)" in notes[0], notes
        assert load_checkpoint(latest).step == steps
        assert load_checkpoint(run / "checkpoint.prev.pt").step == 3


def test_best_validation_weights_are_kept(tmp_path: Path, tiny_config: Callable[..., Path]) -> None:
    config = tiny_config(*ONE_TILE, "train.steps=6")
    run = tmp_path / "run"
    assert main(["--config", str(config), "--out", str(run)]) == 0
    events = EventAccumulator(str(run))
    events.Reload()
    trained = [e for e in events.Scalars("metrics/val_psnr") if e.step > 0]
    best = max(trained, key=lambda e: e.value)
    state = load_checkpoint(run / "best.pt")
    assert state.step == best.step
    assert state.best_psnr == pytest.approx(best.value)
    assert load_checkpoint(run / "checkpoint.pt").best_psnr == state.best_psnr
