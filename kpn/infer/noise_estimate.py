"""A noise profile (a, b) estimated from one noisy image, in the style of Foi et al. 2008.

A. Foi, M. Trimeche, V. Katkovnik, K. Egiazarian, "Practical Poissonian-Gaussian noise
modeling and fitting for single-image raw-data", IEEE TIP 17(10), 2008: the noise of a
pixel of clean value y has variance ``sigma^2(y) = alpha + beta * y``; separate signal from
noise with a high-pass (their wavelet detail) and a low-pass (their approximation), keep
smooth regions, group their pixels into level sets of equal low-pass value, estimate one
mean and one variance per set, and fit the straight line through the (mean, variance)
pairs by (iteratively re-weighted) least squares. Here:

- high-pass: Immerkaer's 3x3 kernel ``[[1,-2,1],[-2,4,-2],[1,-2,1]] / 6`` (J. Immerkaer,
  "Fast noise variance estimation", CVIU 64(2), 1996). It is blind to locally linear
  signal, and its squared weights sum to 1, so its output has the noise's variance.
- low-pass: the 7x7 mean, which sums to zero against the high-pass (the two are
  uncorrelated: the sets do not select on the noise they measure).
- smooth regions: pixels whose high-pass energy (5x5 mean of its square) stays below
  ``SMOOTH_LIMIT`` times the variance the current fit predicts; edges and texture fail.
- per level set: the variance from the median absolute high-pass (robust to what the
  smoothness test lets through), ``(median |d| / 0.6745)^2``.
- fit: weighted least squares with weights n / sigma^4 (the variance of a variance
  estimate), re-weighted with the fitted line; alpha and beta are kept >= 0.

Our scale: images are linear with white 1, and (a, b) live on docs/design.md §8's 0..65535 scale,
``sigma^2(x) = (a + 65535 * x * b) / 65535^2``: ``a = alpha * 65535^2``,
``b = beta * 65535``.

Limits: noise that is not independent from pixel to pixel (a demosaiced raw, a
denoised or compressed JPEG) is measured low by the high-pass; values clipped at 0 or 1
(8-bit files of dark or bright scenes) lower the variance of the sets at the ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from kpn.errors import KpnError
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


@dataclass(frozen=True)
class NoiseEstimate:
    """(a, b) on the 0..65535 scale, and what the fit saw."""

    a: float
    b: float
    samples: int  # smooth pixels (over all channels) in the last fit
    level_sets: int  # (mean, variance) pairs fitted

    def variance(self, x: np.ndarray | float) -> np.ndarray | float:
        """The fitted noise variance at linear value ``x`` (white 1)."""
        return (self.a + NOISE_SCALE * np.maximum(x, 0.0) * self.b) / NOISE_SCALE**2


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


def fit_line(means: np.ndarray, variances: np.ndarray, sizes: np.ndarray) -> tuple[float, float]:
    """(alpha, beta) >= 0 of ``variance = alpha + beta * mean`` by re-weighted least squares.

    Each set weighs n / sigma^4, the inverse variance of its variance estimate, with
    sigma^2 from the line fitted so far (the first pass weighs by n alone).
    """
    weights = sizes.copy()
    alpha = beta = 0.0
    for _ in range(6):
        alpha, beta = _weighted_line(means, variances, weights)
        model = np.maximum(alpha + beta * means, 1e-12 + 1e-6 * variances.max(initial=0.0))
        weights = sizes / model**2
    return alpha, beta


def _weighted_line(x: np.ndarray, v: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Weighted least squares v = alpha + beta x with alpha, beta >= 0."""
    sw, sx, sv = w.sum(), (w * x).sum(), (w * v).sum()
    sxx, sxv = (w * x * x).sum(), (w * x * v).sum()
    determinant = sw * sxx - sx * sx
    if determinant > 1e-12 * max(sw * sxx, 1e-300):
        alpha = (sxx * sv - sx * sxv) / determinant
        beta = (sw * sxv - sx * sv) / determinant
        if alpha >= 0 and beta >= 0:
            return float(alpha), float(beta)
    # on the boundary: the better of a line through 0 and a constant
    beta0 = max(sxv / sxx, 0.0) if sxx > 0 else 0.0
    alpha0 = max(sv / sw, 0.0)
    through_zero = (w * (v - beta0 * x) ** 2).sum()
    constant = (w * (v - alpha0) ** 2).sum()
    return (0.0, float(beta0)) if through_zero < constant else (float(alpha0), 0.0)


def estimate_noise(image: np.ndarray, where: str = "image") -> NoiseEstimate:
    """Estimate the Poissonian-Gaussian noise profile of a noisy linear image.

    Args:
        image: ``[H,W,3]`` or ``[H,W]`` linear values, white 1, finite.
        where: names the image in error messages.

    Returns:
        :class:`NoiseEstimate` with (a, b) on the 0..65535 scale.

    Raises:
        KpnError: the image is too small, or too little of it is smooth, to fit.
    """
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.dtype.kind not in "fiu":
        raise KpnError(f"{where}: cannot estimate noise of an array of shape {list(array.shape)}")
    if not np.isfinite(array).all():
        raise KpnError(f"{where}: cannot estimate noise: the image holds NaN or Inf")
    y, d, e = _samples(array)
    too_small = (
        f"{where}: {array.shape[1]} x {array.shape[0]} is too small to estimate its noise "
        f"(needs {MIN_SAMPLES} pixels {BORDER} from the edge): give the profile"
    )
    if len(y) < MIN_SAMPLES:
        raise KpnError(too_small)
    keep = np.ones(len(y), dtype=bool)
    alpha = beta = 0.0
    sets = 0
    for round_ in range(ROUNDS):
        if round_ > 0:
            predicted = np.maximum(alpha + beta * np.maximum(y, 0.0), 1e-20)
            keep = e <= SMOOTH_LIMIT * predicted
            if keep.sum() < MIN_SAMPLES:
                raise KpnError(
                    f"{where}: too little of the image is smooth ({int(keep.sum())} pixels) "
                    "to estimate its noise: give the profile"
                )
        means, variances, sizes = _level_sets(y[keep], d[keep])
        sets = len(means)
        alpha, beta = fit_line(means, variances, sizes)
    a, b = alpha * NOISE_SCALE**2, beta * NOISE_SCALE
    if not (math.isfinite(a) and math.isfinite(b)):  # pragma: no cover - finite input
        raise KpnError(f"{where}: the noise fit did not converge: give the profile")
    return NoiseEstimate(float(a), float(b), int(keep.sum()), sets)
