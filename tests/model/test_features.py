"""Tests for kpn.model.features: the per-pixel network input (docs/design.md §2 and §10):
luminance, saturation, the noise sigma, vkdt's star15 input, its bands, and kpn's
noise-normalised star15_snr. vkdt HEAD's patch8x8 input is in test_features_patch8x8.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor
from torch.testing import assert_close

from kpn.model.features import (
    LUMA_REC2020,
    SIGMA_FLOOR,
    STAR15_CENTRE,
    STAR15_PADDING,
    STAR15_TAPS,
    chroma_features_padded,
    guide_features,
    luminance,
    noise_sigma,
    saturation,
    signed_log1p,
    star15_features_padded,
    star15_snr_features_padded,
)
from kpn.model.reference import star15_features
from kpn.model.sampling import pad_symmetric

from conftest import SPEC_STAR15_CENTRE, SPEC_STAR15_TAPS
from model_shared import Y_B, Y_G, Y_R, lum_np, mirror, pixel


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(15)


@pytest.fixture
def image_5x4(generator) -> Tensor:
    """[1,3,5,4] (H=5, W=4) with distinct random values: every pixel has its own lum/sat."""
    return torch.rand(1, 3, 5, 4, generator=generator, dtype=torch.float64)


def lum_at(x: Tensor, px: int, py: int) -> float:
    r, g, b = pixel(x, px, py).tolist()
    return Y_R * r + Y_G * g + Y_B * b


def sat_at(x: Tensor, px: int, py: int) -> float:
    rgb = pixel(x, px, py).tolist()
    return max(rgb) - min(rgb)


# ---------------------------------------------------------------- luminance, saturation


def test_luminance_weights():
    rgb = torch.eye(3, dtype=torch.float64).view(3, 3, 1, 1)  # pure red, green, blue
    assert_close(luminance(rgb).flatten(), torch.tensor([Y_R, Y_G, Y_B], dtype=torch.float64))
    assert LUMA_REC2020 == (Y_R, Y_G, Y_B)


def test_luminance_golden():
    rgb = torch.tensor([0.5, 0.25, 2.0], dtype=torch.float64).view(1, 3, 1, 1)
    # 0.5*0.2627002 + 0.25*0.6779981 + 2*0.0593017 = 0.1313501 + 0.169499525 + 0.1186034
    assert_close(luminance(rgb).item(), 0.419453025)
    # white has luminance 1 (the weights sum to 1), and the shape drops the channel axis
    white = torch.ones(2, 3, 4, 5, dtype=torch.float64)
    assert luminance(white).shape == (2, 4, 5)
    assert_close(luminance(white), torch.ones(2, 4, 5, dtype=torch.float64))


def test_saturation_golden():
    rgb = torch.tensor(
        [[0.5, 0.25, 2.0], [-1.0, 2.0, 0.5], [0.3, 0.3, 0.3]], dtype=torch.float64
    ).T.reshape(1, 3, 1, 3)
    # max - min: 2 - 0.25 = 1.75 ; 2 - (-1) = 3 ; grey 0
    assert_close(saturation(rgb).flatten(), torch.tensor([1.75, 3.0, 0.0], dtype=torch.float64))
    assert saturation(rgb).shape == (1, 1, 3)


# ---------------------------------------------------------------- noise_sigma


def test_noise_sigma_golden():
    lum = torch.full((1, 1, 1), 0.5, dtype=torch.float64)
    noise_ab = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    # a + 65535*lum*b = 1 + 65535*0.5*2 = 65536 = 256^2, so sigma_0 = 256/65535
    assert_close(noise_sigma(lum, noise_ab, 0).item(), 256 / 65535)
    # each level halves it: level 1 -> 128/65535, level 3 -> 32/65535
    assert_close(noise_sigma(lum, noise_ab, 1).item(), 128 / 65535)
    assert_close(noise_sigma(lum, noise_ab, 3).item(), 32 / 65535)


def test_noise_sigma_clamps_negative_luminance():
    lum = torch.tensor([[[-0.5, 0.0, 0.5]]], dtype=torch.float64)
    noise_ab = torch.tensor([[9.0, 2.0]], dtype=torch.float64)
    # max(lum, 0) = 0 for -0.5 and 0: sqrt(9)/65535 ; 0.5: sqrt(9 + 65535)/65535, at level 2
    expected = 0.25 * torch.tensor([3.0, 3.0, (9.0 + 65535.0) ** 0.5], dtype=torch.float64) / 65535
    assert_close(noise_sigma(lum, noise_ab, 2).flatten(), expected)
    assert not torch.isnan(noise_sigma(lum, noise_ab, 0)).any()


def test_noise_sigma_per_image_profiles():
    lum = torch.full((3, 2, 2), 0.25, dtype=torch.float64)
    noise_ab = torch.tensor([[100.0, 0.0], [0.0, 4.0], [16.0, 1.0]], dtype=torch.float64)
    out = noise_sigma(lum, noise_ab, 0)
    assert out.shape == (3, 2, 2)
    # image 0: sqrt(100)/65535 ; image 1: sqrt(65535*0.25*4)/65535 = sqrt(65535)/65535
    # image 2: sqrt(16 + 65535*0.25)/65535
    expected = [10 / 65535, 65535**0.5 / 65535, (16 + 65535 / 4) ** 0.5 / 65535]
    for b in range(3):
        assert_close(out[b], torch.full((2, 2), expected[b], dtype=torch.float64))


# ---------------------------------------------------------------- star15_features


def test_star15_taps_are_specs():
    """kpn's table is design §2's, which conftest writes out by hand for the tests."""
    assert STAR15_TAPS == SPEC_STAR15_TAPS
    assert STAR15_TAPS[STAR15_CENTRE] == SPEC_STAR15_TAPS[SPEC_STAR15_CENTRE] == (0, 0)


# Hand-listed coordinates (x, y) that each tap of design §2 reads on a W=4, H=5 image,
# mirrored as design §0 says (-1 -> 0, -2 -> 1, W -> W-1, W+1 -> W-2).
# centre (0, 0), the top-left corner:
#   (0,-2)->(0,1)  (-2,-1)->(1,0) (-1,-1)->(0,0) (0,-1)->(0,0) (1,-1)->(1,0) (2,-1)->(2,0)
#   (-1,0)->(0,0)  (0,0)->(0,0)   (1,0)->(1,0)
#   (-2,1)->(1,1)  (-1,1)->(0,1)  (0,1)->(0,1)   (1,1)->(1,1)  (2,1)->(2,1)   (0,2)->(0,2)
CORNER_TL = [(0, 1), (1, 0), (0, 0), (0, 0), (1, 0), (2, 0), (0, 0), (0, 0), (1, 0),
             (1, 1), (0, 1), (0, 1), (1, 1), (2, 1), (0, 2)]  # fmt: skip
# centre (3, 4), the bottom-right corner: x 1,2,3,4->3,5->2 ; y 2,3,4,5->4,6->3
CORNER_BR = [(3, 2), (1, 3), (2, 3), (3, 3), (3, 3), (2, 3), (2, 4), (3, 4), (3, 4),
             (1, 4), (2, 4), (3, 4), (3, 4), (2, 4), (3, 3)]  # fmt: skip
# centre (1, 3): x -1->0, 0, 1, 2, 3 ; y 1, 2, 3, 4, 5->4
EDGE_LEFT = [(1, 1), (0, 2), (0, 2), (1, 2), (2, 2), (3, 2), (0, 3), (1, 3), (2, 3),
             (0, 4), (0, 4), (1, 4), (2, 4), (3, 4), (1, 4)]  # fmt: skip


@pytest.mark.parametrize(
    ("centre", "coords"), [((0, 0), CORNER_TL), ((3, 4), CORNER_BR), ((1, 3), EDGE_LEFT)]
)
def test_star15_channel_order_at_border(centre, coords, image_5x4):
    noise_ab = torch.tensor([[4.0, 0.5]], dtype=torch.float64)
    feats = star15_features(image_5x4, noise_ab, 1, luminance(image_5x4))
    assert feats.shape == (1, 32, 5, 4)
    cx, cy = centre
    got = feats[0, :, cy, cx]
    for t, (px, py) in enumerate(coords):
        assert_close(got[2 * t].item(), lum_at(image_5x4, px, py), msg=f"lum tap {t}")
        assert_close(got[2 * t + 1].item(), sat_at(image_5x4, px, py), msg=f"sat tap {t}")
    # 30: 0.5**1 * sqrt(4 + 65535*max(lum,0)*0.5)/65535 at the centre ; 31: 1
    lum = lum_at(image_5x4, cx, cy)
    assert_close(got[30].item(), 0.5 * (4 + 65535 * max(lum, 0) * 0.5) ** 0.5 / 65535)
    assert got[31].item() == 1.0


@pytest.mark.parametrize("size", [(5, 4), (1, 1), (2, 3), (6, 7)])
def test_star15_matches_reference_everywhere(size, generator):
    height, width = size
    x = torch.randn(2, 3, height, width, generator=generator, dtype=torch.float64)
    noise_ab = torch.tensor([[4.0, 0.5], [1.0, 3.0]], dtype=torch.float64)
    feats = star15_features(x, noise_ab, 0, luminance(x)).numpy()
    rgb = x.permute(0, 2, 3, 1).numpy()  # [B,H,W,3]
    for t, (dx, dy) in enumerate(STAR15_TAPS):
        for y in range(height):
            for px in range(width):
                tap = rgb[:, mirror(y + dy, height), mirror(px + dx, width)]
                np.testing.assert_allclose(feats[:, 2 * t, y, px], lum_np(tap), rtol=1e-12)
                sat = tap.max(-1) - tap.min(-1)
                np.testing.assert_allclose(feats[:, 2 * t + 1, y, px], sat, rtol=1e-12)


def test_star15_noise_channel_uses_noise_lum_not_x(image_5x4):
    noise_ab = torch.tensor([[2.0, 3.0]], dtype=torch.float64)
    noise_lum = torch.full((1, 5, 4), 0.125, dtype=torch.float64)
    feats = star15_features(image_5x4, noise_ab, 2, noise_lum)
    # 0.25 * sqrt(2 + 65535*0.125*3)/65535 everywhere, whatever x holds
    expected = 0.25 * (2 + 65535 * 0.125 * 3) ** 0.5 / 65535
    assert_close(feats[:, 30], torch.full((1, 5, 4), expected, dtype=torch.float64))
    assert_close(feats[:, 31], torch.ones(1, 5, 4, dtype=torch.float64))


def test_star15_per_image_noise_profiles_in_one_batch(generator):
    x = torch.rand(3, 3, 4, 6, generator=generator, dtype=torch.float64)
    noise_ab = torch.tensor([[10.0, 0.1], [500.0, 2.0], [0.0, 7.0]], dtype=torch.float64)
    feats = star15_features(x, noise_ab, 1, luminance(x))
    for b in range(3):
        alone = star15_features(x[b : b + 1], noise_ab[b : b + 1], 1, luminance(x[b : b + 1]))
        assert_close(feats[b : b + 1], alone)
        a, bb = noise_ab[b].tolist()
        expected = 0.5 * torch.sqrt(a + 65535 * luminance(x[b : b + 1]).clamp(min=0) * bb) / 65535
        assert_close(feats[b : b + 1, 30], expected)
    # the three noise channels really differ
    assert not torch.allclose(feats[0, 30], feats[1, 30])
    assert not torch.allclose(feats[1, 30], feats[2, 30])


def test_star15_does_not_take_absolute_values(generator):
    x = -torch.rand(1, 3, 3, 3, generator=generator, dtype=torch.float64)
    feats = star15_features(x, torch.tensor([[1.0, 1.0]]).double(), 0, luminance(x))
    assert (feats[:, 0:30:2] < 0).all()  # luminance of negative (detail) values stays negative
    # sigma uses max(lum, 0): sqrt(a)/65535 with a = 1
    assert_close(feats[:, 30], torch.full((1, 3, 3), 1 / 65535, dtype=torch.float64))


@pytest.mark.parametrize("batch", [1, 2, 5])
def test_star15_shapes(batch, generator):
    x = torch.rand(batch, 3, 7, 3, generator=generator)
    noise_ab = torch.rand(batch, 2, generator=generator)
    feats = star15_features(x, noise_ab, 0, luminance(x))
    assert feats.shape == (batch, 32, 7, 3)
    assert feats.dtype == torch.float32


def test_star15_noncontiguous_and_channels_last(generator):
    base = torch.rand(2, 3, 6, 5, generator=generator, dtype=torch.float64)
    noise_ab = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    transposed = base.transpose(-1, -2)
    contiguous = transposed.contiguous()
    ours = star15_features(transposed, noise_ab, 1, luminance(transposed))
    assert_close(
        ours, star15_features(contiguous, noise_ab, 1, luminance(contiguous)), rtol=0, atol=0
    )
    cl = base.to(memory_format=torch.channels_last)
    assert_close(
        star15_features(cl, noise_ab, 1, luminance(cl)),
        star15_features(base, noise_ab, 1, luminance(base)),
    )


def test_star15_gradcheck(generator):
    # positive values and a > 0 keep sqrt and max(lum, 0) smooth; distinct values keep
    # max/min of the saturation away from ties
    x = (0.1 + torch.rand(1, 3, 3, 4, generator=generator, dtype=torch.float64)).requires_grad_()
    noise_ab = torch.tensor([[0.5, 2.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: star15_features(t, noise_ab, 1, luminance(t)), (x,))


# ---------------------------------------------------------------- padded variants (bands)


@pytest.mark.parametrize(("top", "bottom"), [(0, 3), (2, 5), (4, 7), (0, 7)])
def test_star15_padded_band_equals_rows_of_full(top, bottom, generator):
    # a band of rows top..bottom-1 cut from the padded full image (with its border rows)
    # gives exactly those rows of the full features, mirrored edges included
    x = torch.rand(2, 3, 7, 5, generator=generator, dtype=torch.float64)
    noise_ab = torch.tensor([[3.0, 0.5], [1.0, 2.0]], dtype=torch.float64)
    noise_lum = luminance(x)
    full = star15_features(x, noise_ab, 1, noise_lum)
    padded = pad_symmetric(x, *STAR15_PADDING)
    assert STAR15_PADDING == (2, 2, 2, 2)
    band = padded[..., top : bottom + 4, :]
    out = star15_features_padded(band, noise_ab, 1, noise_lum[:, top:bottom])
    assert out.shape == (2, 32, bottom - top, 5)
    assert_close(out, full[..., top:bottom, :], rtol=0, atol=0)


# --- star15_snr: kpn's noise-normalised input ----------------------------------------------
def slog(v: float) -> float:
    return math.copysign(math.log1p(abs(v)), v)


def test_signed_log1p_values_and_gradient() -> None:
    x = torch.tensor([-1e6, -2.0, -0.0, 0.0, 0.5, 3.0], dtype=torch.float64)
    assert_close(signed_log1p(x), torch.sign(x) * torch.log1p(x.abs()))
    assert signed_log1p(torch.tensor([-0.0])).signbit().all()
    inputs = torch.tensor([-3.0, -0.2, 0.1, 7.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(signed_log1p, (inputs,))


def test_star15_snr_by_hand(image_5x4: Tensor) -> None:
    noise_ab = torch.tensor([[2.0e4, 30.0]], dtype=torch.float64)
    level = 1
    padded = pad_symmetric(image_5x4, *STAR15_PADDING)
    lum = luminance(image_5x4)
    got = star15_snr_features_padded(padded, noise_ab, level, lum)
    assert got.shape == (1, 32, 5, 4)
    px, py = 3, 0  # at the right and top edges: taps mirror
    lum_c, sat_c = lum_at(image_5x4, px, py), sat_at(image_5x4, px, py)
    sigma = 0.5**level * math.sqrt(2.0e4 + 65535 * lum_c * 30.0) / 65535
    for t, (dx, dy) in enumerate(STAR15_TAPS):
        qx, qy = mirror(px + dx, 4), mirror(py + dy, 5)
        if (dx, dy) == (0, 0):
            expected = (slog(lum_c / sigma), slog(sat_c / sigma))
        else:
            expected = (
                slog((lum_at(image_5x4, qx, qy) - lum_c) / sigma),
                slog((sat_at(image_5x4, qx, qy) - sat_c) / sigma),
            )
        assert got[0, 2 * t, py, px].item() == pytest.approx(expected[0], rel=1e-9)
        assert got[0, 2 * t + 1, py, px].item() == pytest.approx(expected[1], rel=1e-9)
    assert got[0, 30, py, px].item() == pytest.approx(math.log2(sigma * 65535) / 16, rel=1e-9)
    assert got[0, 31].eq(1).all()


def test_star15_snr_is_invariant_to_exposure_at_equal_snr(image_5x4: Tensor) -> None:
    """Scale the image by k and a by k**2, b by k: every sigma scales by k, so every
    channel but the noise level's is unchanged."""
    k = 4.0
    noise_ab = torch.tensor([[1.0e4, 20.0]], dtype=torch.float64)
    scaled_ab = noise_ab * torch.tensor([[k * k, k]], dtype=torch.float64)
    padded = pad_symmetric(image_5x4, *STAR15_PADDING)
    one = star15_snr_features_padded(padded, noise_ab, 0, luminance(image_5x4))
    other = star15_snr_features_padded(k * padded, scaled_ab, 0, luminance(k * image_5x4))
    assert_close(other[:, :30], one[:, :30])
    assert_close(other[:, 30], one[:, 30] + math.log2(k) / 16)


