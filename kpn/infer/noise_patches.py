"""The patch statistics of the noise estimate (docs/design.md §15): patches sampled from an
image, their residual after the best plane (whose energy tells noise alone from texture),
the noise variance of a set of patches from their high-pass (Immerkaer 1996, robustly as
Foi et al. 2008 do per level set), and the test for noise correlated between neighbouring
pixels.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

PATCH = 7  # side of a patch
PLANE = 3  # dimensions of a plane (1, x, y): the residual has PATCH^2 - 3
IMMERKAER = np.array(((1, -2, 1), (-2, 4, -2), (1, -2, 1)), dtype=np.float32) / 6  # unit norm
MAD_TO_SIGMA = 1.0 / 0.6744897501960817  # Gaussian: sigma = median |d| / Phi^-1(3/4)
# the robust variance of noise-alone patches chosen below chi-squared's 99% point, over the
# variance (simulated, 200000 unit Gaussian patches): the choice drops the loudest 1%
CHOSEN_BIAS = 0.993
# n times the variance of that estimate over its square, on n patches of noise (simulated)
SAMPLING_SCALE = 0.6
# the high-pass values read: every other one along each axis, 9 of a 7x7 patch's 25 (they
# overlap less, and the median over them, the fit's main cost, is three times as fast)
DETAIL_STEP = 2


def _placed(kernel: np.ndarray, step: int) -> np.ndarray:
    """``[PATCH^2, m]``: ``kernel`` at every ``step``-th of its valid positions in a
    patch, row after row, so that a flattened patch's correlation with it there is one
    matrix product (a quarter of the time of :func:`high_pass`'s strided slices)."""
    side = kernel.shape[0]
    starts = range(0, PATCH - side + 1, step)
    placed = np.zeros((PATCH, PATCH, len(starts) ** 2), dtype=np.float32)
    for n, (i, j) in enumerate(itertools.product(starts, starts)):
        placed[i : i + side, j : j + side, n] = kernel
    return placed.reshape(PATCH * PATCH, -1)


# [PATCH^2, 9]: the high-pass values a set reads (patch_details), and the 3x3 means under them
DETAIL_WEIGHTS = _placed(IMMERKAER, DETAIL_STEP)
LEVEL_WEIGHTS = _placed(np.full((3, 3), 1 / 9, dtype=np.float32), DETAIL_STEP)
# [PATCH^2, 1]: the high-pass of a patch's 2x2 means (its top-left 6x6), fine_and_coarse's
COARSE_WEIGHTS = _placed(np.kron(IMMERKAER, np.full((2, 2), 0.25, dtype=np.float32)), PATCH)


def sample_patches(
    image: np.ndarray,
    target: int,
    least: int = 0,
    steps: tuple[int, int] | None = None,
    clips: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """About ``target`` patches of every channel on an even grid, and which touch a clip.

    ``[H,W,C] -> ([N, PATCH^2] float32, [N] bool)``, channel after channel, each on the
    same grid. The grid's steps (down, across) are :func:`grid_steps`'s, or ``steps``. A
    patch touches a clip where it holds one of its channel's :func:`clip_values`
    (``clips``, where the caller has them).
    """
    height, width, channels = image.shape
    if height < PATCH or width < PATCH:
        return np.empty((0, PATCH * PATCH), dtype=np.float32), np.empty(0, dtype=bool)
    down, across = steps or grid_steps(height, width, channels, target, least)
    clips = clip_values(image) if clips is None else clips
    patches, clipped = [], []
    for channel in range(channels):
        grid = sliding_window_view(image[:, :, channel], (PATCH, PATCH))[::down, ::across]
        flat = grid.reshape(-1, PATCH * PATCH).astype(np.float32, copy=False)
        touches = np.zeros(len(flat), dtype=bool)
        for value in clips[channel]:
            touches |= (flat == value).any(axis=1)
        patches.append(flat)
        clipped.append(touches)
    return np.concatenate(patches), np.concatenate(clipped)


def clip_values(image: np.ndarray) -> list[np.ndarray]:
    """Per channel of ``[H,W,C]``, its lowest and highest value where more than one pixel
    holds it: an image clipped at black or white holds it in many, a noisy unclipped one
    in one pixel each."""
    values = []
    for plane in np.ascontiguousarray(np.moveaxis(image, 2, 0)):  # 3x as fast as strided
        extremes = (plane.min(), plane.max())
        values.append(np.array([v for v in extremes if np.count_nonzero(plane == v) > 1]))
    return values


def grid_steps(height: int, width: int, channels: int, target: int, least: int) -> tuple[int, int]:
    """(down, across): the smallest grid steps whose product is at least the number of
    patches of every channel over ``target`` (the count is ``target`` or a few percent more,
    for whole rows), or 1 where that would leave fewer than ``least`` of an image that has
    them."""
    rows, columns = height - PATCH + 1, width - PATCH + 1
    down, across = _steps(channels * rows * columns / target)
    if channels * math.ceil(rows / down) * math.ceil(columns / across) < least:
        down = across = 1
    return down, across


def _steps(ratio: float) -> tuple[int, int]:
    """(down, across) grid steps whose product is at least ``ratio``, about equal."""
    if ratio <= 1:
        return 1, 1
    down = math.ceil(math.sqrt(ratio))
    return down, math.ceil(ratio / down)


@functools.cache
def plane_residual() -> np.ndarray:
    """``[PATCH^2, PATCH^2]``: the projection of a flattened patch onto the complement of
    the planes ``c0 + c1 x + c2 y`` (symmetric, idempotent, rank PATCH^2 - 3)."""
    y, x = np.mgrid[0:PATCH, 0:PATCH] - (PATCH - 1) / 2
    basis = np.stack((np.ones(PATCH * PATCH), x.ravel(), y.ravel()), axis=1)
    q, _ = np.linalg.qr(basis)
    return (np.eye(PATCH * PATCH) - q @ q.T).astype(np.float32)


def chi2_quantile(dof: int, probability: float) -> float:
    """The ``probability`` quantile of chi-squared with ``dof`` degrees of freedom, by
    Wilson and Hilferty's cube-root approximation (within 0.5% for dof >= 20)."""
    z = NormalDist().inv_cdf(probability)
    return dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3


def high_pass(squares: np.ndarray, step: int = 1) -> np.ndarray:
    """Immerkaer's 3x3 high-pass of each of ``[n, s, s]``, valid part, every ``step``-th
    value along each axis: ``[n, ceil((s-2)/step), ...]``. Blind to planes; white noise
    keeps its variance through it. Computed as it factors, ``[1,-2,1]`` down, then
    ``[1,-2,1] / 6`` across (6 products a value, not 9)."""
    side = squares.shape[-1] - 2
    rows = squares[:, 0:side:step] - 2 * squares[:, 1 : 1 + side : step]
    rows += squares[:, 2 : 2 + side : step]
    out = rows[:, :, 0:side:step] - 2 * rows[:, :, 1 : 1 + side : step]
    out += rows[:, :, 2 : 2 + side : step]
    return out / 6  # a Python number keeps the array's dtype


def patch_details(pixels: np.ndarray) -> np.ndarray:
    """``[N, PATCH^2] -> [N, 9]``: the high-pass values a set's variance reads, every
    ``DETAIL_STEP``-th of each patch's (:func:`high_pass`'s, as one product)."""
    return pixels @ DETAIL_WEIGHTS


def local_levels(pixels: np.ndarray) -> np.ndarray:
    """``[N, PATCH^2] -> [N, 9]``: the 3x3 mean around each of :func:`patch_details`'
    values: the signal whose noise a high-pass value holds, where a patch's noise level
    varies across it (its own texture, or the brightness under colour differences)."""
    return pixels @ LEVEL_WEIGHTS


def detail_variance(details: np.ndarray, chosen: np.ndarray) -> float:
    """The noise variance of the ``chosen [n] bool`` of patches whose high-pass values are
    ``details [n, m]``: ``(median |d| / 0.6745)^2`` over all their values (robust to the
    texture the choice lets through), divided by :data:`CHOSEN_BIAS`. The median by one
    partition (``np.median`` partitions twice for an even count, its checks on top: 40% of
    the estimate's time, called per set and round)."""
    magnitudes = np.abs(details[chosen]).ravel()
    if not len(magnitudes):
        return math.nan  # as np.median's of nothing, without its warning
    upper = len(magnitudes) // 2
    split = np.partition(magnitudes, upper)  # below upper: none larger than split[upper]
    median = split[upper] if len(magnitudes) % 2 else 0.5 * (split[:upper].max() + split[upper])
    return float((median * MAD_TO_SIGMA) ** 2 / CHOSEN_BIAS)


@dataclass(frozen=True)
class SetReader:
    """How a level set's noise variance is read from its patches: ``values(pixels [N,
    PATCH^2]) -> [N, m]`` once for all patches, ``variance(values [n, m], chosen [n]
    bool) -> float`` per set, ``sampling_scale``, n times the relative variance of that
    estimate on n patches of noise (the floor of the fit's uncertainty), and ``levels``,
    where given, ``levels(signal [N, PATCH^2]) -> [N, m]``: the signal under each value
    (else a patch's values share its mean)."""

    values: Callable[[np.ndarray], np.ndarray]
    variance: Callable[[np.ndarray, np.ndarray], float]
    sampling_scale: float
    levels: Callable[[np.ndarray], np.ndarray] | None = None


ROBUST_HIGH_PASS = SetReader(patch_details, detail_variance, SAMPLING_SCALE, local_levels)


def fine_and_coarse(patches: np.ndarray, details: np.ndarray | None = None) -> tuple[float, float]:
    """(fine, coarse) noise power of patches ``[n, PATCH^2]``: the mean square of
    Immerkaer's high-pass of their pixels (``details``, their :func:`patch_details`, where
    the caller has them), and of their 2x2 means times 4. White noise gives the same power
    at both; noise smoothed between neighbours (demosaicing, resizing, compression) less at
    the fine scale, and texture more at the coarse one."""
    details = patch_details(patches) if details is None else details
    fine = np.mean(details**2, dtype=np.float64)
    coarse = patches @ COARSE_WEIGHTS
    return float(fine), float(4 * np.mean(coarse**2, dtype=np.float64))
