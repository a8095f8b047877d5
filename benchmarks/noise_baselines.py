"""The noise estimators ``benchmarks/noise_estimation.py`` compares the adopted one
(:func:`kpn.infer.noise_estimate.estimate_noise`, docs/design.md §15) with. Each is
``estimate(image [H,W,C]) -> (a, b)`` on the 0..65535 scale, or raises KpnError.

- :func:`foi_fit`: kpn's estimator until issue 25, in the style of Foi et al. 2008
  (IEEE TIP 17(10)): Immerkaer's 3x3 high-pass and the 7x7 mean of every pixel, pixels
  whose 5x5 high-pass energy stays under 3x the fitted variance, 32 level sets, robust
  variance (median |d| / 0.6745)^2 per set, a weighted line, 3 rounds.
- :func:`chen_one_sigma`: G. Chen, F. Zhu, P. A. Heng, ICCV 2015: one Gaussian sigma from
  the eigenvalues of the covariance of all 7x7 patches (mean = median rule); (sigma^2, 0).
- :func:`liu_one_sigma`: X. Liu, M. Tanaka, M. Okutomi, IEEE TIP 22(12), 2013: weak-texture
  patches (gradient energy below the 99% point of noise alone at the current sigma,
  iterated) and the smallest eigenvalue of their covariance; (sigma^2, 0).
- :data:`CHEN_PER_SET`: the adopted estimator (its weak-texture patches, level sets, fit
  and refusals) with each set's variance from the eigenvalues of its patches' plane
  residuals instead of their robust high-pass: Chen's statistic divided by its mean on
  pure noise (:data:`CHEN_BIAS`), the first design tried for issue 25.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from kpn.errors import KpnError
from kpn.infer.noise_estimate import TARGET_PATCHES, fit_line
from kpn.infer.noise_patches import PATCH, SetReader, plane_residual, sample_patches
from kpn.model.features import NOISE_SCALE

HIGH_PASS = ((1.0, -2.0, 1.0), (-2.0, 4.0, -2.0), (1.0, -2.0, 1.0))  # / 6: unit norm
LOW_PASS = 7  # side of the mean that estimates the clean value
ENERGY = 5  # side of the window of the smoothness test
BORDER = max(LOW_PASS // 2, 1 + ENERGY // 2)  # centres closer to the edge are not used
SMOOTH_LIMIT = 3.0  # a smooth pixel's high-pass energy stays under 3x the noise variance
LEVEL_SETS = 32  # level sets of equal size (in pixels) along the low-pass value
MIN_SET = 256  # fewest pixels per level set
MIN_SAMPLES = 2048  # fewest smooth pixels for any estimate
MAX_PIXELS = 1 << 20  # pixels per channel sampled from a large image (rows spread evenly)
ROUNDS = 3  # fit, mask, refit
MAD_TO_SIGMA = 1.0 / 0.6744897501960817  # Gaussian: sigma = median |d| / Phi^-1(3/4)


def _row_bands(height: int, width: int) -> list[tuple[int, int]]:
    """Row ranges to sample: the whole image, or evenly spread bands of about
    ``MAX_PIXELS`` pixels in all, each with ``BORDER`` rows of context."""
    if height * width <= MAX_PIXELS:
        return [(0, height)]
    rows = 64 + 2 * BORDER
    count = max(1, MAX_PIXELS // (rows * width))
    starts = np.linspace(0, height - rows, count).round().astype(int)
    return [(int(start), int(start) + rows) for start in starts]


def _centres(maps: torch.Tensor, radius: int) -> torch.Tensor:
    """The values at the centres ``BORDER`` away from the band's edges, flattened, of a
    map whose first value belongs to centre ``radius`` (a valid filter of that radius)."""
    skip = BORDER - radius
    height = maps.shape[-2] - 2 * skip
    width = maps.shape[-1] - 2 * skip
    return maps[..., skip : skip + height, skip : skip + width].reshape(-1)


def _samples(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(low-pass y, high-pass d, high-pass energy e) of every usable pixel and channel."""
    height, width = image.shape[:2]
    kernel = torch.tensor(HIGH_PASS, dtype=torch.float64).div(6.0).view(1, 1, 3, 3)
    means, details, energies = [], [], []
    for top, bottom in _row_bands(height, width):
        if bottom - top <= 2 * BORDER or width <= 2 * BORDER:
            continue
        band = torch.from_numpy(np.ascontiguousarray(image[top:bottom], dtype=np.float64))
        planes = band.permute(2, 0, 1).unsqueeze(1)  # [C,1,h,w]: channels as a batch
        detail = F.conv2d(planes, kernel)  # radius 1
        energy = F.avg_pool2d(detail * detail, ENERGY, stride=1)  # radius 1 + ENERGY // 2
        mean = F.avg_pool2d(planes, LOW_PASS, stride=1)  # radius LOW_PASS // 2
        means.append(_centres(mean, LOW_PASS // 2))
        details.append(_centres(detail, 1))
        energies.append(_centres(energy, 1 + ENERGY // 2))
    if not means:
        return np.empty(0), np.empty(0), np.empty(0)
    return torch.cat(means).numpy(), torch.cat(details).numpy(), torch.cat(energies).numpy()


def _level_sets(y: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, robust variance, pixel count) of each level set of equal size along y."""
    count = min(LEVEL_SETS, len(y) // MIN_SET)
    order = np.argsort(y, kind="stable")
    means, variances, sizes = [], [], []
    for part in np.array_split(order, count):
        means.append(y[part].mean())
        variances.append((np.median(np.abs(d[part])) * MAD_TO_SIGMA) ** 2)
        sizes.append(len(part))
    return np.array(means), np.array(variances), np.array(sizes, dtype=np.float64)


def foi_fit(image: np.ndarray) -> tuple[float, float]:
    """kpn's estimator until issue 25 (module docstring)."""
    array = image if image.ndim == 3 else image[:, :, None]
    y, d, e = _samples(array)
    if len(y) < MIN_SAMPLES:
        raise KpnError("too small")
    keep = np.ones(len(y), dtype=bool)
    alpha = beta = 0.0
    for round_ in range(ROUNDS):
        if round_ > 0:
            keep = e <= SMOOTH_LIMIT * np.maximum(alpha + beta * np.maximum(y, 0.0), 1e-20)
            if keep.sum() < MIN_SAMPLES:
                raise KpnError("too little smooth")
        alpha, beta = fit_line(*_level_sets(y[keep], d[keep]))
    return alpha * NOISE_SCALE**2, beta * NOISE_SCALE


def _patches(image: np.ndarray) -> np.ndarray:
    """``[N, 49]`` float64: the adopted estimator's patch sample, unclipped ones."""
    patches, clipped = sample_patches(image, TARGET_PATCHES)
    return patches[~clipped].astype(np.float64)


# Chen's statistic on n patches of pure unit Gaussian noise, mean of 200000 / n draws
# (at least 20) of 7x7 patches' plane residuals, numpy seed 1
CHEN_BIAS_N = (48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 8192)
CHEN_BIAS = (
    0.058, 0.224, 0.453, 0.583, 0.726, 0.800, 0.877, 0.913,
    0.945, 0.961, 0.980, 0.982, 0.988, 0.994, 0.995,
)  # fmt: skip


def _chen(eigenvalues: np.ndarray) -> float:
    """Chen et al.'s noise variance from ascending eigenvalues: drop the largest until
    the mean of the rest is at most their median; the mean of those."""
    counts = np.arange(1, len(eigenvalues) + 1)
    means = np.cumsum(eigenvalues) / counts  # of the smallest 1, 2, ... eigenvalues
    below = np.searchsorted(eigenvalues, means, side="left")
    above = counts - np.searchsorted(eigenvalues, means, side="right")
    return float(means[np.flatnonzero(above >= below)[-1]])  # count 1 always qualifies


def _chen_set_variance(residuals: np.ndarray, chosen: np.ndarray) -> float:
    """Chen's statistic on the chosen plane residuals' covariance (the plane's 3 zeros
    dropped), divided by its mean on as many patches of pure noise."""
    count = int(chosen.sum())
    covariance = residuals.T @ (residuals * chosen[:, None]) / (count - 1)
    eigenvalues = np.linalg.eigvalsh(covariance.astype(np.float64))[3:]
    bias = np.interp(math.log(count), np.log(CHEN_BIAS_N), CHEN_BIAS)
    return _chen(eigenvalues) / float(bias)


CHEN_PER_SET = SetReader(lambda pixels: pixels @ plane_residual(), _chen_set_variance, 2 / 46)


def _centred_eigenvalues(patches: np.ndarray) -> np.ndarray:
    """Ascending eigenvalues of the covariance of ``patches [n, d]`` about their mean."""
    centred = patches - patches.mean(axis=0)
    return np.linalg.eigvalsh(centred.T @ centred / (len(patches) - 1))


def chen_one_sigma(image: np.ndarray) -> tuple[float, float]:
    """Chen, Zhu and Heng 2015 on all patches: one sigma (module docstring)."""
    variance = _chen(_centred_eigenvalues(_patches(image)))
    return variance * NOISE_SCALE**2, 0.0


def _gradient_energy(patches: np.ndarray) -> np.ndarray:
    """``[n]``: the sum of squared horizontal and vertical differences in each patch."""
    squares = patches.reshape(-1, PATCH, PATCH)
    return (np.diff(squares, axis=1) ** 2).sum(axis=(1, 2)) + (np.diff(squares, axis=2) ** 2).sum(
        axis=(1, 2)
    )


@functools.cache
def _gradient_threshold() -> float:
    """The 99% point of the gradient energy of unit Gaussian noise patches (simulated)."""
    noise = np.random.default_rng(0).standard_normal((100_000, PATCH * PATCH))
    return float(np.quantile(_gradient_energy(noise), 0.99))


def _weak_texture(patches: np.ndarray, variance_of, rounds: int = 8) -> tuple[float, np.ndarray]:
    """Liu et al.'s iteration: (variance, chosen) of the patches whose gradient energy
    stays under the noise-alone threshold at the variance of the previous choice."""
    energy = _gradient_energy(patches)
    chosen = np.ones(len(patches), dtype=bool)
    variance = variance_of(patches)
    for _ in range(rounds):
        new = energy <= _gradient_threshold() * variance
        if new.sum() < 2 * patches.shape[1] or np.array_equal(new, chosen):
            break
        chosen = new
        variance = variance_of(patches[chosen])
    return variance, chosen


def liu_one_sigma(image: np.ndarray) -> tuple[float, float]:
    """Liu, Tanaka and Okutomi 2013: one sigma (module docstring)."""
    variance, _ = _weak_texture(_patches(image), lambda p: _centred_eigenvalues(p)[0])
    return max(variance, 0.0) * NOISE_SCALE**2, 0.0
