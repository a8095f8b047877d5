"""Tests for kpn/infer/noise_estimate.py: the Poissonian-Gaussian fit on synthetic noise.

The synthetic noise is docs/design.md §8's: x + z * sqrt(a + 65535*max(x,0)*b) / 65535, z ~ N(0,1),
with (a, b) = (65535000 * u1, 1000 * u2) for u1, u2 in [0, 1).

How the (a, b) pairs were chosen. Both parameters can be told apart only where each
term of the variance a + 65535*x*b matters somewhere in the image's range of x; the two
are equal at x = a / (65535 b) = u1 / u2. So the pairs for "within 20% of a and of b"
take quantiles (u1, u2) across design §8's whole range of magnitudes (noise sigma at mid
grey from 0.004 to 0.15) with u1 / u2 between 0.02 and 1, inside the image's signal range
[0.01, 0.99]. Pairs outside it (one term drowns the other everywhere) are tested on what
denoising uses, the variance curve over the range, also to 20%.
"""

from __future__ import annotations

import numpy as np
import pytest

import kpn.infer.noise_estimate as noise_estimate
from kpn.errors import KpnError
from kpn.infer.noise_estimate import NoiseEstimate, estimate_noise, fit_line

from conftest import assert_one_line_error

U16 = 65535.0


def smooth_image(height: int = 256, width: int = 256) -> np.ndarray:
    """Three smooth channels whose values spread evenly over [0.01, 0.99]: two ramps
    and a slow bump (its curvature is far below any noise here)."""
    y, x = np.mgrid[0:height, 0:width]
    y, x = y / (height - 1), x / (width - 1)
    bump = 0.5 + 0.5 * np.sin(np.pi * (x - 0.5)) * np.cos(np.pi * (y - 0.5))
    return 0.01 + 0.98 * np.stack((x, y, bump), axis=-1)


def add_noise(clean: np.ndarray, a: float, b: float, seed: int) -> np.ndarray:
    """Design §8's synthetic noise, float32 like an image file."""
    rng = np.random.default_rng(seed)
    sigma = np.sqrt(a + U16 * np.maximum(clean, 0.0) * b) / U16
    return (clean + sigma * rng.standard_normal(clean.shape)).astype(np.float32)


# (u1, u2): a = 65535000 * u1, b = 1000 * u2
SEPARABLE = [(0.001, 0.01), (0.01, 0.5), (0.05, 0.5), (0.1, 0.2), (0.3, 0.9), (0.9, 0.95)]


@pytest.mark.parametrize(("u1", "u2"), SEPARABLE)
def test_within_20_percent_of_a_and_b(u1: float, u2: float) -> None:
    a, b = 65535000 * u1, 1000 * u2
    for seed in (0, 1):
        estimate = estimate_noise(add_noise(smooth_image(), a, b, seed))
        assert abs(estimate.a / a - 1) < 0.2, (estimate, a)
        assert abs(estimate.b / b - 1) < 0.2, (estimate, b)
        assert estimate.level_sets == noise_estimate.LEVEL_SETS


@pytest.mark.parametrize(
    ("u1", "u2"),
    [(0.5, 0.01), (0.99, 0.05), (0.001, 0.99), (0.0, 0.3), (0.4, 0.0)],
    ids=["a_dominates", "a_dominates_loud", "b_dominates", "poisson_only", "gaussian_only"],
)
def test_variance_curve_within_20_percent(u1: float, u2: float) -> None:
    a, b = 65535000 * u1, 1000 * u2
    estimate = estimate_noise(add_noise(smooth_image(), a, b, 3))
    x = np.linspace(0.05, 0.95, 19)
    truth = (a + U16 * x * b) / U16**2
    np.testing.assert_array_less(np.abs(estimate.variance(x) / truth - 1), 0.2)


