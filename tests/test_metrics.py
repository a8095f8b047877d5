"""SSIM (kpn/metrics.py): known values, and skimage's numbers where skimage is installed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kpn.io.images import linear_to_srgb
from kpn.metrics import SSIM_K1, SSIM_K2, display_ssim, srgb, srgb_slope, ssim


def test_identical_images_score_one() -> None:
    image = torch.rand(2, 3, 20, 24, generator=torch.Generator().manual_seed(0))
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-6)


def test_constant_images_score_the_luminance_term() -> None:
    """No variance anywhere: SSIM = (2ab + C1) / (a^2 + b^2 + C1), the contrast term 1."""
    a, b = 0.3, 0.6
    c1 = SSIM_K1**2
    first = torch.full((1, 3, 16, 16), a, dtype=torch.float64)
    second = torch.full((1, 3, 16, 16), b, dtype=torch.float64)
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert ssim(first, second) == pytest.approx(expected, rel=1e-9)
    assert SSIM_K2 == 0.03


def test_matches_skimage() -> None:
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(3)
    clean = rng.random((23, 31, 3))
    noisy = np.clip(clean + 0.1 * rng.standard_normal(clean.shape), 0, 1)
    expected = metrics.structural_similarity(
        noisy,
        clean,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
        channel_axis=-1,
    )

    def batch(image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(image).permute(2, 0, 1)[None]

    assert ssim(batch(noisy), batch(clean)) == pytest.approx(expected, abs=1e-9)


def test_display_ssim_compares_srgb_clipped_images() -> None:
    linear = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2
    torch.testing.assert_close(
        srgb(linear), torch.from_numpy(linear_to_srgb(linear.clamp(0, 1).numpy()))
    )
    # values above 1 are clipped: a brighter highlight does not change what is shown
    assert display_ssim(linear, linear.clamp(max=1.0)) == pytest.approx(1.0, abs=1e-6)
    assert display_ssim(linear, linear * 0.5) < 0.99


def test_small_images_use_a_smaller_window() -> None:
    image = torch.rand(1, 3, 6, 9, generator=torch.Generator().manual_seed(2))
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-6)
    assert ssim(image, 1 - image) < 0.5


def test_srgb_slope_is_the_curves_derivative():
    """By autograd of :func:`srgb` in float64, on both sides of the knee (0.0031308) and
    inside [0, 1] (srgb clips there; its slope does not); 12.92 below the knee."""
    linear = torch.tensor([1e-4, 0.002, 0.0031, 0.0032, 0.01, 0.18, 0.5, 0.99], dtype=torch.float64)
    linear.requires_grad_(True)
    srgb(linear).sum().backward()
    torch.testing.assert_close(srgb_slope(linear.detach()), linear.grad)
    assert srgb_slope(torch.tensor([0.0, -1.0])).tolist() == pytest.approx([12.92, 12.92])
