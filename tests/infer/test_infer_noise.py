"""infer's noise parameters: anything the float32 model cannot hold is a usage error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kpn.config import Config
from kpn.infer.cli import main
from kpn.io.checkpoint import TrainingState, save_checkpoint
from kpn.io.pfm import write_pfm
from kpn.model.network import KPN
from kpn.train.optim import make_optimizer

from conftest import assert_error_line


@pytest.fixture
def files(tmp_path: Path) -> Path:
    config = Config()
    torch.manual_seed(0)
    model = KPN(config.model)
    optimizer = make_optimizer(model.parameters(), config.train)
    state = TrainingState(
        config, model.state_dict(), optimizer.state_dict(), 1, 0, 0, torch.get_rng_state()
    )
    save_checkpoint(tmp_path / "model.pt", state)
    write_pfm(tmp_path / "in.pfm", np.full((8, 8, 3), 0.5, dtype=np.float32))
    return tmp_path


@pytest.mark.parametrize(
    ("a", "b", "named"),
    [
        ("1e39", "4", "--noise-a"),  # finite in Python, inf in float32
        ("20000", "1e39", "--noise-b"),
        ("nan", "4", "--noise-a"),
        ("inf", "4", "--noise-a"),
        ("-1", "4", "--noise-a"),
    ],
)
def test_noise_outside_float32_is_a_usage_error(
    files: Path, a: str, b: str, named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = files / "out.pfm"
    argv = [str(files / "in.pfm"), "--weights", str(files / "model.pt"), "-o", str(out)]
    assert main([*argv, "--noise-a", a, "--noise-b", b]) == 2
    assert assert_error_line(capsys.readouterr().err).startswith(f"error: {named} ")
    assert not out.exists()


def test_largest_float32_noise_is_accepted(files: Path) -> None:
    out = files / "out.pfm"
    argv = [str(files / "in.pfm"), "--weights", str(files / "model.pt"), "-o", str(out)]
    assert main([*argv, "--noise-a", "1e30", "--noise-b", "0"]) == 0
    assert out.exists()
