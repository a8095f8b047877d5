"""A noise profile (a, b) estimated from one noisy image, from its flattest patches
(docs/design.md §15).

The noise of a pixel of clean value y has variance ``sigma^2(y) = alpha + beta * y``
(Foi et al. 2008's Poissonian-Gaussian model). The image's 7x7 patches, about
``TARGET_PATCHES`` of them on an even grid over every channel, are sorted by their mean
into level sets. Only patches whose residual after their best plane has the energy of
noise alone are read (weak texture, as in Liu, Tanaka and Okutomi 2013: below the 99%
point of chi-squared at the noise the fit predicts); each set's variance is the robust
variance of Immerkaer's high-pass of those (:mod:`kpn.infer.noise_patches`); a straight
line is fitted through the sets by re-weighted least squares (:func:`fit_line`), and the
selection and fit are repeated until the fit settles, or cycles between fits that agree
(:func:`_agreeing`). An RGB image's two colour differences are read the same way
(:func:`_colour_patches`): a grey texture, which each channel's high-pass takes for
noise, cancels there, and their fit is taken where it reads lower (:func:`_reads_texture`).

An image is refused, with a one-line :class:`~kpn.errors.KpnError` that says what to give
instead, when it is too small, too clipped, too flat (no noise to measure), too textured
(too few patches look like noise alone) or when its noise is correlated between
neighbouring pixels (demosaiced, resized or compressed: the per-pixel variance would be
measured low).

Our scale: images are linear with white 1, and (a, b) live on docs/design.md §8's
0..65535 scale, ``sigma^2(x) = (a + 65535 * x * b) / 65535^2``: ``a = alpha * 65535^2``,
``b = beta * 65535``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from kpn.errors import KpnError, mention
from kpn.infer.noise_patches import (
    PATCH,
    PLANE,
    ROBUST_HIGH_PASS,
    SetReader,
    chi2_quantile,
    clip_values,
    detail_variance,
    fine_and_coarse,
    grid_steps,
    patch_details,
    plane_residual,
    sample_patches,
)
from kpn.model.features import NOISE_SCALE

TARGET_PATCHES = 1 << 13  # patches sampled, over all channels (time: design §15)
LEVEL_SETS = 16  # most level sets of equal size (in patches) along the patch mean
MIN_SET = 64  # fewest patches for a level set's variance
FIRST_FRACTION = 0.25  # the first fit: each set's flattest quarter
FLAT_PROBABILITY = 0.99  # a patch of noise alone passes the flatness test with this
ROUNDS = 6  # most rounds of select, estimate, fit after the first
SETTLED = 0.02  # the fit has settled when its variance changes less than this (relative)
CYCLE = 3  # an unsettled refinement's last fits, taken where they agree (_agreeing)
AGREE = 4.0  # ... within this many combined standard errors of the fitted variance
MEDIAN_AGREE = 0.1  # ... and within this (relative) of each other at the median patch mean
MIN_PATCHES = 4096  # fewest unclipped patches for any estimate (about 45 x 45 RGB)
CLIPPED_LIMIT = 0.5  # refused when more of the patches touch black or white clipping
FLAT_LIMIT = 0.02  # too textured where fewer of the unclipped patches look like noise alone
# too textured where the flat patches' coarse noise power is not within this factor of the fine
TEXTURE_LIMIT = 1.5
SHAPE_LIMIT = 0.8  # too textured where their mean square is under this times their robust variance
CORRELATED_LIMIT = 4.0  # correlated noise where the coarse power is more than this times the fine
LEAST_PATCHES = 3 * MIN_PATCHES // 2  # the grid is every pixel where it would give fewer
# noise read from the colour differences where their sigma is below this times the channels'
COLOUR_BELOW = 0.95
COLOUR_LEAST = 0.5  # ... and above this: far below, the channels' noise is not independent
# RGB -> the colour differences (R - G) / sqrt 2, (R + G - 2B) / sqrt 6, and the brightness
# whose profile their noise has, (R + G) / 2, (R + G + 4B) / 6
SQRT2, SQRT6 = math.sqrt(2.0), math.sqrt(6.0)
COLOUR_DIFFERENCES = np.array(
    ((1 / SQRT2, -1 / SQRT2, 0), (1 / SQRT6, 1 / SQRT6, -2 / SQRT6)), dtype=np.float32
)
UNDER_DIFFERENCES = np.array(((1 / 2, 1 / 2, 0), (1 / 6, 1 / 6, 4 / 6)), dtype=np.float32)
NOISE_FLOOR = 1.0 / NOISE_SCALE  # sigma below one code of 16 bits: nothing to measure
GREYS = (0.1, 0.5, 0.9)  # where sigma is reported


@dataclass(frozen=True)
class NoiseEstimate:
    """(a, b) on the 0..65535 scale, their covariance, and what the fit saw."""

    a: float
    b: float
    covariance: tuple[tuple[float, float], tuple[float, float]]  # of (a, b)
    samples: int  # flat patches (over all channels) in the last fit
    patches: int  # unclipped patches sampled
    level_sets: int  # (mean, variance) pairs in the last fit
    correlation: float  # coarse over fine noise power: 1 for white noise
    shape: float  # mean square over robust variance of the flat high-pass: 1 for Gaussian noise
    colour: bool = False  # read from the colour differences (a grey texture cancels there)

    def variance(self, x: np.ndarray | float) -> np.ndarray | float:
        """The fitted noise variance at linear value ``x`` (white 1)."""
        return (self.a + NOISE_SCALE * np.maximum(x, 0.0) * self.b) / NOISE_SCALE**2

    def sigma(self, x: float) -> float:
        """The fitted noise standard deviation at linear value ``x`` (white 1)."""
        return math.sqrt(max(float(self.variance(x)), 0.0))

    def sigma_error(self, x: float) -> float:
        """The standard error of :meth:`sigma` at ``x``, relative (0.05: 5%), from the
        fit's covariance: half the relative error of the variance."""
        gradient = np.array((1.0, NOISE_SCALE * max(x, 0.0)))
        spread = float(gradient @ np.array(self.covariance) @ gradient)
        variance = self.a + NOISE_SCALE * max(x, 0.0) * self.b
        return 0.5 * math.sqrt(max(spread, 0.0)) / variance if variance > 0 else math.inf

    def describe(self) -> str:
        """One line for a user: (a, b) and sigma at 10/50/90% grey, each with its standard
        error, and the evidence."""
        da, db = (math.sqrt(max(self.covariance[i][i], 0.0)) for i in (0, 1))
        sigmas = "/".join(f"{self.sigma(x):.3g}" for x in GREYS)
        errors = "/".join(f"{100 * self.sigma_error(x):.0f}%" for x in GREYS)
        source = " of the colour differences" if self.colour else ""
        return (
            f"a {self.a:.4g} +- {da:.2g}, b {self.b:.4g} +- {db:.2g}; sigma {sigmas} at "
            f"10/50/90% grey +- {errors}; {self.samples} of {self.patches} patches{source} "
            f"flat, {self.level_sets} level sets"
        )