def test_edges_are_left_out() -> None:
    """Hard-edged discs over the ramps: their high-pass is signal, not noise."""
    clean = smooth_image()
    y, x = np.mgrid[0:256, 0:256]
    rng = np.random.default_rng(7)
    for _ in range(12):
        cy, cx, radius = rng.uniform(0, 256), rng.uniform(0, 256), rng.uniform(8, 30)
        clean[(y - cy) ** 2 + (x - cx) ** 2 < radius**2] = rng.uniform(0.05, 0.95, 3)
    a, b = 65535000 * 0.02, 1000 * 0.1
    estimate = estimate_noise(add_noise(clean, a, b, 0))
    assert abs(estimate.a / a - 1) < 0.2 and abs(estimate.b / b - 1) < 0.2
    assert estimate.samples < 0.97 * 3 * (256 - 2 * noise_estimate.BORDER) ** 2  # edges out


def test_clean_image_has_no_noise() -> None:
    estimate = estimate_noise(smooth_image().astype(np.float32))
    assert estimate.variance(0.5) < 1e-10  # sigma < 1e-5


def test_grey_and_integer_images() -> None:
    a, b = 65535000 * 0.05, 1000 * 0.2
    noisy = add_noise(smooth_image(), a, b, 0)
    grey = estimate_noise(noisy[:, :, 1])
    assert abs(grey.a / a - 1) < 0.3 and abs(grey.b / b - 1) < 0.3
    codes = np.zeros((64, 64), dtype=np.uint8)  # a flat integer image: no noise at all
    assert estimate_noise(codes) == NoiseEstimate(0.0, 0.0, 3364, 13)


def test_large_image_is_sampled_in_bands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(noise_estimate, "MAX_PIXELS", 40000)
    a, b = 65535000 * 0.1, 1000 * 0.3
    noisy = add_noise(smooth_image(600, 300), a, b, 0)
    estimate = estimate_noise(noisy)
    assert estimate.samples <= 3 * 40000
    assert abs(estimate.a / a - 1) < 0.2 and abs(estimate.b / b - 1) < 0.2


def test_fit_line_known_values() -> None:
    x = np.linspace(0.1, 0.9, 9)
    sizes = np.full(9, 100.0)
    # an exact line comes back exactly
    assert fit_line(x, 2e-4 + 3e-3 * x, sizes) == pytest.approx((2e-4, 3e-3), rel=1e-9)
    # a negative intercept is not a variance: the best line through 0
    alpha, beta = fit_line(x, -1e-3 + 1e-2 * x, sizes)
    assert alpha == 0.0 and beta > 0
    # a falling line: the best constant
    alpha, beta = fit_line(x, 1e-2 - 1e-2 * x, sizes)
    assert beta == 0.0 and alpha == pytest.approx(np.mean(1e-2 - 1e-2 * x))


@pytest.mark.parametrize(
    ("image", "fragment"),
    [
        (np.zeros((1, 1, 3), dtype=np.float32), "too small"),
        (np.zeros((6, 4000, 3), dtype=np.float32), "too small"),
        (np.zeros((30, 30, 3), dtype=np.float32), "too small"),
        (np.full((64, 64, 3), np.nan, dtype=np.float32), "NaN"),
        (np.zeros((4, 4, 4, 4)), "shape"),
    ],
    ids=["1x1", "huge_aspect", "30x30", "nan", "4d"],
)
def test_refusals_are_one_line(image: np.ndarray, fragment: str) -> None:
    with pytest.raises(KpnError, match=fragment) as err:
        estimate_noise(image, "photo.png")
    assert_one_line_error(err, starts="photo.png: ")


def test_too_little_smooth_area(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the smoothness test leaves too few pixels, the estimate is refused."""
    monkeypatch.setattr(noise_estimate, "SMOOTH_LIMIT", 1e-3)
    noisy = add_noise(smooth_image(), 1e6, 10.0, 0)
    with pytest.raises(KpnError, match="too little of the image is smooth") as err:
        estimate_noise(noisy, "photo.png")
    assert_one_line_error(err)
