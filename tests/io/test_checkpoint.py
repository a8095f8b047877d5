"""Checkpoints: load errors in words, the previous checkpoint kept and used, best PSNR."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest
import torch

from kpn.config import Config
from kpn.errors import KpnError
from kpn.io.checkpoint import (
    TrainingState,
    load_checkpoint,
    load_error_reason,
    load_latest_checkpoint,
    previous_path,
    save_checkpoint,
)
from kpn.model.network import KPN
from kpn.train.optim import make_optimizer

from conftest import assert_one_line_error


def state_at(step: int, best_psnr: float = -math.inf) -> TrainingState:
    config = Config()
    torch.manual_seed(step)
    model = KPN(config.model)
    optimizer = make_optimizer(model.parameters(), config.train)
    return TrainingState(
        config,
        model.state_dict(),
        optimizer.state_dict(),
        step,
        0,
        2 * step,
        torch.get_rng_state(),
        best_psnr,
    )


def assert_plain_words(message: str) -> None:
    assert_one_line_error(message)
    for jargon in ("<class", "Errno", "weights_only", "EOFError", "pickle"):
        assert jargon not in message, message


def damaged_files(folder: Path) -> dict[str, Path]:
    good = folder / "good.pt"
    save_checkpoint(good, state_at(1))
    data = good.read_bytes()
    files = {
        "empty": b"",
        "cut_short": data[: len(data) // 2],
        "random": bytes(range(256)) * 4,
        "text": b"hello\n",
        "foreign": pickle.dumps({"x": 1}, protocol=4),
    }
    paths = {}
    for name, content in files.items():
        paths[name] = folder / f"{name}.pt"
        paths[name].write_bytes(content)
    torch.save({"hook": print}, folder / "code.pt")  # a pickled function: code
    paths["code"] = folder / "code.pt"
    (folder / "folder.pt").mkdir()
    paths["folder"] = folder / "folder.pt"
    return paths


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("empty", "empty or cut short"),
        ("cut_short", "cut short"),
        ("random", "damaged"),
        ("text", "damaged"),
        ("foreign", "damaged"),
        ("code", "Python objects other than tensors"),
        ("folder", "a directory"),
    ],
)
def test_load_errors_name_the_problem_in_words(
    tmp_path: Path, name: str, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = damaged_files(tmp_path)[name]
    with pytest.raises(KpnError) as caught:
        load_checkpoint(path)
    message = assert_one_line_error(caught, words, starts=f"{path}: not a readable checkpoint (")
    assert_plain_words(message)
    assert capsys.readouterr().err == ""  # torch's warnings stay out of the one line


def test_os_errors_are_words_not_numbers() -> None:
    # torch's zip reader raises EINVAL for a file cut short
    assert "cut short" in load_error_reason(OSError(22, "Invalid argument"))
    reason = load_error_reason(OSError(5, "Input/output error"))
    assert reason == "cannot read it: input/output error"
    assert_plain_words(load_error_reason(EOFError()))
    assert_plain_words(load_error_reason(PermissionError(13, "Permission denied")))


def test_best_psnr_round_trips(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "a.pt", state_at(3, best_psnr=31.5))
    assert load_checkpoint(tmp_path / "a.pt").best_psnr == 31.5
    save_checkpoint(tmp_path / "b.pt", state_at(3))
    assert load_checkpoint(tmp_path / "b.pt").best_psnr == -math.inf


def test_previous_checkpoint_is_kept_and_used(tmp_path: Path) -> None:
    latest = tmp_path / "checkpoint.pt"
    assert previous_path(latest) == tmp_path / "checkpoint.prev.pt"
    save_checkpoint(latest, state_at(3), keep_previous=True)
    assert not previous_path(latest).exists()  # nothing before the first
    save_checkpoint(latest, state_at(6), keep_previous=True)
    assert load_checkpoint(previous_path(latest)).step == 3

    state, note = load_latest_checkpoint(latest)
    assert state.step == 6 and note is None

    latest.write_bytes(latest.read_bytes()[:100])  # a damaged latest
    state, note = load_latest_checkpoint(latest)
    assert state.step == 3
    assert note is not None
    assert_one_line_error(note, latest, "checkpoint.prev.pt (step 3)")

    latest.unlink()  # or none at all
    assert load_latest_checkpoint(latest)[0].step == 3

    previous_path(latest).write_bytes(b"")  # both gone: the latest's problem
    with pytest.raises(KpnError, match=r"checkpoint\.pt: checkpoint not found"):
        load_latest_checkpoint(latest)


def test_without_keep_previous_nothing_else_is_written(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "model.pt", state_at(1))
    save_checkpoint(tmp_path / "model.pt", state_at(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