def fit_line(means: np.ndarray, variances: np.ndarray, sizes: np.ndarray) -> tuple[float, float]:
    """(alpha, beta) >= 0 of ``variance = alpha + beta * mean`` by re-weighted least squares.

    Each set weighs n / sigma^4, the inverse variance of its variance estimate, with
    sigma^2 from the line fitted so far (the first pass weighs by n alone).
    """
    weights = sizes.copy()
    alpha = beta = 0.0
    for _ in range(6):
        alpha, beta = _weighted_line(means, variances, weights)
        weights = sizes / _model(alpha, beta, means, variances) ** 2
    return alpha, beta


def _model(alpha: float, beta: float, means: np.ndarray, variances: np.ndarray) -> np.ndarray:
    """The line's variances at ``means``, kept above a tiny floor (weights divide by them)."""
    return np.maximum(alpha + beta * means, 1e-12 + 1e-6 * variances.max(initial=0.0))


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


def line_covariance(
    means: np.ndarray,
    variances: np.ndarray,
    sizes: np.ndarray,
    alpha: float,
    beta: float,
    sampling_scale: float = ROBUST_HIGH_PASS.sampling_scale,
) -> np.ndarray:
    """``[2,2]`` covariance of (alpha, beta) from the weighted fit: the inverse normal
    matrix times the residuals' scale, at least ``sampling_scale`` (a set's variance's
    :attr:`~kpn.infer.noise_patches.SetReader.sampling_scale`), so that two sets on a line
    are not exact."""
    model = _model(alpha, beta, means, variances)
    weights = sizes / model**2
    design = np.stack((np.ones_like(means), means), axis=1)
    normal = design.T @ (weights[:, None] * design)
    residual = (weights * (variances - model) ** 2).sum() / max(len(means) - 2, 1)
    return np.linalg.pinv(normal) * max(residual, sampling_scale)


