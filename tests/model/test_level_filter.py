"""Tests for kpn.model.level_filter: a level in bands, the band implementation chosen once
per forward pass from the model and the pass's mode (docs/design.md §2-§4, §12).

The implementations' numbers are compared in test_band.py (fused band against autograd),
test_native.py (C loops against eager torch) and test_network.py (the whole network);
here: which one a pass takes, that it is chosen once however many levels and bands the
pass has, and the band inputs under vkdt's block transpose.
"""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
from torch import Tensor
from torch.testing import assert_close

import kpn.model.level_filter as level_filter
import kpn.model.network as network
import kpn.model.tiling as tiling
from kpn.config import ModelConfig
from kpn.model import native
from kpn.model.features import PATCH8X8_PADDING, STAR15_PADDING
from kpn.model.level_filter import BLOCK, PassMode, band_features, band_filter_for
from kpn.model.sampling import pad_symmetric

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = {"levels": 3, "width": 32, "n_hidden": 2}
NOISE = torch.tensor([[1e5, 100.0], [2e4, 20.0]])


def case(**changes: object) -> tuple[ModelConfig, list[Tensor], Tensor]:
    config = dataclasses.replace(ModelConfig(), **{**SMALL, **changes})
    torch.manual_seed(0)
    weights = network.KPN(config).mlp.weights
    noisy = torch.rand(2, 3, 21, 26, generator=torch.Generator().manual_seed(1))
    return config, weights, noisy


def mode(**flags: bool) -> PassMode:
    values = {"weight_gradients": False, "input_gradients": False, "keep_kernels": False}
    return PassMode(**{**values, "float32_cpu": True, **flags})


@pytest.fixture
def choices(monkeypatch: pytest.MonkeyPatch) -> list[PassMode]:
    """The modes that band_filter_for is asked about, in order."""
    asked: list[PassMode] = []

    def counted(config: ModelConfig, pass_mode: PassMode) -> level_filter.BandFilter:
        asked.append(pass_mode)
        return band_filter_for(config, pass_mode)

    monkeypatch.setattr(network, "band_filter_for", counted)
    return asked


def test_chosen_once_per_pass(choices: list[PassMode], monkeypatch: pytest.MonkeyPatch) -> None:
    """Three levels of several bands each (4 rows a band), forward and tiled: one choice."""
    monkeypatch.setattr(level_filter, "BAND_PIXELS", 8 * 26)
    config, weights, noisy = case()
    with torch.no_grad():
        expected = network.kpn_forward(noisy, NOISE, weights, config).output
        assert choices == [mode(keep_kernels=True)]
        tiled = tiling.tiled_forward(noisy, NOISE, weights, config, tile=8)
    assert choices[1:] == [mode()]
    assert_close(tiled, expected, rtol=1e-5, atol=1e-6)


def test_mode_of_a_pass() -> None:
    _, weights, noisy = case()
    assert PassMode.of(noisy, NOISE, weights, False) == mode(weight_gradients=True)
    with torch.no_grad():
        assert PassMode.of(noisy, NOISE, weights, True) == mode(keep_kernels=True)
        doubles = [weight.double() for weight in weights]
        assert not PassMode.of(noisy.double(), NOISE, doubles, False).float32_cpu
    image = noisy.clone().requires_grad_()
    both = PassMode.of(image, NOISE, weights, False)
    assert both == mode(weight_gradients=True, input_gradients=True)
    detached = [weight.detach() for weight in weights]
    profile = NOISE.clone().requires_grad_()
    assert PassMode.of(noisy, profile, detached, False) == mode(input_gradients=True)


def filter_of(band: level_filter.BandFilter) -> object:
    """The band function a choice runs, and for the network's band its kernel filter."""
    assert isinstance(band, functools.partial)
    return band.func if band.func is level_filter._fused_band else band.args[2]


@pytest.mark.parametrize(
    ("changes", "flags", "expected"),
    [
        ({}, {"weight_gradients": True}, "_fused_band"),
        ({"precision": "bf16"}, {"weight_gradients": True}, "_fused_band"),
        ({}, {}, "_filter_softmax_native"),
        ({}, {"keep_kernels": True}, "_filter_softmax_native"),
        ({}, {"weight_gradients": True, "keep_kernels": True}, "_filter_eager"),
        ({}, {"weight_gradients": True, "input_gradients": True}, "_filter_eager"),
        ({}, {"input_gradients": True}, "_filter_eager"),
        ({}, {"float32_cpu": False}, "_filter_eager"),
        ({"kernel_activation": "plain"}, {}, "_filter_eager"),
        ({"kernel_activation": "plain"}, {"weight_gradients": True}, "_filter_eager"),
        ({"precision": "vkdt-f16"}, {}, "_filter_vkdt_order"),
        ({"precision": "vkdt-f16"}, {"weight_gradients": True}, "_filter_vkdt_order"),
    ],
)
def test_choice_by_model_and_mode(changes: dict, flags: dict, expected: str) -> None:
    if expected == "_filter_softmax_native" and native.library() is None:
        expected = "_filter_eager"  # no C compiler: the eager definition
    config = dataclasses.replace(ModelConfig(), **changes)
    chosen = filter_of(band_filter_for(config, mode(**flags)))
    name = getattr(chosen, "func", chosen).__name__
    assert name == expected


def test_native_switched_off_takes_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "library", lambda: None)
    chosen = filter_of(band_filter_for(ModelConfig(), mode()))
    assert chosen.func is level_filter._filter_eager


@pytest.mark.parametrize(("features", "width"), [("star15", 32), ("patch8x8", 64)])
def test_band_features_pad_to_whole_blocks(features: str, width: int) -> None:
    """Under the block transpose the last band is padded to a whole block of 16: star15
    with zeros, patch8x8 with what vkdt reads past the last row; without it, no padding."""
    config = dataclasses.replace(ModelConfig(), features=features, width=width)
    x = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(3))
    lum = x.mean(1)
    padded = pad_symmetric(x, *(PATCH8X8_PADDING if features == "patch8x8" else STAR15_PADDING))
    plain = band_features(padded, x, NOISE, 0, lum, config)
    assert plain.shape == (2, config.in_features, 35)
    transposed = band_features(
        padded, x, NOISE, 0, lum, dataclasses.replace(config, block_transpose=True)
    )
    assert transposed.shape == (2, config.in_features, 3 * BLOCK)
    assert torch.equal(transposed[..., :35], plain)
    past_end = transposed[..., 35:]
    if features == "star15":
        assert (past_end == 0).all()
    else:  # rows 5 and 6 mirror rows 4 and 3: the patch of pixel (0, 5) is that of (0, 4)
        assert (past_end != 0).any()
        centre = 4 * 8 + 4  # channel of tap (0, 0)
        assert torch.equal(past_end[:, centre, :7], plain[:, centre, 28:35])
