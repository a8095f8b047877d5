"""Tests for kpn/infer/noise_estimate.py: the profile of synthetic noise recovered, its
uncertainty, and the one-line refusals.

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

import dataclasses
import re

import numpy as np
import pytest

import kpn.infer.noise_estimate as noise_estimate
from kpn.errors import KpnError
from kpn.infer.noise_estimate import estimate_noise, fit_line
from kpn.infer.noise_patches import ROBUST_HIGH_PASS, clip_values, local_levels

from conftest import assert_one_line_error

U16 = 65535.0


def smooth_image(height: int = 256, width: int = 256) -> np.ndarray:
    """Three smooth channels whose values spread evenly over [0.01, 0.99]: two ramps
    and a slow bump (its curvature is far below any noise here)."""
    y, x = np.mgrid[0:height, 0:width]
    y, x = y / (height - 1), x / (width - 1)
    bump = 0.5 + 0.5 * np.sin(np.pi * (x - 0.5)) * np.cos(np.pi * (y - 0.5))
    return 0.01 + 0.98 * np.stack((x, y, bump), axis=-1)


def discs_image(count: int = 12, seed: int = 7) -> np.ndarray:
    """The smooth image under ``count`` hard-edged discs of random colour: edges are
    signal whose high-pass is large, but flat patches are plenty."""
    clean = smooth_image()
    y, x = np.mgrid[0:256, 0:256]
    rng = np.random.default_rng(seed)
    for _ in range(count):
        cy, cx, radius = rng.uniform(0, 256), rng.uniform(0, 256), rng.uniform(8, 30)
        clean[(y - cy) ** 2 + (x - cx) ** 2 < radius**2] = rng.uniform(0.05, 0.95, 3)
    return clean


def fine_texture() -> np.ndarray:
    """Grey texture of amplitude 0.2 at a period of 3 pixels, everywhere."""
    y, x = np.mgrid[0:256, 0:256]
    texture = np.sin(2.1 * x + 3 * np.sin(0.7 * y)) * np.cos(1.7 * y + 0.3 * x)
    return np.repeat((0.5 + 0.2 * texture)[..., None], 3, axis=2)


def add_noise(clean: np.ndarray, a: float, b: float, seed: int) -> np.ndarray:
    """Design §8's synthetic noise, float32 like an image file."""
    rng = np.random.default_rng(seed)
    sigma = np.sqrt(a + U16 * np.maximum(clean, 0.0) * b) / U16
    return (clean + sigma * rng.standard_normal(clean.shape)).astype(np.float32)


def true_sigma(a: float, b: float, x: float) -> float:
    return float(np.sqrt(a + U16 * x * b) / U16)


# (u1, u2): a = 65535000 * u1, b = 1000 * u2
SEPARABLE = [(0.001, 0.01), (0.01, 0.5), (0.05, 0.5), (0.1, 0.2), (0.3, 0.9), (0.9, 0.95)]


