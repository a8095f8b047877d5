"""Tests for kpn.model.level_filter: a level in bands, the band implementation chosen once
per forward pass from the model and the pass's mode (docs/design.md §2-§4, §12).

The implementations' numbers are compared in test_band.py (fused band against autograd),
test_native.py (C loops against eager torch) and test_network.py (the whole network);
here: which one a pass takes, that it is chosen once however many levels and bands the
pass has, the band inputs under vkdt's block transpose, and the block transpose through
the whole network (design §10) against its formula, one pixel and output at a time.
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
from kpn.model.network import kpn_forward
from kpn.model.sampling import pad_symmetric

from conftest import SPEC_STAR15_TAPS
from model_shared import F64, TIGHT, model_config, noise_profiles, random_image, vkdt_init_weights

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


# ------------------------------------------------------------------- block transpose


def transposed_by_formula(padded: Tensor, pixels: int) -> Tensor:
    """Design §10, one pixel and output at a time: apply's weight for pixel p, output k is
    output p % 16 of pixel 16*(p//16) + k. ``padded``: [B,16,P'] raw network outputs with
    the pixels past the end, P' a multiple of 16. -> [B,16,pixels]
    """
    result = torch.empty(padded.shape[0], 16, pixels, dtype=padded.dtype)
    for p in range(pixels):
        for k in range(16):
            result[:, k, p] = padded[:, p % 16, 16 * (p // 16) + k]
    return result


def transposed_by_gather(padded: Tensor, pixels: int) -> Tensor:
    """The same formula with index tensors, for images too big for a python loop."""
    p = torch.arange(pixels).view(-1, 1)
    k = torch.arange(16).view(1, -1)
    return padded[:, p % 16, 16 * (p // 16) + k].transpose(1, 2)  # [B,P,16] -> [B,16,P]


def test_gather_formula_matches_loop() -> None:
    padded = torch.randn(2, 16, 48, dtype=F64)
    torch.testing.assert_close(
        transposed_by_gather(padded, 35), transposed_by_formula(padded, 35), rtol=0.0, atol=0.0
    )


def mirrored_extension(image: Tensor, extra_rows: int) -> Tensor:
    """``image`` with rows H, H+1, ... appended as the mirrored sampler reads them:
    row H + j is row H - 1 - j (design §0)."""
    height = image.shape[-2]
    rows = list(range(height)) + [height - 1 - j for j in range(extra_rows)]
    return image[:, :, rows]


class TestBlockTranspose:
    """Design §10: the kernel of pixel p, output k is output p % 16 of pixel 16*(p//16)+k,
    pixels in scanline order padded to a multiple of 16."""

    def test_star15_small_image_explicit_loop(self) -> None:
        """5x7 = 35 pixels: blocks 0..15, 16..31 and a partial block 32..34."""
        config = model_config(width=32, n_hidden=2, levels=1)
        weights = vkdt_init_weights(config, 2)
        noisy = random_image(2, 5, 7)
        raw = kpn_forward(noisy, noise_profiles(2), weights, config).levels[0].kernel
        transposed_config = dataclasses.replace(config, block_transpose=True)
        out = kpn_forward(noisy, noise_profiles(2), weights, transposed_config)
        kernel = out.levels[0].kernel.reshape(2, 16, 35)
        # star15 padding pixels have all-zero input, so (no biases) all-zero output
        padded = torch.cat((raw.reshape(2, 16, 35), torch.zeros(2, 16, 13, dtype=F64)), dim=2)
        torch.testing.assert_close(kernel, transposed_by_formula(padded, 35), **TIGHT)
        # the last partial block: pixel p in 32..34, output k reads pixel 32 + k, which is
        # past the end (>= 35) for k >= 3: zero there, real outputs for k < 3
        assert (kernel[:, 3:, 32:] == 0).all()
        assert (kernel[:, :3, 32:] != 0).all()
        # not the identity: the full blocks are really transposed
        assert (kernel[:, :, :32] - raw.reshape(2, 16, 35)[:, :, :32]).abs().max() > 1e-3

    @pytest.mark.parametrize("features", ["star15", "patch8x8"])
    @pytest.mark.parametrize(
        ("batch", "height", "width"),
        [(2, 5, 7), (1, 130, 131), (3, 130, 131)],
        ids=["5x7", "131x130-b1", "131x130-b3"],
    )
    def test_matches_formula(self, features: str, batch: int, height: int, width: int) -> None:
        """Small and large levels (the large ones are processed in several bands, whose
        boundaries move with the batch size) against the gathered formula. The padding
        pixels: star15 all-zero outputs; patch8x8 the outputs of the rows past the end,
        read through the mirrored sampler, i.e. of a mirrored extension of the image
        (its patches reach 3 rows below their pixel, never the extension's own edge).
        """
        pixels = height * width
        padding = -pixels % 16
        wide = {"width": 64, "n_hidden": 1} if features == "patch8x8" else {"n_hidden": 2}
        config = model_config(**{"width": 32, "levels": 1, "features": features, **wide})
        weights = vkdt_init_weights(config, 4)
        noisy = random_image(batch, height, width)
        noise_ab = noise_profiles(batch)
        raw = kpn_forward(noisy, noise_ab, weights, config).levels[0].kernel
        raw = raw.reshape(batch, 16, pixels)
        if features == "star15":
            past_end = torch.zeros(batch, 16, padding, dtype=F64)
        else:
            extended = mirrored_extension(noisy, -(-padding // width) + 4)
            raw_ext = kpn_forward(extended, noise_ab, weights, config).levels[0].kernel
            raw_ext = raw_ext.reshape(batch, 16, -1)
            torch.testing.assert_close(raw_ext[..., :pixels], raw, **TIGHT)
            past_end = raw_ext[..., pixels : pixels + padding]
            assert (past_end != 0).all()
        padded = torch.cat((raw, past_end), dim=2)
        transposed_config = dataclasses.replace(config, block_transpose=True)
        out = kpn_forward(noisy, noise_ab, weights, transposed_config)
        kernel = out.levels[0].kernel.reshape(batch, 16, pixels)
        torch.testing.assert_close(kernel, transposed_by_gather(padded, pixels), **TIGHT)

    def test_patch8x8_padding_reaches_real_pixels(self) -> None:
        """5x7: pixels 35..47 lie in rows 5 and 6; rows 0..9 of the mirrored extension of
        a 5-row image are rows [0,1,2,3,4,4,3,2,1,0]. Pixel p in 32..34, output k >= 3
        reads those padding pixels' outputs: not zero as with star15."""
        config = model_config(features="patch8x8", width=64, n_hidden=1, levels=1)
        weights = vkdt_init_weights(config, 4)
        noisy = random_image(2, 5, 7)
        extended = noisy[:, :, [0, 1, 2, 3, 4, 4, 3, 2, 1, 0]]
        raw_ext = kpn_forward(extended, noise_profiles(2), weights, config).levels[0].kernel
        padded = raw_ext.reshape(2, 16, 70)[..., :48]
        transposed_config = dataclasses.replace(config, block_transpose=True)
        out = kpn_forward(noisy, noise_profiles(2), weights, transposed_config)
        kernel = out.levels[0].kernel.reshape(2, 16, 35)
        torch.testing.assert_close(kernel, transposed_by_formula(padded, 35), **TIGHT)
        assert (kernel[:, 3:, 32:] != 0).all()

    def test_apply_uses_the_transposed_kernel(self) -> None:
        """I_0 and a_0 come from the kernel as apply reads it, not the untransposed one."""
        config = model_config(
            width=32, n_hidden=2, levels=2, block_transpose=True, alpha_activation="plain"
        )
        weights = vkdt_init_weights(config, 6)
        noisy = random_image(1, 5, 7)
        out = kpn_forward(noisy, noise_profiles(1), weights, config)
        torch.testing.assert_close(out.levels[0].alpha, out.levels[0].kernel[:, 15:], **TIGHT)
        tap_weights = torch.softmax(0.1 * out.levels[0].kernel[:, :15], dim=1)
        torch.testing.assert_close(
            out.levels[0].filtered[:, :, 2, 3],  # interior pixel (3, 2): no mirroring
            torch.einsum(
                "bk,bck->bc",
                tap_weights[:, :, 2, 3],
                torch.stack([noisy[:, :, 2 + dy, 3 + dx] for dx, dy in SPEC_STAR15_TAPS], dim=2),
            ),
            **TIGHT,
        )
        plain = dataclasses.replace(config, block_transpose=False)
        untransposed = kpn_forward(noisy, noise_profiles(1), weights, plain)
        assert (untransposed.levels[0].filtered - out.levels[0].filtered).abs().max() > 1e-4
