"""Tests for kpn/infer/noise_patches.py: the patch statistics of the noise estimate."""

from __future__ import annotations

import numpy as np
import pytest

from kpn.infer.noise_patches import (
    CHOSEN_BIAS,
    DETAIL_STEP,
    IMMERKAER,
    PATCH,
    PLANE,
    SAMPLING_SCALE,
    chi2_quantile,
    detail_variance,
    fine_and_coarse,
    high_pass,
    patch_details,
    plane_residual,
    sample_patches,
)


def test_plane_residual_is_the_projection_off_planes() -> None:
    projection = plane_residual()
    np.testing.assert_allclose(projection, projection.T, atol=1e-6)
    np.testing.assert_allclose(projection @ projection, projection, atol=1e-6)
    assert round(float(np.trace(projection))) == PATCH * PATCH - PLANE
    y, x = np.mgrid[0:PATCH, 0:PATCH]
    plane = (0.3 + 0.02 * x - 0.05 * y).ravel()
    np.testing.assert_allclose(plane @ projection, 0.0, atol=1e-5)
    bump = ((x - 3.0) ** 2).ravel()  # curvature is not a plane
    assert np.linalg.norm(bump @ projection) > 1.0


@pytest.mark.parametrize(("dof", "expected"), [(46, 71.201), (22, 40.289), (100, 135.807)])
def test_chi2_quantile_known_values(dof: int, expected: float) -> None:
    """Against chi-squared's 99% points (scipy.stats.chi2.ppf(0.99, dof))."""
    assert chi2_quantile(dof, 0.99) == pytest.approx(expected, rel=5e-3)


def test_high_pass_known_values() -> None:
    """Immerkaer's kernel: unit norm, zero on planes, and every step-th value."""
    assert float((IMMERKAER**2).sum()) == pytest.approx(1.0)
    y, x = np.mgrid[0:PATCH, 0:PATCH].astype(np.float32)
    np.testing.assert_allclose(high_pass((0.2 + 0.1 * x - 0.3 * y)[None]), 0.0, atol=1e-6)
    rng = np.random.default_rng(0)
    squares = rng.standard_normal((5, PATCH, PATCH)).astype(np.float32)
    full = high_pass(squares)
    assert full.shape == (5, PATCH - 2, PATCH - 2)
    centre = (IMMERKAER * squares[:, 2:5, 3:6]).sum(axis=(1, 2))  # output (2, 3)
    np.testing.assert_allclose(full[:, 2, 3], centre, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(high_pass(squares, DETAIL_STEP), full[:, ::2, ::2])
    # the values a set reads, as one product: the strided ones, row after row
    np.testing.assert_allclose(
        patch_details(squares.reshape(5, -1)),
        full[:, ::2, ::2].reshape(5, 9),
        rtol=1e-5,
        atol=1e-6,
    )


def _noise_details(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """High-pass values of ``count`` unit noise patches and which pass the flatness test."""
    pixels = rng.standard_normal((count, PATCH * PATCH)).astype(np.float32)
    residuals = pixels @ plane_residual()
    flat = (residuals**2).sum(axis=1) <= chi2_quantile(PATCH * PATCH - PLANE, 0.99)
    return patch_details(pixels), flat


@pytest.mark.parametrize("count", [1, 2, 3, 10, 11])
def test_detail_variance_reads_the_median(count: int) -> None:
    """One partition, the median of an even count the mean of its two middles: what
    np.median gives, for odd and even counts of chosen values; nothing chosen is NaN."""
    rng = np.random.default_rng(count)
    details = rng.normal(size=(count, 9))
    chosen = rng.random(count) < 0.7
    chosen[0] = True
    median = np.median(np.abs(details[chosen]))
    expected = (median / 0.6744897501960817) ** 2 / CHOSEN_BIAS
    assert detail_variance(details, chosen) == pytest.approx(expected, rel=1e-12)
    assert np.isnan(detail_variance(details, np.zeros(count, bool)))


def test_detail_variance_is_unbiased_on_chosen_noise() -> None:
    """The robust variance of the patches that pass the 99% test, over CHOSEN_BIAS: 1."""
    details, flat = _noise_details(200_000, np.random.default_rng(3))
    assert flat.mean() == pytest.approx(0.99, abs=0.002)
    assert detail_variance(details, flat) == pytest.approx(1.0, abs=0.005)
    assert detail_variance(3 * details, flat) == pytest.approx(9.0, abs=0.05)


def test_sampling_scale_is_the_spread_on_noise() -> None:
    """n times the variance of a set's estimate on n noise patches: SAMPLING_SCALE, 20%."""
    rng = np.random.default_rng(4)
    estimates = [detail_variance(*_noise_details(500, rng)) for _ in range(200)]
    assert 500 * np.var(estimates) == pytest.approx(SAMPLING_SCALE, rel=0.2)


def test_sample_patches_grid_and_clip() -> None:
    rng = np.random.default_rng(0)
    image = rng.uniform(0.2, 0.8, (100, 80, 3)).astype(np.float32)
    patches, clipped = sample_patches(image, 1 << 20)
    assert patches.shape == (3 * 94 * 74, PATCH * PATCH) and not clipped.any()
    assert patches.dtype == np.float32
    np.testing.assert_array_equal(patches[0].reshape(PATCH, PATCH), image[:PATCH, :PATCH, 0])
    few, _ = sample_patches(image, 1000)
    assert 500 < len(few) <= 1000
    image[:10] = 1.0  # clipped white rows: the patches that reach them touch a clip
    _, clipped = sample_patches(image, 1 << 20)
    touching = (np.arange(94) < 10).repeat(74)
    np.testing.assert_array_equal(clipped, np.tile(touching, 3))
    empty, _ = sample_patches(image[:5], 1000)
    assert empty.shape == (0, PATCH * PATCH)


def test_coarse_power_is_the_high_pass_of_the_2x2_means() -> None:
    """fine_and_coarse's coarse power, by hand: the 2x2 means of a patch's top-left 6x6,
    their one high-pass value (3x3), squared, times 4."""
    squares = np.random.default_rng(2).standard_normal((3, PATCH, PATCH)).astype(np.float32)
    binned = squares[:, :6, :6].reshape(3, 3, 2, 3, 2).mean(axis=(2, 4))
    by_hand = 4 * np.mean((IMMERKAER * binned).sum(axis=(1, 2)) ** 2)
    fine, coarse = fine_and_coarse(squares.reshape(3, -1))
    assert coarse == pytest.approx(by_hand, rel=1e-5)
    assert fine == pytest.approx(np.mean(high_pass(squares, DETAIL_STEP) ** 2), rel=1e-5)


def test_fine_and_coarse_tell_white_from_smoothed_noise() -> None:
    rng = np.random.default_rng(1)
    white = rng.standard_normal((4000, PATCH * PATCH))
    fine, coarse = fine_and_coarse(white)
    assert fine == pytest.approx(1.0, rel=0.05) and coarse == pytest.approx(1.0, rel=0.1)
    squares = rng.standard_normal((4000, PATCH + 1, PATCH + 1))
    smoothed = (
        squares[:, 1:, 1:] + squares[:, :-1, 1:] + squares[:, 1:, :-1] + squares[:, :-1, :-1]
    ) / 4
    fine, coarse = fine_and_coarse(smoothed.reshape(-1, PATCH * PATCH))
    assert coarse / fine > 4