@dataclass(frozen=True)
class _Patches:
    """The unclipped patches sorted by signal: ``pixels [N, 49]``, their signal ``y [N]``
    (their mean, or under colour differences the brightness's), the ``energy [N]`` of
    their residual after the best plane, what a set's variance reads, ``details [N, m]``,
    the signal under each of those, ``levels [N, m]`` (or ``[N, 1]``, ``y``), and the
    :func:`_settle_levels` of ``y``, ``settle [3]``."""

    pixels: np.ndarray
    y: np.ndarray
    energy: np.ndarray
    details: np.ndarray
    levels: np.ndarray
    settle: np.ndarray


@dataclass(frozen=True)
class _Fit:
    alpha: float
    beta: float
    means: np.ndarray
    variances: np.ndarray
    sizes: np.ndarray
    keep: np.ndarray  # [N] bool: the patches of the last fit


def _fit_sets(
    parts: list[slice],
    patches: _Patches,
    keep: np.ndarray,
    reader: SetReader,
    previous: _Fit | None = None,
) -> _Fit | None:
    """One fit through the level sets (``parts``: slices of the sorted patches) of the
    kept patches; sets with fewer than ``MIN_SET`` kept are left out. Each value a set's
    variance reads is divided by the ``previous`` fit's sigma at the signal under it
    (``patches.levels``), the variance multiplied by their mean square: the noise of a
    set's darkest and brightest patches, or pixels, differs, and a robust variance of the
    mixture would fall short of its mean. None where fewer than two sets remain."""
    values, expected = patches.details, np.ones(len(keep))
    if previous is not None:  # for all patches at once: the loop below is per set
        levels = np.maximum(patches.levels, 0.0)
        variance = np.maximum(previous.alpha + previous.beta * levels, 1e-30)
        values = values / np.sqrt(variance)
        expected = variance.mean(axis=1)  # [N]: what each patch's values were divided by
    # each set's count and means over its kept patches, at once (the sets are contiguous)
    starts = [part.start for part in parts]
    counts = np.add.reduceat(keep, starts, dtype=np.int64)
    totals = np.add.reduceat(
        np.where(keep[:, None], np.stack((patches.y, expected), axis=1), 0.0),
        starts,
        dtype=np.float64,
    )
    means, variances, sizes = [], [], []
    used = np.zeros_like(keep)
    for part, count, (total_y, total_expected) in zip(parts, counts, totals, strict=True):
        if count < MIN_SET:
            continue
        chosen = keep[part]
        means.append(float(total_y / count))
        variances.append(float(total_expected / count) * reader.variance(values[part], chosen))
        sizes.append(float(count))
        used[part] = chosen
    if len(means) < 2:
        return None
    arrays = np.array(means), np.array(variances), np.array(sizes)
    alpha, beta = fit_line(*arrays)
    return _Fit(alpha, beta, *arrays, used)


def _flattest(parts: list[slice], energy: np.ndarray) -> np.ndarray:
    """[N] bool: each level set's ``FIRST_FRACTION`` of lowest residual energy."""
    keep = np.zeros(len(energy), dtype=bool)
    for part in parts:
        count = max(MIN_SET, int(FIRST_FRACTION * (part.stop - part.start)))
        keep[part.start + np.argsort(energy[part], kind="stable")[:count]] = True
    return keep