def test_star15_snr_noise_free_profile_is_finite(image_5x4: Tensor) -> None:
    padded = pad_symmetric(image_5x4, *STAR15_PADDING)
    zero = torch.zeros(1, 2, dtype=torch.float64)
    got = star15_snr_features_padded(padded, zero, 0, luminance(image_5x4))
    assert torch.isfinite(got).all()
    assert got[:, :30].abs().max() < slog(1 / SIGMA_FLOOR) + 1e-9


def test_star15_snr_gradcheck() -> None:
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(1, 3, 4, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    noise_ab = torch.tensor([[5.0e3, 10.0]], dtype=torch.float64)

    def features(image: Tensor) -> Tensor:
        padded = pad_symmetric(image, *STAR15_PADDING)
        return star15_snr_features_padded(padded, noise_ab, 0, luminance(image))

    assert torch.autograd.gradcheck(features, (x,))


def test_guide_features_by_hand() -> None:
    """Two pixels, one with the guide a sigma above in luminance and two below in
    saturation, one where the guide agrees: s(+1) = log 2, s(-2) = -log 3, s(0) = 0."""
    noise_ab = torch.tensor([[1.0e4, 20.0]], dtype=torch.float64)
    x = torch.tensor([[0.2, 0.5], [0.3, 0.5], [0.1, 0.5]], dtype=torch.float64)  # [3,2]
    x = x.view(1, 3, 1, 2)
    lum = luminance(x)
    sigma = noise_sigma(lum, noise_ab, level=2)
    # pixel 0: + sigma in every channel (lum up by sigma, saturation unchanged), then the
    # largest channel (green) up by 2 sigma more and the smallest down by nothing:
    # saturation up by 2 sigma, luminance by sigma + 2 sigma * LUMA_REC2020[1]
    guide = x.clone()
    guide[0, :, 0, 0] += sigma[0, 0, 0]
    guide[0, 1, 0, 0] += 2 * sigma[0, 0, 0]
    got = guide_features(guide, x, noise_ab, 2, lum)
    assert got.shape == (1, 2, 1, 2)
    assert got[0, 0, 0, 0].item() == pytest.approx(math.log1p(1 + 2 * LUMA_REC2020[1]))
    assert got[0, 1, 0, 0].item() == pytest.approx(math.log1p(2))
    assert got[0, :, 0, 1].eq(0).all()  # the guide agrees with the pixel
    darker = guide_features(x - 2 * sigma[:, None], x, noise_ab, 2, lum)
    assert darker[0, 0, 0, 0].item() == pytest.approx(-math.log1p(2))
    assert darker[0, 1, 0, 0].item() == pytest.approx(0.0, abs=1e-12)


def test_guide_features_gradcheck() -> None:
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 3, 4, generator=generator, dtype=torch.float64)
    guide = x + 0.01 * torch.randn(2, 3, 3, 4, generator=generator, dtype=torch.float64)
    noise_ab = torch.tensor([[1.0e4, 20.0], [3.0e5, 2.0]], dtype=torch.float64)
    lum = luminance(x)

    def channels(image: Tensor) -> Tensor:
        return guide_features(image, x, noise_ab, 1, lum)

    assert torch.autograd.gradcheck(channels, (guide.requires_grad_(),))


