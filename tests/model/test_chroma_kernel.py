"""model.chroma_kernel (docs/design.md §18): a second kernel and alpha for the chroma. By
hand on routed networks; a network whose chroma outputs copy the luma's is the shared
model; what vkdt is told, and training from a shared model's .lut. SURE's one pass with
it: tests/model/test_linearised.py."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from kpn.config import Config, InferConfig, load_config
from kpn.errors import KpnError
from kpn.infer.denoiser import Denoiser
from kpn.infer.weights import load_weights
from kpn.io.checkpoint import load_checkpoint
from kpn.model.apply import luma_chroma
from kpn.model.blend import blend_level
from kpn.model.features import STAR15_TAPS
from kpn.model.network import KPN, kpn_forward
from kpn.train.cli import main as train_main
from kpn.train.loop import initialise
from kpn.vkdt.export import export_lut
from kpn.vkdt.target import cannot_run

from conftest import SPEC_STAR15_CENTRE, assert_one_line_error
from model_shared import (
    TIGHT,
    design_lut,
    model_config,
    noise_profiles,
    random_image,
    routed_weights,
)

pytestmark = pytest.mark.usefixtures("one_thread")

CHROMA = 16  # the chroma kernel's first output; its alpha is output 31


def test_luma_chroma_by_hand() -> None:
    """Luma (channel mean) of the first, chroma (less the mean) of the second."""
    luma = torch.tensor([1.0, 2.0, 6.0]).view(1, 3, 1, 1)  # mean 3
    chroma = torch.tensor([0.0, 1.0, 5.0]).view(1, 3, 1, 1)  # mean 2, chroma (-2, -1, 3)
    want = torch.tensor([-2.0, -1.0, 3.0]) + 3  # chroma's chroma, luma's mean
    torch.testing.assert_close(luma_chroma(luma, chroma).flatten(), want)
    # channels in threes: an image and a probe each keep their own mean
    pair = luma_chroma(torch.cat((luma, 10 * luma), 1), torch.cat((chroma, 10 * chroma), 1))
    torch.testing.assert_close(pair.flatten(), torch.cat((want, 10 * want)))


@pytest.mark.parametrize("blend", ["mix", "add", "post_diff"])
def test_blend_with_two_alphas_by_hand(blend: str) -> None:
    """Equal alphas blend as one; luma alpha 1 and chroma alpha 0 take the luma of the
    one-alpha blend at 1 and the chroma of the one at 0."""
    coarse, filtered = random_image(1, 6, 8, seed=1), random_image(1, 6, 8, seed=2)
    alpha = 0.2 + 0.6 * random_image(1, 6, 8, seed=3)[:, :1]
    both = blend_level(coarse, filtered, torch.cat((alpha, alpha), 1), blend)
    torch.testing.assert_close(both, blend_level(coarse, filtered, alpha, blend), **TIGHT)
    ones, zeros = torch.ones_like(alpha), torch.zeros_like(alpha)
    split = blend_level(coarse, filtered, torch.cat((ones, zeros), 1), blend)
    at_one = blend_level(coarse, filtered, ones, blend)
    at_zero = blend_level(coarse, filtered, zeros, blend)
    torch.testing.assert_close(split.mean(1), at_one.mean(1), **TIGHT)
    torch.testing.assert_close(
        split - split.mean(1, keepdim=True), at_zero - at_zero.mean(1, keepdim=True), **TIGHT
    )


def test_routed_kernels_filter_luma_and_chroma_apart() -> None:
    """Luma kernel: the centre; chroma kernel: all weight on tap (1, 0). One level, so
    O_0 = I_0: the input's luma with the chroma read one pixel to the right."""
    config = model_config(
        levels=1, kernel_activation="plain", alpha_activation="const", chroma_kernel=True
    )
    right = STAR15_TAPS.index((1, 0))
    weights = routed_weights(config, outputs={SPEC_STAR15_CENTRE: 1.0, CHROMA + right: 1.0})
    noisy = random_image(1, 5, 9, seed=4)
    out = kpn_forward(noisy, noise_profiles(1), weights, config).output
    luma, chroma = noisy.mean(1, keepdim=True), noisy - noisy.mean(1, keepdim=True)
    torch.testing.assert_close(out.mean(1, keepdim=True), luma, **TIGHT)
    torch.testing.assert_close((out - luma)[..., :-1], chroma[..., 1:], **TIGHT)