def _refine(patches: _Patches, variance: SetReader) -> tuple[_Fit | None, bool]:
    """The fit of design §15 and whether it settled: first the flattest quarter of each
    set, then the patches whose residual energy noise alone explains, until the fitted
    variance changes by less than ``SETTLED``, or the last ``CYCLE`` fits of an unsettled
    refinement agree (:func:`_agreeing`). (None, False) where not even the first fit had
    two sets."""
    count = min(LEVEL_SETS, len(patches.y) // (4 * MIN_SET))
    edges = np.linspace(0, len(patches.y), count + 1).round().astype(int)
    parts = [slice(int(start), int(stop)) for start, stop in itertools.pairwise(edges)]
    fit = _fit_sets(parts, patches, _flattest(parts, patches.energy), variance)
    threshold = chi2_quantile(PATCH * PATCH - PLANE, FLAT_PROBABILITY)
    refined_fits: list[_Fit] = []
    for _ in range(ROUNDS):
        if fit is None:
            break
        predicted = fit.alpha + fit.beta * np.maximum(patches.y, 0.0)
        keep = patches.energy <= threshold * predicted
        refined = _fit_sets(parts, patches, keep, variance, fit)
        if refined is None:  # too few patches of any set look like noise alone
            return fit, False
        settled = _change(fit, refined, patches.settle) <= SETTLED
        fit = refined
        if settled:
            return fit, True
        refined_fits.append(fit)
    agreed = _agreeing(refined_fits[-CYCLE:], patches.settle, variance)
    return (fit, False) if agreed is None else (agreed, True)


def _agreeing(fits: list[_Fit], levels: np.ndarray, reader: SetReader) -> _Fit | None:
    """Of ``CYCLE`` fits that a refinement cycles through (a level set at the edge of
    ``MIN_SET`` chosen patches drops out and comes back, and the line's intercept with
    it), the one with the most level sets (then patches), where every two of them agree
    within ``AGREE`` combined standard errors at ``levels``, the :func:`_settle_levels`, and within
    ``MEDIAN_AGREE`` at the median; None where they do not (or are fewer). The one with
    most sets measures where the others extrapolate."""
    if len(fits) < CYCLE:
        return None
    design = np.stack((np.ones_like(levels), levels), axis=1)
    values, errors = [], []
    for fit in fits:
        spread = line_covariance(
            fit.means, fit.variances, fit.sizes, fit.alpha, fit.beta, reader.sampling_scale
        )
        values.append(design @ np.array((fit.alpha, fit.beta)))
        errors.append(np.sqrt(np.maximum(np.einsum("li,ij,lj->l", design, spread, design), 0)))
    for i, j in itertools.combinations(range(len(fits)), 2):
        if np.any(np.abs(values[i] - values[j]) > AGREE * np.hypot(errors[i], errors[j])):
            return None
        if abs(values[i][1] / max(values[j][1], 1e-30) - 1) > MEDIAN_AGREE:
            return None
    return max(fits, key=lambda fit: (len(fit.means), int(fit.keep.sum())))


def _change(old: _Fit, new: _Fit, levels: np.ndarray) -> float:
    """The largest relative change of the fitted variance at ``levels``, the
    :func:`_settle_levels`."""
    before = np.maximum(old.alpha + old.beta * levels, 1e-30)
    return float(np.max(np.abs((new.alpha + new.beta * levels) / before - 1)))


def _settle_levels(y: np.ndarray) -> np.ndarray:
    """``[3]``: the 10th, 50th and 90th percentile of the patch means ``y``, where a fit's
    change is judged."""
    return np.maximum(np.quantile(y, (0.1, 0.5, 0.9)), 0.0)


def _sorted_patches(
    patches: np.ndarray, reader: SetReader, signal: np.ndarray | None = None
) -> _Patches:
    """The bundle of :class:`_Patches` of ``patches [N, 49]``, sorted by their mean, or
    by the mean of their ``signal [N, 49]`` where the noise's signal is another image's
    (colour differences: the brightness's). A value's level is its patch's mean, or with
    ``signal`` the signal under it (``reader.levels``): a patch flat in its colour may be
    textured in its brightness, and so in its noise, where a flat patch is flat in both."""
    y = (patches if signal is None else signal).mean(axis=1)
    order = np.argsort(y, kind="stable")  # level sets are slices of the sorted patches
    patches, y = patches[order], y[order]
    residuals = patches @ plane_residual()
    energy = np.einsum("ij,ij->i", residuals, residuals)
    details = reader.values(patches)
    if signal is None or reader.levels is None:
        levels = y[:, None]
    else:
        levels = reader.levels(signal[order])
    return _Patches(patches, y, energy, details, levels, _settle_levels(y))


def estimate_noise(
    image: np.ndarray,
    where: str = "image",
    instead: str = "",
    *,
    reader: SetReader = ROBUST_HIGH_PASS,
    colour_differences: bool = True,
) -> NoiseEstimate:
    """Estimate the Poissonian-Gaussian noise profile of a noisy linear image.

    Args:
        image: ``[H,W,3]`` or ``[H,W]`` linear values, white 1, finite.
        where: names the image in error messages.
        instead: what a refusal tells the user to give instead (default: the profile as
            ``--noise-a``/``--noise-b`` or ``--nprof``, worded for the caller).
        reader: how a level set's variance is read from its patches (design §15: the
            robust variance of their high-pass; ``benchmarks/noise_estimation.py`` swaps
            in others).
        colour_differences: an RGB image's noise also read from its colour differences,
            where a grey texture cancels (design §15); False: from its channels alone.

    Returns:
        :class:`NoiseEstimate` with (a, b) on the 0..65535 scale.

    Raises:
        KpnError: one line naming ``where``: the image is too small, too clipped, too
            flat or too textured, or its noise is correlated between pixels.
    """
    instead = instead or (
        f"give the profile ({mention('noise_a')} and {mention('noise_b')}, or {mention('nprof')})"
    )
    array = _checked(image, where)
    clips = clip_values(array)
    sorted_patches = _sorted_patches(_unclipped(array, clips, where, instead), reader)
    fit, settled = _refine(sorted_patches, reader)
    # the colour fit is compared with the channels' fit: without one it is never taken
    use_colour = colour_differences and fit is not None
    colour = _colour_patches(array, clips, reader) if use_colour else None
    from_colour = False
    if colour is not None:
        colour_fit, colour_settled = _refine(colour, reader)
        from_colour = _reads_texture(fit, colour_fit, float(sorted_patches.settle[1]))
        if from_colour:
            sorted_patches, fit, settled = colour, colour_fit, colour_settled
    correlation, shape = _judge(sorted_patches, fit, settled, where, instead)
    assert fit is not None  # _judge refuses a missing fit
    kept = int(fit.keep.sum())
    scale = np.diag((NOISE_SCALE**2, NOISE_SCALE))
    spread = line_covariance(
        fit.means, fit.variances, fit.sizes, fit.alpha, fit.beta, reader.sampling_scale
    )
    return NoiseEstimate(
        a=float(fit.alpha * NOISE_SCALE**2),
        b=float(fit.beta * NOISE_SCALE),
        covariance=tuple(map(tuple, (scale @ spread @ scale).tolist())),  # type: ignore[arg-type]
        samples=kept,
        patches=len(sorted_patches.y),
        level_sets=len(fit.means),
        correlation=float(correlation),
        shape=shape,
        colour=from_colour,
    )


def _unclipped(array: np.ndarray, clips: list[np.ndarray], where: str, instead: str) -> np.ndarray:
    """The sampled patches of ``array`` that touch none of its ``clips``; refused
    (KpnError) where more than ``CLIPPED_LIMIT`` of them do or fewer than ``MIN_PATCHES``
    remain."""
    patches, clipped = sample_patches(array, TARGET_PATCHES, LEAST_PATCHES, clips=clips)
    if clipped.sum() > CLIPPED_LIMIT * len(patches) and len(patches) >= MIN_PATCHES:
        share = 100 * clipped.sum() / len(patches)
        raise KpnError(
            f"{where}: too clipped to estimate its noise ({share:.0f}% of its patches touch "
            f"black or white): {instead}"
        )
    if len(patches) - clipped.sum() < MIN_PATCHES:
        raise KpnError(
            f"{where}: {array.shape[1]} x {array.shape[0]} is too small to estimate its noise "
            f"(needs {MIN_PATCHES} patches of {PATCH} x {PATCH}, about 45 x 45 RGB pixels): "
            f"{instead}"
        )
    return patches[~clipped]


def _colour_patches(
    array: np.ndarray, clips: list[np.ndarray], reader: SetReader
) -> _Patches | None:
    """The sorted patches of an RGB ``array``'s two colour differences where none of the
    three channels touches a clip, about ``TARGET_PATCHES`` of them: ``(R - G) / sqrt 2``
    and ``(R + G - 2 B) / sqrt 6``, whose noise, independent between the channels, has
    the variance of the profile at ``(R + G) / 2`` and ``(R + G + 4 B) / 6``, while a
    grey texture cancels. None for another number of channels, or too few patches."""
    height, width, channels = array.shape
    if channels != 3:
        return None
    steps = grid_steps(height, width, 2, TARGET_PATCHES, LEAST_PATCHES)
    patches, clipped = sample_patches(array, 0, steps=steps, clips=clips)
    unclipped = ~clipped.reshape(3, -1).any(axis=0)
    if 2 * unclipped.sum() < MIN_PATCHES:
        return None
    rgb = patches.reshape(3, -1, PATCH * PATCH)[:, unclipped].reshape(3, -1)
    # each row of a mix's product is one difference's (or brightness's) patches
    differences, brightness = (
        (mix @ rgb).reshape(-1, PATCH * PATCH) for mix in (COLOUR_DIFFERENCES, UNDER_DIFFERENCES)
    )
    return _sorted_patches(differences, reader, brightness)


def _reads_texture(fit: _Fit | None, colour_fit: _Fit | None, level: float) -> bool:
    """Whether the colour differences' fit is the one to take: its sigma at ``level``
    (the channels' median patch mean) below ``COLOUR_BELOW`` times the channels' fit's
    (their patches hold a grey texture, which the differences cancel) and above
    ``COLOUR_LEAST`` times it (far below: the channels' noise is not independent, as a
    grey image's or a chroma-denoised one's; the differences would miss it)."""
    if fit is None or colour_fit is None:
        return False
    ours = fit.alpha + fit.beta * level
    theirs = colour_fit.alpha + colour_fit.beta * level
    return ours > 0 and COLOUR_LEAST**2 <= theirs / ours < COLOUR_BELOW**2


def _judge(
    patches: _Patches, fit: _Fit | None, settled: bool, where: str, instead: str
) -> tuple[float, float]:
    """(coarse to fine noise power, shape) of the fit's flat patches, or KpnError where
    they show no noise (too flat), correlated noise or texture (design §15)."""
    flat = patches.pixels if fit is None else patches.pixels[fit.keep]
    details = patch_details(flat)
    fine, coarse = fine_and_coarse(flat, details)
    if fine < NOISE_FLOOR**2:
        raise KpnError(
            f"{where}: too flat to estimate its noise (none measurable: a clean or "
            f"synthetic image needs no denoising): {instead}"
        )
    correlation = coarse / fine
    if correlation > CORRELATED_LIMIT:
        raise KpnError(
            f"{where}: its noise is correlated between neighbouring pixels (coarse to fine "
            f"noise power {correlation:.1f}: demosaiced, resized or compressed?), so its "
            f"estimate would be too low: {instead}"
        )
    kept, count = (0 if fit is None else int(fit.keep.sum())), len(patches.y)
    shape = math.nan if fit is None else _shape(patches, fit, details)
    textured = (
        not settled
        or kept < FLAT_LIMIT * count
        or not 1 / TEXTURE_LIMIT < correlation < TEXTURE_LIMIT
        or not shape >= SHAPE_LIMIT
    )
    if textured:
        raise KpnError(
            f"{where}: too textured to estimate its noise ({kept} of {count} patches look "
            f"like noise alone, coarse to fine power {correlation:.2f}, shape {shape:.2f}): "
            f"{instead}"
        )
    return correlation, shape


def _shape(patches: _Patches, fit: _Fit, details: np.ndarray) -> float:
    """The mean square of the flat patches' high-pass (``details``, of the fit's kept
    patches) over its robust variance, each value in units of the fitted variance: 1 for
    Gaussian noise, 0.45 for a sine (a regular texture the robust variance would read as
    noise)."""
    predicted = fit.alpha + fit.beta * np.maximum(patches.y[fit.keep], 0.0)
    scaled = details / np.sqrt(np.maximum(predicted, 1e-30))[:, None]
    return float(np.mean(scaled**2) / detail_variance(scaled, np.ones(len(scaled), bool)))


def _checked(image: np.ndarray, where: str) -> np.ndarray:
    """``image`` as float32 ``[H,W,C]``; KpnError for another shape or non-finite values."""
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.dtype.kind not in "fiu":
        raise KpnError(f"{where}: cannot estimate noise of an array of shape {list(array.shape)}")
    if not np.isfinite(array).all():
        raise KpnError(f"{where}: cannot estimate noise: the image holds NaN or Inf")
    return array.astype(np.float32, copy=False)