def test_chroma_features_by_hand() -> None:
    """model.chroma_input's channels: one pixel red by 2 sigma against a grey
    neighbourhood; its right neighbour's taps see it at tap (-1, 0)."""
    noise_ab = torch.tensor([[1.0e4, 20.0]], dtype=torch.float64)
    image = torch.full((1, 3, 5, 6), 0.4, dtype=torch.float64)
    lum = luminance(image)
    sigma = noise_sigma(lum, noise_ab, level=1)[0, 0, 0].item()
    image[0, 0, 2, 2] += 2 * sigma  # red up: (r - g)/sqrt2 = 2 sigma/sqrt2, (r+g-2b)/sqrt6
    padded = pad_symmetric(image, *STAR15_PADDING)
    got = chroma_features_padded(padded, noise_ab, 1, lum)
    assert got.shape == (1, 30, 5, 6)
    first, second = 2 / math.sqrt(2), 2 / math.sqrt(6)  # in sigmas
    centre = 2 * SPEC_STAR15_CENTRE
    # the red pixel: its own opponent colours, and every tap against it
    assert got[0, centre, 2, 2].item() == pytest.approx(math.log1p(first), rel=1e-6)
    assert got[0, centre + 1, 2, 2].item() == pytest.approx(math.log1p(second), rel=1e-6)
    left = 2 * SPEC_STAR15_TAPS.index((-1, 0))
    assert got[0, left, 2, 3].item() == pytest.approx(math.log1p(first), rel=1e-6)
    assert got[0, left + 1, 2, 3].item() == pytest.approx(math.log1p(second), rel=1e-6)
    assert got[0, left, 2, 2].item() == pytest.approx(-math.log1p(first), rel=1e-6)
    # grey pixels far from it read no colour at all
    assert got[0, :, 0, 5].eq(0).all()


def test_chroma_features_gradcheck() -> None:
    generator = torch.Generator().manual_seed(4)
    x = torch.rand(2, 3, 3, 4, generator=generator, dtype=torch.float64)
    noise_ab = torch.tensor([[1.0e4, 20.0], [3.0e5, 2.0]], dtype=torch.float64)
    lum = luminance(x)

    def channels(image: Tensor) -> Tensor:
        return chroma_features_padded(pad_symmetric(image, *STAR15_PADDING), noise_ab, 1, lum)

    assert torch.autograd.gradcheck(channels, (x.requires_grad_(),))