@pytest.mark.parametrize("blend", ["mix", "add", "post_diff"])
def test_chroma_outputs_copying_the_luma_give_the_shared_model(blend: str) -> None:
    shared = model_config(blend=blend, features="star15_snr", width=32, n_hidden=2, levels=3)
    chroma = dataclasses.replace(shared, chroma_kernel=True)
    torch.manual_seed(0)
    weights = [w.double() for w in KPN(shared).mlp.weights]
    widened = [*weights[:-1], weights[-1].repeat(2, 1)]
    noisy = random_image(2, 21, 18, seed=5)
    want = kpn_forward(noisy, noise_profiles(2), weights, shared)
    got = kpn_forward(noisy, noise_profiles(2), widened, chroma)
    torch.testing.assert_close(got.output, want.output, rtol=0, atol=1e-13)
    assert got.levels[0].alpha.shape[1] == 2 and got.levels[0].kernel.shape[1] == 32
    # and a chroma row of its own changes the chroma only
    widened[-1] = widened[-1].clone()
    widened[-1][CHROMA:] += 0.3 * torch.randn_like(widened[-1][CHROMA:])
    moved = kpn_forward(noisy, noise_profiles(2), widened, chroma).output
    assert (moved - want.output).abs().max() > 1e-3
    torch.testing.assert_close(moved.mean(1), want.output.mean(1), rtol=0, atol=1e-13)


def test_sure_takes_one_pass_and_vkdt_is_told_why() -> None:
    config = model_config(blend="post_diff", features="star15_snr", chroma_kernel=True)
    torch.manual_seed(0)
    denoiser = Denoiser.build(KPN(config), InferConfig(sure_divergence="one_pass"))
    assert denoiser.sure_divergence == "one_pass"
    reasons = "; ".join(cannot_run(Config(model=config)))
    assert "model.chroma_kernel: vkdt's kpn module predicts one kernel" in reasons


def test_export_refuses_in_one_line(tmp_path: Path) -> None:
    config = load_config("design")
    config = dataclasses.replace(
        config, model=dataclasses.replace(config.model, chroma_kernel=True)
    )
    with pytest.raises(KpnError) as error:
        export_lut(KPN(config.model).mlp, config, tmp_path / "w.lut")
    assert_one_line_error(error, tmp_path / "w.lut", "model.chroma_kernel", "32 outputs", "16")
    assert not list(tmp_path.iterdir())


def test_training_from_a_lut_starts_as_its_network(tmp_path: Path) -> None:
    """train.init of a shared model's .lut: the chroma kernel and alpha start as the luma's."""
    lut = tmp_path / "shared.lut"
    config, shared = design_lut(lut)
    chroma = dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, chroma_kernel=True),
        train=dataclasses.replace(config.train, init=str(lut)),
    )
    torch.manual_seed(1)
    model = KPN(chroma.model)
    initialise(model, chroma)
    noisy = random_image(1, 12, 10, seed=6, dtype=torch.float32)
    profile = noise_profiles(1).float()
    with torch.no_grad():
        torch.testing.assert_close(model(noisy, profile), shared(noisy, profile))


def test_a_run_keeps_its_checkpoint_which_infer_loads(
    tmp_path: Path, tiny_config: Callable[..., Path]
) -> None:
    """No weights.lut (it cannot hold 32 outputs); the run directory loads as its model."""
    run = tmp_path / "run"
    config = tiny_config("model.chroma_kernel=true")
    assert train_main(["--config", str(config), "--out", str(run)]) == 0
    assert not (run / "weights.lut").exists()
    state = load_checkpoint(run / "checkpoint.pt")
    assert state.config.model.chroma_kernel
    last = list(state.model.values())[-1]
    assert last.shape[0] == 32
    loaded = load_weights(run)
    assert loaded.config.model.chroma_kernel
    noisy = random_image(1, 12, 10, seed=6, dtype=torch.float32)
    with torch.no_grad():
        out = loaded.model(noisy, noise_profiles(1).float())
    assert out.shape == noisy.shape and torch.isfinite(out).all()