@pytest.mark.parametrize(("u1", "u2"), SEPARABLE)
def test_within_20_percent_of_a_and_b(u1: float, u2: float) -> None:
    a, b = 65535000 * u1, 1000 * u2
    for seed in (0, 1):
        estimate = estimate_noise(add_noise(smooth_image(), a, b, seed))
        assert abs(estimate.a / a - 1) < 0.2, (estimate, a)
        assert abs(estimate.b / b - 1) < 0.2, (estimate, b)
        assert abs(estimate.sigma(0.5) / true_sigma(a, b, 0.5) - 1) < 0.03, estimate
        sets = min(noise_estimate.LEVEL_SETS, estimate.patches // (4 * noise_estimate.MIN_SET))
        assert estimate.level_sets == sets and estimate.samples > 0.95 * estimate.patches


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


@pytest.mark.parametrize("a", [1e5, 1e6, 1e7])
def test_edges_are_left_out(a: float) -> None:
    """Hard-edged discs over the ramps: their patches are signal, not noise, and left out;
    sigma at mid grey stays within 5%."""
    b = a / 1e4
    estimate = estimate_noise(add_noise(discs_image(), a, b, 0))
    assert abs(estimate.sigma(0.5) / true_sigma(a, b, 0.5) - 1) < 0.05, estimate
    assert estimate.samples < 0.95 * estimate.patches  # the edges' patches are out


def test_uncertainty_matches_the_spread_of_estimates() -> None:
    """The reported standard error of sigma is the spread over noise draws, within a
    factor 2, and it shrinks on a larger image."""
    a, b = 65535000 * 0.05, 200.0
    estimates = [estimate_noise(add_noise(smooth_image(96, 96), a, b, seed)) for seed in range(12)]
    spread = np.std([e.sigma(0.5) for e in estimates]) / true_sigma(a, b, 0.5)
    reported = np.median([e.sigma_error(0.5) for e in estimates])
    assert 0.5 < reported / spread < 2.0, (reported, spread)
    larger = estimate_noise(add_noise(smooth_image(400, 400), a, b, 0))
    assert larger.sigma_error(0.5) < 0.8 * reported
    covariance = np.array(larger.covariance)
    assert covariance[0, 0] > 0 and covariance[1, 1] > 0
    np.testing.assert_allclose(covariance, covariance.T)


def test_describe_says_the_profile_its_error_and_the_evidence() -> None:
    estimate = estimate_noise(add_noise(smooth_image(), 1e6, 100.0, 0))
    line = estimate.describe()
    assert "\n" not in line
    assert f"a {estimate.a:.4g} +- " in line and f"b {estimate.b:.4g} +- " in line
    assert f"sigma {estimate.sigma(0.1):.3g}/{estimate.sigma(0.5):.3g}/" in line
    assert f"{estimate.samples} of {estimate.patches} patches flat" in line
    assert f"{estimate.level_sets} level sets" in line
    colour = estimate_noise(add_noise(smooth_image() + grey_texture(0.015), 1e6, 10.0, 4))
    assert colour.colour and "patches of the colour differences flat" in colour.describe()


def test_grey_image() -> None:
    a, b = 65535000 * 0.05, 200.0
    grey = estimate_noise(add_noise(smooth_image(), a, b, 0)[:, :, 1])
    assert abs(grey.a / a - 1) < 0.2 and abs(grey.b / b - 1) < 0.2


def test_large_image_is_sampled() -> None:
    """A 1.5 Mpx image is read through about TARGET_PATCHES patches, as accurately."""
    a, b = 65535000 * 0.05, 200.0
    estimate = estimate_noise(add_noise(smooth_image(1500, 1000), a, b, 0))
    assert estimate.patches <= 1.05 * noise_estimate.TARGET_PATCHES  # whole rows of the grid
    assert abs(estimate.sigma(0.5) / true_sigma(a, b, 0.5) - 1) < 0.03


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


def _blurred(image: np.ndarray) -> np.ndarray:
    """``image`` through [1,2,1]/4 along both axes: bilinear demosaicing's smoothing."""
    out = image.astype(np.float64)
    for axis in (0, 1):
        out = 0.25 * np.roll(out, 1, axis) + 0.5 * out + 0.25 * np.roll(out, -1, axis)
    return out.astype(np.float32)


NOISY = add_noise(smooth_image(), 1e6, 10.0, 0)
REFUSALS = {
    "1x1": (np.zeros((1, 1, 3), dtype=np.float32), "too small"),
    "huge_aspect": (np.zeros((6, 4000, 3), dtype=np.float32), "too small"),
    "40x40": (NOISY[:40, :40], "40 x 40 is too small"),
    "clean": (smooth_image().astype(np.float32), "too flat"),
    "black": (
        np.zeros((64, 64, 3), dtype=np.float32),
        "too clipped to estimate its noise (100% of its patches",
    ),
    "clipped": (np.clip(3 * NOISY - 1.5, 0, 1), "too clipped"),
    "textured": (add_noise(fine_texture(), 1e5, 1.0, 0), "too textured"),
    "demosaiced": (_blurred(NOISY), "correlated between neighbouring pixels"),
    "resized": (
        NOISY.reshape(128, 2, 128, 2, 3).mean(axis=(1, 3)).repeat(2, 0).repeat(2, 1),
        "correlated",
    ),
}


@pytest.mark.parametrize("name", REFUSALS)
def test_refusals_are_one_line_and_say_what_to_give(name: str) -> None:
    image, fragment = REFUSALS[name]
    with pytest.raises(KpnError, match=re.escape(fragment)) as err:
        estimate_noise(image, "photo.png")
    line = assert_one_line_error(err, starts="photo.png: ")
    assert line.endswith("give the profile (noise_a and noise_b, or nprof)"), line


def test_refusal_says_what_the_caller_asks() -> None:
    with pytest.raises(KpnError, match=r"too flat.*: use \(a, b\)$"):
        estimate_noise(smooth_image(), "frame 3", "use (a, b)")


@pytest.mark.parametrize(
    ("image", "fragment"),
    [
        (np.full((64, 64, 3), np.nan, dtype=np.float32), "NaN"),
        (np.zeros((4, 4, 4, 4)), "shape"),
    ],
    ids=["nan", "4d"],
)
def test_bad_arrays_are_one_line(image: np.ndarray, fragment: str) -> None:
    with pytest.raises(KpnError, match=fragment) as err:
        estimate_noise(image, "photo.png")
    assert_one_line_error(err, starts="photo.png: ")


def test_texture_is_not_taken_for_noise_where_noise_dominates() -> None:
    """The same fine texture under strong noise: refused or within 10% at mid grey,
    never the texture counted as noise (which would read 2x and more)."""
    a, b = 4e7, 100.0
    try:
        estimate = estimate_noise(add_noise(fine_texture(), a, b, 1))
    except KpnError as err:
        assert "too textured" in str(err)
    else:
        assert abs(estimate.sigma(0.5) / true_sigma(a, b, 0.5) - 1) < 0.1


def _line_fit(alpha: float, beta: float, means: list[float], scatter: float = 0.0) -> object:
    """A fit through sets of 500 patches at ``means`` on the line (alpha, beta), each set's
    variance off it by ``scatter`` (relative, alternating in sign)."""
    x = np.array(means)
    signs = np.where(np.arange(len(x)) % 2 == 0, 1.0, -1.0)
    variances = (alpha + beta * x) * (1 + scatter * signs)
    keep = np.zeros(100 * len(x), dtype=bool)
    keep[: 10 * len(x)] = True
    return noise_estimate._Fit(alpha, beta, x, variances, np.full(len(x), 500.0), keep)


Y = np.linspace(0.02, 0.9, 1000)  # the patch means: percentiles 10/50/90 at 0.11/0.46/0.81
LEVELS = noise_estimate._settle_levels(Y)
BRIGHT = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8]


