"""Checkpoints: load errors in words, code refused by name, the previous checkpoint kept
(only when it reads back) and used, best PSNR."""

from __future__ import annotations

import math
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from kpn.config import Config
from kpn.errors import KpnError
from kpn.io.checkpoint import (
    TrainingState,
    held_code,
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
    assert "code" not in message  # damage is not mistaken for a refusal
    assert capsys.readouterr().err == ""  # torch's warnings stay out of the one line


class RunsCommand:
    """Unpickles as a call of os.system: what a malicious checkpoint holds."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Callable[[str], int], tuple[str]]:
        return (os.system, (self.command,))


class Evaluates:
    """Unpickles as a call of the builtin eval."""

    def __reduce__(self) -> tuple[Callable[[str], object], tuple[str]]:
        return (eval, ("1 + 1",))


@pytest.mark.parametrize(
    ("held", "named"),
    [
        (print, "print"),
        (os.getcwd, "os.getcwd"),
        (Evaluates(), "eval"),
        (RunsCommand("touch {marker}"), "os.system"),
    ],
)
def test_a_checkpoint_holding_code_is_refused_naming_the_code(
    tmp_path: Path, held: object, named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "marker"
    if isinstance(held, RunsCommand):
        held = RunsCommand(held.command.format(marker=marker))
    path = tmp_path / "code.pt"
    torch.save({"format": 1, "hook": held}, path)
    with pytest.raises(KpnError) as caught:
        load_checkpoint(path)
    message = assert_one_line_error(caught, starts=f"{path}: refused: it holds code ({named}),")
    assert "kpn never loads" in message
    assert_plain_words(message)
    assert not marker.exists()  # nothing ran
    assert capsys.readouterr().err == ""


def test_a_refusal_without_a_named_global_still_says_code() -> None:
    error = pickle.UnpicklingError("Weights only load failed: a global that is not allowed")
    assert held_code(error) == "an object torch's safe loader refuses"
    assert held_code(pickle.UnpicklingError("Unsupported operand 149")) is None
    assert held_code(EOFError()) is None
    unsupported = "WeightsUnpickler error: Unsupported global: GLOBAL __builtin__.eval was not"
    assert held_code(pickle.UnpicklingError(unsupported)) == "eval"
    blocked = "Trying to load unsupported GLOBAL nt.system whose module nt is blocked."
    assert held_code(pickle.UnpicklingError(blocked)) == "os.system"
    custom = "Unsupported global: GLOBAL __main__.Hook was not an allowed global by default."
    assert held_code(pickle.UnpicklingError(custom)) == "__main__.Hook"


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


def test_a_damaged_latest_does_not_replace_the_previous_checkpoint(tmp_path: Path) -> None:
    """The damaged latest a resume fell back from stays out of checkpoint.prev.pt: a
    second failure still finds a good checkpoint."""
    latest = tmp_path / "checkpoint.pt"
    save_checkpoint(latest, state_at(3), keep_previous=True)
    save_checkpoint(latest, state_at(6), keep_previous=True)
    latest.write_bytes(latest.read_bytes()[:1000])  # truncate -s 1000

    save_checkpoint(latest, state_at(4), keep_previous=True)  # the resumed run's next save
    assert load_checkpoint(previous_path(latest)).step == 3
    assert load_checkpoint(latest).step == 4
    latest.write_bytes(latest.read_bytes()[:1000])  # the second failure
    state, note = load_latest_checkpoint(latest)
    assert state.step == 3 and note is not None

    save_checkpoint(latest, state_at(5), keep_previous=True)  # a good latest is kept again
    save_checkpoint(latest, state_at(7), keep_previous=True)
    assert load_checkpoint(previous_path(latest)).step == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.prev.pt", "checkpoint.pt"]


def test_without_keep_previous_nothing_else_is_written(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "model.pt", state_at(1))
    save_checkpoint(tmp_path / "model.pt", state_at(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
