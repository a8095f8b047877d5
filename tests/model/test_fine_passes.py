"""model.fine_passes (docs/design.md §17): level 0 filtered a second time with its own
kernels, by hand on routed networks, and what it rules out (SURE's one pass, vkdt)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from kpn.config import Config, InferConfig
from kpn.infer.denoiser import Denoiser
from kpn.model.features import STAR15_TAPS
from kpn.model.network import KPN, kpn_forward
from kpn.vkdt.target import cannot_run

from model_shared import TIGHT, model_config, noise_profiles, random_image, routed_weights


def one_level(passes: int):
    """One level, mix: O_0 = I_0; plain kernels and a constant alpha for routed weights."""
    return model_config(
        levels=1, kernel_activation="plain", alpha_activation="const", fine_passes=passes
    )


@pytest.mark.parametrize("passes", [1, 2])
def test_identity_kernels_give_back_the_image(passes: int) -> None:
    config = one_level(passes)
    noisy = random_image(2, 9, 11)
    out = kpn_forward(noisy, noise_profiles(2), routed_weights(config), config).output
    torch.testing.assert_close(out, noisy, **TIGHT)


def test_a_shift_kernel_shifts_once_per_pass() -> None:
    """All weight on tap (1, 0): one pass reads x + 1, two read x + 2 (inside the image,
    where the mirror at the right edge is not reached)."""
    right = STAR15_TAPS.index((1, 0))
    noisy = random_image(1, 6, 12, seed=4)
    outputs = {}
    for passes in (1, 2):
        config = one_level(passes)
        weights = routed_weights(config, outputs={right: 1.0})
        outputs[passes] = kpn_forward(noisy, noise_profiles(1), weights, config).output
    torch.testing.assert_close(outputs[1][..., :-1], noisy[..., 1:], **TIGHT)
    torch.testing.assert_close(outputs[2][..., :-2], noisy[..., 2:], **TIGHT)


def test_only_level_0_is_filtered_twice() -> None:
    """The coarser levels' outputs do not change; level 0's does."""
    config = model_config(levels=3, blend="post_diff", width=32, n_hidden=2)
    torch.manual_seed(0)
    weights = tuple(w.double() for w in KPN(config).mlp.weights)
    noisy = random_image(1, 20, 24, seed=1)
    once = kpn_forward(noisy, noise_profiles(1), weights, config)
    twice = kpn_forward(
        noisy, noise_profiles(1), weights, dataclasses.replace(config, fine_passes=2)
    )
    for level in (1, 2):
        torch.testing.assert_close(twice.levels[level].output, once.levels[level].output)
    assert (twice.output - once.output).abs().max() > 1e-3


def test_sure_takes_two_passes_and_vkdt_is_told_why() -> None:
    config = model_config(blend="post_diff", features="star15_snr", fine_passes=2)
    torch.manual_seed(0)
    denoiser = Denoiser.build(KPN(config), InferConfig(sure_divergence="one_pass"))
    assert denoiser.sure_divergence == "two_pass"
    whole = Config(model=config)
    assert "model.fine_passes = 2: vkdt's kpn module filters each level with its kernels once " in (
        "; ".join(cannot_run(whole)) + " "
    )
    once = dataclasses.replace(whole, model=dataclasses.replace(config, fine_passes=1))
    assert not any("fine_passes" in reason for reason in cannot_run(once))