def test_agreeing_fits_of_a_cycle_give_the_one_with_most_sets() -> None:
    """A dark set dropping in and out: the intercept swings within what the sets without
    it leave open, the variance at the median patch mean by 1.5%. The fit with the dark set
    measures where the others extrapolate."""
    with_dark = _line_fit(1e-6, 1e-4, [0.02, *BRIGHT], 0.02)
    without = _line_fit(4e-6, 0.95e-4, BRIGHT, 0.04)
    cycle = [without, with_dark, without]
    assert noise_estimate._agreeing(cycle, LEVELS, noise_estimate.ROBUST_HIGH_PASS) is with_dark
    assert noise_estimate._agreeing(cycle[:2], LEVELS, noise_estimate.ROBUST_HIGH_PASS) is None


def test_fits_apart_beyond_their_errors_or_at_the_median_do_not_agree() -> None:
    precise = _line_fit(1e-6, 1e-4, [0.02, *BRIGHT])
    far = _line_fit(1e-6, 1.5e-4, [0.02, *BRIGHT])  # both exact: any gap is beyond errors
    reader = noise_estimate.ROBUST_HIGH_PASS
    assert noise_estimate._agreeing([precise, far, precise], LEVELS, reader) is None
    # equal at the median patch mean (0.46), 26% apart at the 10th percentile (0.108)
    steeper = _line_fit(5e-6, 1e-4 - 4e-6 / 0.46, [0.02, *BRIGHT])
    assert noise_estimate._agreeing([precise, steeper, precise], LEVELS, reader) is None
    # within their (large) errors, yet 20% apart in variance at the median patch mean
    loose = _line_fit(1e-6, 1e-4, [0.02, *BRIGHT], 0.5)
    louder = _line_fit(1e-6, 1.2e-4, [0.02, *BRIGHT], 0.5)
    assert noise_estimate._agreeing([loose, louder, loose], LEVELS, reader) is None
    assert noise_estimate._agreeing([loose, loose, loose], LEVELS, reader) is loose


def test_refinement_that_cycles_between_agreeing_fits_is_accepted(monkeypatch) -> None:
    """``_refine`` past its rounds: a cycle of agreeing fits settles on the one with most
    sets; a cycle of disagreeing fits stays unsettled (refused as too textured)."""
    with_dark = _line_fit(1e-6, 1e-4, [0.02, *BRIGHT], 0.02)
    without = _line_fit(4e-6, 0.95e-4, BRIGHT, 0.04)
    # patch means as Y's: the variance swings 21% at their 10th percentile, past SETTLED
    pixels = np.random.default_rng(0).normal(0, 0.01, (len(Y), 49)) + Y[:, None]
    patches = noise_estimate._sorted_patches(
        pixels.astype(np.float32), noise_estimate.ROBUST_HIGH_PASS
    )
    louder = _line_fit(1e-6, 2e-4, BRIGHT)
    for cycle, accepted in (([with_dark, without], True), ([with_dark, louder], False)):
        fits = iter(cycle * noise_estimate.ROUNDS)
        monkeypatch.setattr(noise_estimate, "_fit_sets", lambda *_, fits=fits, **__: next(fits))
        fit, settled = noise_estimate._refine(patches, noise_estimate.ROBUST_HIGH_PASS)
        assert settled == accepted
        assert fit is with_dark if accepted else fit in cycle


# ---------------------------------------------------------------- the colour differences


