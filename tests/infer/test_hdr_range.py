"""HDR values: the float16 clamp of vkdt's apply belongs to the vkdt-f16 precision only."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from kpn.config import load_config
from kpn.infer.cli import main as infer_main
from kpn.io.checkpoint import TrainingState, save_checkpoint
from kpn.io.pfm import read_pfm, write_pfm
from kpn.model.apply import F16_LIMIT, apply_limit
from kpn.model.network import KPN
from kpn.model.tiling import tiled_forward
from kpn.train.optim import make_optimizer

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DESIGN = load_config(CONFIGS / "design.toml")
NOISE = torch.tensor([[2e5, 40.0]])
HDR_SCALE = 1e6  # far above float16's 65504, well inside float32


pytestmark = pytest.mark.usefixtures("one_thread")  # small images


def hdr_image(height: int, width: int, seed: int = 1) -> torch.Tensor:
    """A smooth image with noise, scaled to about 1e6. ``-> [1,3,H,W]``"""
    generator = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, height).view(height, 1)
    x = torch.linspace(0, 1, width).view(1, width)
    clean = torch.stack((0.2 + 0.6 * x * y, 0.5 * (x + y) + 0.1, 0.8 - 0.5 * x + 0 * y))
    noisy = clean + 0.05 * torch.randn(1, 3, height, width, generator=generator)
    return HDR_SCALE * noisy


def model_of(precision: str, seed: int = 0) -> KPN:
    torch.manual_seed(seed)
    return KPN(dataclasses.replace(DESIGN.model, precision=precision))


@pytest.mark.parametrize(
    "preset", ["vkdt-2024-02.toml", "vkdt-head.toml", "vkdt-head-w32.toml", "design.toml"]
)
def test_only_vkdt_f16_clamps(preset: str) -> None:
    precision = load_config(CONFIGS / preset).model.precision
    assert apply_limit(precision) == (F16_LIMIT if precision == "vkdt-f16" else None)
    assert apply_limit("vkdt-f16") == F16_LIMIT


def test_fp32_model_keeps_hdr_values() -> None:
    model = model_of("fp32")
    noisy = hdr_image(24, 20)
    with torch.no_grad():
        result = model.inspect(noisy, NOISE)
    assert result.levels[0].filtered.abs().max() > 10 * F16_LIMIT
    assert result.output.abs().max() > 10 * F16_LIMIT
    # a denoiser moves a smooth image by a fraction of its noise, not by a factor of 15
    assert (result.output - noisy).abs().median() < 0.1 * HDR_SCALE


def test_fp32_tiled_equals_untiled_on_hdr_values() -> None:
    model = model_of("fp32")
    noisy = hdr_image(40, 36)
    with torch.no_grad():
        untiled = model(noisy, NOISE)
        tiled = tiled_forward(noisy, NOISE, model.mlp.weights, model.config, tile=8)
    assert untiled.abs().max() > 10 * F16_LIMIT
    torch.testing.assert_close(tiled, untiled, rtol=1e-5, atol=0.0)


def test_vkdt_f16_still_clamps() -> None:
    """vkdt's apply.comp clamps the filtered level to +-65000 (then stored as float16)."""
    model = model_of("vkdt-f16")
    noisy = torch.full((1, 3, 8, 8), 65504.0)  # float16's largest finite value
    with torch.no_grad():
        result = model.inspect(noisy, NOISE)
        tiled = tiled_forward(noisy, NOISE, model.mlp.weights, model.config, tile=4)
    filtered = result.levels[0].filtered
    assert filtered.max() <= F16_LIMIT and filtered.min() > 60000
    torch.testing.assert_close(tiled, result.output, rtol=0.0, atol=0.0)


def test_infer_writes_hdr_pfm_unclamped(tmp_path: Path) -> None:
    model = model_of("fp32", seed=3)
    config = dataclasses.replace(DESIGN, model=model.config)
    optimizer = make_optimizer(model.parameters(), config.train)
    state = TrainingState(
        config, model.state_dict(), optimizer.state_dict(), 1, 0, 0, torch.get_rng_state()
    )
    save_checkpoint(tmp_path / "model.pt", state)
    image = hdr_image(20, 24)[0].permute(1, 2, 0).numpy().astype(np.float32)
    write_pfm(tmp_path / "in.pfm", image)
    argv = [str(tmp_path / "in.pfm"), "--weights", str(tmp_path / "model.pt")]
    argv += ["-o", str(tmp_path / "out.pfm"), "--noise-a", "2e5", "--noise-b", "40"]
    assert infer_main(argv) == 0
    out = read_pfm(tmp_path / "out.pfm")
    assert np.abs(out).max() > 10 * F16_LIMIT
