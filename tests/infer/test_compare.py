"""compare-precision: fp32 against vkdt's float16 arithmetic, end to end."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from kpn.__main__ import main
from kpn.config import Config, ModelConfig
from kpn.io.checkpoint import TrainingState, save_checkpoint
from kpn.io.pfm import write_pfm
from kpn.model.network import KPN


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    torch.manual_seed(0)
    config = Config(model=ModelConfig(levels=2, n_hidden=2))
    model = KPN(config.model)
    optimizer = torch.optim.Adam(model.parameters())
    weights = tmp_path / "model.pt"
    save_checkpoint(
        weights,
        TrainingState(
            config, model.state_dict(), optimizer.state_dict(), 0, 0, 0, torch.get_rng_state()
        ),
    )
    rng = np.random.default_rng(0)
    clean = np.tile(np.linspace(0.1, 0.9, 24, dtype=np.float32)[None, :, None], (20, 1, 3))
    noisy = (clean + rng.normal(0, 0.02, clean.shape)).astype(np.float32)
    write_pfm(tmp_path / "noisy.pfm", noisy)
    write_pfm(tmp_path / "clean.pfm", clean)
    return weights, tmp_path / "noisy.pfm", tmp_path / "clean.pfm"


def test_reports_both_precisions_against_each_other_and_the_reference(setup, capsys) -> None:
    weights, noisy, clean = setup
    args = [
        "compare-precision",
        str(noisy),
        "--weights",
        str(weights),
        "--noise-a",
        "1000",
        "--noise-b",
        "5",
        "--reference",
        str(clean),
    ]
    assert main(args) == 0
    line = capsys.readouterr().out.strip()
    numbers = [float(x) for x in re.findall(r"(-?\d+\.\d+) dB", line)]
    assert len(numbers) == 3, line
    f16_vs_fp32, fp32_ref, f16_ref = numbers
    # float16 keeps about 3 decimal digits: the outputs agree far better than either
    # agrees with the clean image, but not exactly
    assert 40 < f16_vs_fp32 < 150
    assert abs(fp32_ref - f16_ref) < 1.0
    assert "a = 1000, b = 5" in line


def test_refuses_missing_profile_and_mismatched_references(setup, capsys) -> None:
    weights, noisy, clean = setup
    assert main(["compare-precision", str(noisy), "--weights", str(weights)]) == 2
    assert "noise profile" in capsys.readouterr().err
    args = [
        "compare-precision",
        str(noisy),
        str(noisy),
        "--weights",
        str(weights),
        "--noise-a",
        "1",
        "--noise-b",
        "1",
        "--reference",
        str(clean),
    ]
    assert main(args) == 2
    assert "--reference" in capsys.readouterr().err
    assert (
        main(
            [
                "compare-precision",
                str(noisy),
                "--weights",
                str(weights),
                "--noise-a",
                "-1",
                "--noise-b",
                "1",
            ]
        )
        == 2
    )
    assert ">= 0" in capsys.readouterr().err