def test_local_levels_are_the_3x3_means_under_the_high_pass_values() -> None:
    """On a ramp 7 y + x the 3x3 mean is the centre's value; the high-pass values sit at
    rows and columns 1, 3, 5 (every other one of the valid 5 x 5)."""
    ramp = np.arange(49, dtype=np.float32)[None]
    expected = [7 * y + x for y in (1, 3, 5) for x in (1, 3, 5)]
    np.testing.assert_allclose(local_levels(ramp), [expected], rtol=1e-6)


def grey_texture(sigma: float, seed: int = 5) -> np.ndarray:
    """``[256,256,1]``: white grey texture of std ``sigma``, the same in every channel: a
    scan's grain, or fur, that a channel's high-pass reads as noise."""
    return sigma * np.random.default_rng(seed).standard_normal((256, 256, 1))


def test_grey_texture_is_read_through_the_colour_differences() -> None:
    """Grey texture of 0.8 times the noise's std: each channel holds 1.28 times the
    noise's std, the colour differences the noise alone. Read from the channels alone the
    estimate is 1.28x (or refused); from the differences within 5%."""
    a, b = 1e6, 10.0
    noisy = add_noise(smooth_image() + grey_texture(0.8 * true_sigma(a, b, 0.5)), a, b, 4)
    estimate = estimate_noise(noisy)
    assert estimate.colour
    assert estimate.sigma(0.5) / true_sigma(a, b, 0.5) == pytest.approx(1, abs=0.05)
    channels = estimate_noise(noisy, colour_differences=False)
    assert not channels.colour
    assert channels.sigma(0.5) / true_sigma(a, b, 0.5) == pytest.approx(1.28, abs=0.05)


def test_the_noise_of_a_textured_brightness_is_read_at_each_values_signal() -> None:
    """Colour differences of a grey pattern of 0.02 and 0.9, b-dominated noise: a patch
    flat in colour, its noise's variance 45x apart between its pixels. Each value divided
    by the sigma at the 3x3 mean under it (local_levels) reads closer to the truth than
    each divided by its patch's (the robust variance of a mixture falls short)."""
    a, b = 1e3, 100.0
    pattern = np.random.default_rng(0).choice([0.02, 0.9], size=(256, 256, 1))
    array = noise_estimate._checked(add_noise(np.repeat(pattern, 3, axis=2), a, b, 3), "x")
    errors = []
    for reader in (ROBUST_HIGH_PASS, dataclasses.replace(ROBUST_HIGH_PASS, levels=None)):
        patches = noise_estimate._colour_patches(array, clip_values(array), reader)
        fit, settled = noise_estimate._refine(patches, reader)
        assert settled
        errors.append(abs(np.sqrt(fit.alpha + fit.beta * 0.3) / true_sigma(a, b, 0.3) - 1))
    assert errors[0] < 0.1 and errors[0] < errors[1] - 0.03


def test_a_grey_image_in_three_channels_is_read_from_the_channels() -> None:
    """R = G = B, noise and all: the colour differences are 0 (noise shared by the
    channels, which they cannot see), so the channels' estimate stands."""
    a, b = 1e6, 10.0
    grey = add_noise(smooth_image()[:, :, 1:2], a, b, 0)
    estimate = estimate_noise(np.repeat(grey, 3, axis=2))
    assert not estimate.colour
    assert estimate.sigma(0.5) / true_sigma(a, b, 0.5) == pytest.approx(1, abs=0.1)


def test_a_colour_texture_is_left_to_the_channels() -> None:
    """Texture in red alone: both colour differences hold a part of it, while green's and
    blue's patches are flat: the channels' estimate, the lower, stands."""
    a, b = 1e6, 10.0
    clean = smooth_image()
    clean[:, :, :1] += grey_texture(1.5 * true_sigma(a, b, 0.5))
    estimate = estimate_noise(add_noise(clean, a, b, 4))
    assert not estimate.colour
    assert estimate.sigma(0.5) / true_sigma(a, b, 0.5) == pytest.approx(1, abs=0.1)


def _fit_at(variance: float, y: np.ndarray) -> object:
    return noise_estimate._Fit(variance, 0.0, y[:2], np.full(2, variance), np.ones(2), y > 0)


@pytest.mark.parametrize(
    ("ratio", "taken"), [(1.0, False), (0.96, False), (0.94, True), (0.51, True), (0.49, False)]
)
def test_the_differences_are_taken_where_their_sigma_is_below_095_and_above_05(
    ratio: float, taken: bool
) -> None:
    y = np.linspace(0.1, 0.9, 9)
    channels, colour = _fit_at(1e-4, y), _fit_at(1e-4 * ratio**2, y)
    assert noise_estimate._reads_texture(channels, colour, 0.5) is taken
    assert not noise_estimate._reads_texture(None, colour, 0.5)
    assert not noise_estimate._reads_texture(channels, None, 0.5)
