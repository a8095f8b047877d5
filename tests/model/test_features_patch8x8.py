"""Tests for kpn.model.features: vkdt HEAD's patch8x8 input, the 8x8 patch of absolute
luminances around each pixel (docs/design.md §2 and §10), its band variant, and what it
reads past the image's last pixel under the block transpose. Luminance, the noise sigma,
star15 and star15_snr are in test_features.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor
from torch.testing import assert_close

from kpn.model.features import (
    PATCH8X8_PADDING,
    PATCH8X8_TAPS,
    patch8x8_features_padded,
    patch8x8_features_past_end,
)
from kpn.model.reference import patch8x8_features
from kpn.model.sampling import pad_symmetric

from model_shared import Y_B, Y_G, Y_R, lum_np, mirror, pixel


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(15)


# ---------------------------------------------------------------- patch8x8_features


def test_patch8x8_taps():
    # channel c reads (c//8 - 4, c%8 - 4): dx from c//8, dy from c%8
    assert PATCH8X8_TAPS[0] == (-4, -4)
    assert PATCH8X8_TAPS[1] == (-4, -3)
    assert PATCH8X8_TAPS[8] == (-3, -4)
    assert PATCH8X8_TAPS[36] == (0, 0)
    assert PATCH8X8_TAPS[63] == (3, 3)


@pytest.fixture
def image_4x5(generator) -> Tensor:
    """[1,3,4,5] (H=4, W=5), distinct values of both signs: not symmetric in anything."""
    return torch.randn(1, 3, 4, 5, generator=generator, dtype=torch.float64)


def abs_lum_at(x: Tensor, px: int, py: int) -> float:
    r, g, b = pixel(x, px, py).abs().tolist()
    return Y_R * r + Y_G * g + Y_B * b


def test_patch8x8_orientation_hand_listed(image_4x5):
    feats = patch8x8_features(image_4x5)
    assert feats.shape == (1, 64, 4, 5)
    got = feats[0, :, 1, 2]  # centre (x=2, y=1) on W=5, H=4
    hand = {
        36: (2, 1),  # tap (0, 0)
        37: (2, 2),  # c%8 = 5 -> dy = +1: one row down
        44: (3, 1),  # c//8 = 5 -> dx = +1: one column right
        45: (3, 2),  # (+1, +1)
        35: (2, 0),  # (0, -1)
        28: (1, 1),  # (-1, 0)
        0: (1, 2),  # (-4, -4): x -2 -> 1, y -3 -> 2
        7: (1, 3),  # (-4, +3): x -2 -> 1, y 4 -> 3
        56: (4, 2),  # (+3, -4): x 5 -> 4, y -3 -> 2
        63: (4, 3),  # (+3, +3): x 5 -> 4, y 4 -> 3
        39: (2, 3),  # (0, +3): y 4 -> 3
        60: (4, 1),  # (+3, 0): x 5 -> 4
    }
    for channel, (px, py) in hand.items():
        assert_close(got[channel].item(), abs_lum_at(image_4x5, px, py), msg=f"channel {channel}")


@pytest.mark.parametrize("size", [(4, 5), (1, 1), (3, 9), (8, 2)])
def test_patch8x8_matches_reference_everywhere(size, generator):
    height, width = size
    x = torch.randn(2, 3, height, width, generator=generator, dtype=torch.float64)
    feats = patch8x8_features(x).numpy()
    lum = lum_np(np.abs(x.permute(0, 2, 3, 1).numpy()))  # [B,H,W]
    for c in range(64):
        dx, dy = c // 8 - 4, c % 8 - 4
        for y in range(height):
            for px in range(width):
                tap = lum[:, mirror(y + dy, height), mirror(px + dx, width)]
                np.testing.assert_allclose(feats[:, c, y, px], tap, rtol=1e-12)


def test_patch8x8_takes_absolute_values(image_4x5):
    assert_close(patch8x8_features(image_4x5), patch8x8_features(image_4x5.abs()))
    assert (patch8x8_features(-image_4x5.abs()) >= 0).all()


@pytest.mark.parametrize("batch", [1, 2, 5])
def test_patch8x8_shapes_and_independence(batch, generator):
    x = torch.randn(batch, 3, 5, 3, generator=generator)
    feats = patch8x8_features(x)
    assert feats.shape == (batch, 64, 5, 3)
    assert feats.dtype == torch.float32
    for b in range(batch):
        assert_close(feats[b : b + 1], patch8x8_features(x[b : b + 1]))


def test_patch8x8_noncontiguous_and_channels_last(generator):
    base = torch.randn(2, 3, 6, 5, generator=generator, dtype=torch.float64)
    transposed = base.transpose(-1, -2)
    assert_close(
        patch8x8_features(transposed), patch8x8_features(transposed.contiguous()), rtol=0, atol=0
    )
    cl = base.to(memory_format=torch.channels_last)
    assert_close(patch8x8_features(cl), patch8x8_features(base))


def test_patch8x8_gradcheck(generator):
    x = (0.1 + torch.rand(1, 3, 2, 3, generator=generator, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(patch8x8_features, (x,))


# ---------------------------------------------------------------- patch8x8_features_past_end


def test_patch8x8_past_end_hand_listed(generator):
    x = torch.randn(1, 3, 2, 3, generator=generator, dtype=torch.float64)  # H=2, W=3
    out = patch8x8_features_past_end(x, 4)
    assert out.shape == (1, 64, 4)
    # pixel p = H*W + j = 6, 7, 8, 9 sits at (p % 3, p // 3) = (0,2), (1,2), (2,2), (0,3)
    # j=0 at (0, 2): tap (0,0) [c=36] reads row 2 -> 1: (0, 1)
    assert_close(out[0, 36, 0].item(), abs_lum_at(x, 0, 1))
    # j=0, tap (0,+1) [c=37]: row 3 -> 0: (0, 0)
    assert_close(out[0, 37, 0].item(), abs_lum_at(x, 0, 0))
    # j=0, tap (+1, 0) [c=44]: (1, 1)
    assert_close(out[0, 44, 0].item(), abs_lum_at(x, 1, 1))
    # j=2 at (2, 2), tap (+1, -1) [c=43]: x 3 -> 2, y 1: (2, 1)
    assert_close(out[0, 43, 2].item(), abs_lum_at(x, 2, 1))
    # j=3 at (0, 3): tap (0,0) reads row 3 -> 0: (0, 0); tap (-1,-4) [c=24]: x -1 -> 0,
    # y -1 -> 0: (0, 0); tap (2, 3) [c=55]: x 2, y 6 -> period 4: 6 -> 1: (2, 1)
    assert_close(out[0, 36, 3].item(), abs_lum_at(x, 0, 0))
    assert_close(out[0, 24, 3].item(), abs_lum_at(x, 0, 0))
    assert_close(out[0, 55, 3].item(), abs_lum_at(x, 2, 1))


@pytest.mark.parametrize(("size", "count"), [((2, 3), 4), ((3, 5), 17), ((4, 4), 16), ((1, 7), 30)])
def test_patch8x8_past_end_matches_mirrored_rows(size, count, generator):
    height, width = size
    x = torch.randn(2, 3, height, width, generator=generator, dtype=torch.float64)
    out = patch8x8_features_past_end(x, count).numpy()
    assert out.shape == (2, 64, count)
    lum = lum_np(np.abs(x.permute(0, 2, 3, 1).numpy()))
    pad = 8 + count // width + 1
    padded = np.pad(lum, ((0, 0), (pad, pad), (pad, pad)), mode="symmetric")
    for j in range(count):
        p = height * width + j
        px, py = p % width, p // width
        for c in range(64):
            dx, dy = c // 8 - 4, c % 8 - 4
            np.testing.assert_allclose(out[:, c, j], padded[:, pad + py + dy, pad + px + dx])


def test_patch8x8_past_end_is_not_zero_nor_the_last_row(generator):
    # star15 has a bounds check (zeros past the end), patch8x8 does not (design §10)
    x = 1 + torch.rand(1, 3, 3, 4, generator=generator, dtype=torch.float64)
    out = patch8x8_features_past_end(x, 4)  # exactly the row y = H
    assert (out > 0).all()
    # row H mirrors to row H-1, so its tap (0, 0) equals the last row's tap (0, 0), but its
    # tap (0, -1) reads row H-1 too, where the last row's reads row H-2
    last_row = patch8x8_features(x)[0, :, 2, :]
    assert_close(out[0, 36], last_row[36])
    assert_close(out[0, 35], last_row[36])
    assert not torch.allclose(out[0, 35], last_row[35])


def test_patch8x8_past_end_zero_count(generator):
    x = torch.rand(2, 3, 3, 4, generator=generator)
    assert patch8x8_features_past_end(x, 0).shape == (2, 64, 0)


# ---------------------------------------------------------------- padded variant (bands)


@pytest.mark.parametrize(("top", "bottom"), [(0, 2), (1, 6), (5, 9), (0, 9)])
def test_patch8x8_padded_band_equals_rows_of_full(top, bottom, generator):
    x = torch.randn(2, 3, 9, 4, generator=generator, dtype=torch.float64)
    full = patch8x8_features(x)
    padded = pad_symmetric(x, *PATCH8X8_PADDING)
    assert PATCH8X8_PADDING == (4, 3, 4, 3)  # left, right, top, bottom: dx, dy in -4..3
    out = patch8x8_features_padded(padded[..., top : bottom + 7, :])
    assert out.shape == (2, 64, bottom - top, 4)
    assert_close(out, full[..., top:bottom, :], rtol=0, atol=0)
