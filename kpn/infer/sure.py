"""How far to trust the network, region by region, without the clean image: a blend
towards the input chosen by Stein's unbiased risk estimate (SURE).

A network trained on some photos over-smooths others: texture finer than its training
photos held looks like noise to it, and at low noise removing it costs more than the noise
it removes (the shipped design network alone leaves scikit-image's astronaut 0.22 dB
*worse* than its noisy input at ISO 800). The blend ``h = y + lambda (f(y) - y)`` of the
noisy image ``y`` and the network's output ``f(y)`` has, for Gaussian noise of per-pixel
variance ``v``, the unbiased estimate of its squared error (Stein 1981)

    SURE(lambda) = lambda^2 sum r^2 - sum v + 2 sum v (1 + lambda (df_i/dy_i - 1)),

``r = f(y) - y``, smallest at ``lambda = sum v (1 - df_i/dy_i) / sum r^2``: a closed form
that needs neither the clean image nor training. ``v`` is the Gaussian-Poissonian variance
at the noisy value, ``(a + 65535 max(y, 0) b) / 65535^2`` (unbiased for the variance at
the clean value but for the clamp at 0); for the signal-dependent part of the noise the
estimate is an approximation, which the benchmark photos bear out: the weight matched the
one computed from the clean photo to 0.01. The divergence ``df_i/dy_i`` is Monte-Carlo's
(Ramani, Blu and Unser 2008): ``delta_i (J delta)_i`` with ``delta`` a fixed Rademacher
probe and ``J delta`` the network's derivative along it, which ``infer.sure_divergence``
takes from

- ``one_pass`` (:func:`sure_blend_one_pass`): the network's own pass, carrying the probe
  through its kernels and alphas, plus their response sampled on a quarter of the pixels
  (:mod:`kpn.model.linearised`): the blend takes 1.7 times the network alone on a 24 Mpx
  photo (the design, post_diff);
- ``two_pass`` (:func:`sure_blend`): a second pass on a perturbed input, by finite
  differences, ``(f(y + eps delta) - f(y)) / eps``: twice a plain pass.

On the benchmark photos the two blends are within 0.005 dB of each other (design §13).
The sums run over a square window around each pixel (its part inside the
image), so that a textured region keeps its texture while a flat one is denoised fully;
``lambda`` is clipped to [0, 1]: never further than the network, never past the input. At
vanishing noise ``v`` vanishes, and so does ``lambda``: the output tends to the input.

Every profile kpn accepts (a, b up to float32's largest value) gives a finite blend: the
per-pixel sums are divided by the image's largest ``v`` when that exceeds 1 (the weight is
their ratio, which the scale leaves as it is; a photo's sums are not scaled at all), and a
chunk of rows whose float32 sums or blend overflow (from ``b`` near 1e34 float32 wrote NaN)
is computed again in float64, where ``v`` of any float32 pixel and profile fits. Photos
keep float32's speed and memory. The probe's step is at
most ``PROBE_STEP`` times the image's own scale, so that the perturbed input stays in the
range the network computes in (float16's for vkdt-f16) even when the profile claims noise
far larger than the image.

vkdt has no such stage.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from kpn.config import SureSplit

U16 = 65535.0
# infer.sure_split -> the parts of the residual weighed apart: all of it, or its luma (the
# channels' mean) and its chroma (design §13)
SPLITS = {"none": 1, "luma_chroma": 2}
# weights beyond it are clipped to [0, 1] all the same; bounded before the shrinkage's
# squares, a part without residual (a grey image's chroma: its energy 0, its weight
# inf) gives the one weight, not inf - inf
WEIGHT_BOUND = 1e3
PROBE_SEED = 0x5E1
PROBE_STEP = 0.1  # eps, in units of the image's rms noise sigma
ROWS = 256  # rows per chunk of the per-pixel sums: bounded temporaries on large photos


def noise_variance(noisy: Tensor, a: float, b: float) -> Tensor:
    """Variance of docs/design.md §8's noise at the noisy values: ``[...] -> [...]``."""
    return (a + U16 * b * noisy.clamp(min=0)) / U16**2


def probe(shape: tuple[int, ...], seed: int = PROBE_SEED) -> np.ndarray:
    """A Rademacher probe, int8 +-1 per value (a quarter of float32's memory), the same for
    every call with ``seed``."""
    signs = np.random.default_rng(seed).integers(0, 2, size=shape, dtype=np.int8)
    return signs * np.int8(2) - np.int8(1)


def probe_step(noisy: np.ndarray, a: float, b: float) -> float:
    """The finite difference's step: ``PROBE_STEP`` times the image's rms noise sigma, but
    at most ``PROBE_STEP`` times its scale, ``max(1, max |y|)``; 0 for an image without
    noise.

    The cap binds only for noise larger than the image's brightest value (a profile no
    camera has): there the network is nearly linear over the image's scale, and a step of
    0.1 sigma would leave the range it computes in (float16 holds 65504).
    """
    mean_variance = (a + U16 * b * float(np.maximum(noisy, 0).mean(dtype=np.float64))) / U16**2
    scale = max(1.0, float(np.abs(noisy).max(initial=0.0)))
    return PROBE_STEP * min(mean_variance**0.5, scale)


def _running_mean(lines: Tensor, window: int) -> Tensor:
    """Mean of each row of ``[N,L]`` over the ``window`` entries about each entry, its
    part inside the row: ``[N,L] -> [N,L]`` in ``lines``' dtype, by differences of a
    float64 cumulative sum (a few operations per entry, whatever the window)."""
    sums = F.pad(lines.double().cumsum(1), (1, 0))
    low, high = _window_bounds(lines.shape[1], window)
    return ((sums[:, high] - sums[:, low]) / (high - low)).to(lines.dtype)


def _window_bounds(length: int, window: int) -> tuple[Tensor, Tensor]:
    """``([L], [L])``: where the ``window`` entries about each of ``length`` entries start
    and end (exclusive), their part inside the line."""
    index = torch.arange(length)
    return (index - window // 2).clamp(min=0), (index + window // 2 + 1).clamp(max=length)


def _window_mean(plane: Tensor, window: int) -> Tensor:
    """Mean of ``[H,W]`` over the ``window`` x ``window`` square about each pixel, its part
    inside the image; ``window`` 0: the whole image's mean everywhere. Separable (the
    inside part of a square is a rectangle), in chunks of ``ROWS`` lines."""
    if window == 0:
        return torch.full_like(plane, float(plane.mean(dtype=torch.float64)))
    height, width = plane.shape
    out = torch.empty_like(plane)
    for top in range(0, height, ROWS):
        out[top : top + ROWS] = _running_mean(plane[top : top + ROWS], window)
    for left in range(0, width, ROWS):
        columns = slice(left, left + ROWS)
        out[:, columns] = _running_mean(out[:, columns].T, window).T
    return out


def risk_sums(
    noisy: np.ndarray,
    denoised: np.ndarray,
    probed: np.ndarray,
    signs: np.ndarray,
    step: float | None,
    a: float,
    b: float,
    split: SureSplit = "none",
) -> tuple[Tensor, Tensor]:
    """SURE's two per-pixel sums over the channels, ``sum v (1 - df/dy)`` and ``sum r^2``,
    of each part the blend weighs apart: with ``split`` ``"none"`` the residual ``r``
    itself, with ``"luma_chroma"`` its luma (the channels' mean, in each) and its chroma
    (what is left), whose derivative's diagonal is the projection's: ``1/3 - delta_i
    mean_c (J delta)`` and ``2/3 - delta_i ((J delta)_i - mean_c (J delta))``.

    Args:
        noisy: ``[H,W,3]`` the network's input ``y``.
        denoised: ``[H,W,3]`` its output ``f(y)``.
        probed: ``[H,W,3]`` its output ``f(y + step signs)``; with ``step`` None, its
            derivative along the probe itself (one pass, :func:`sure_blend_one_pass`).
        signs: ``[H,W,3]`` int8, the Rademacher probe.
        step: the probe's step (> 0), or None.
        a, b: the noise profile, 0..65535 scale.
        split: which parts of the residual get a weight of their own (:data:`SPLITS`).

    Returns:
        two ``[P,H,W]`` float32, P the split's parts (1 or 2), both divided by
        :func:`sums_scale`. ``v`` of a float32 pixel and profile can overflow float32 (b
        near 1e34 at a pixel of 1): a chunk whose float32 sums are not all finite is summed
        again in float64.
    """
    height, width = noisy.shape[:2]
    scale = sums_scale(noisy, a, b)
    reduction = torch.empty(SPLITS[split], height, width)
    residual = torch.empty(SPLITS[split], height, width)
    for top in range(0, height, ROWS):
        rows = slice(top, top + ROWS)
        arrays = (noisy[rows], denoised[rows], probed[rows], signs[rows])
        sums = _chunk_sums(*arrays, step, a, b, scale, split, torch.float32)
        if not all(bool(part.isfinite().all()) for part in sums):
            wide = _chunk_sums(*arrays, step, a, b, scale, split, torch.float64)
            sums = tuple(map(_narrow, wide))
        reduction[:, rows], residual[:, rows] = sums
    return reduction, residual


def _chunk_sums(
    noisy: np.ndarray,
    denoised: np.ndarray,
    probed: np.ndarray,
    signs: np.ndarray,
    step: float | None,
    a: float,
    b: float,
    scale: float,
    split: SureSplit,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    """:func:`risk_sums` of a chunk of rows in ``dtype``, divided by ``scale``:
    ``[h,W,3] x 4 -> [P,h,W], [P,h,W]``."""
    y, f = (torch.from_numpy(values).to(dtype) for values in (noisy, denoised))
    along = torch.from_numpy(probed).to(dtype)  # J delta: the derivative along the probe
    if step is not None:  # ... by a finite difference
        along = (along - f) / step
    delta = torch.from_numpy(signs).to(dtype)
    variance = noise_variance(y, a, b)
    residual = f - y
    if split == "none":
        reductions = [(variance * (1 - delta * along)).sum(-1)]
        residuals = [residual.square().sum(-1)]
    else:  # the projections on the luma, P_Y x = mean_c(x) in each channel, and its rest
        along_luma = along.mean(-1, keepdim=True)
        residual_luma = residual.mean(-1, keepdim=True)
        reductions = [
            (variance * (1 / 3 - delta * along_luma)).sum(-1),
            (variance * (2 / 3 - delta * (along - along_luma))).sum(-1),
        ]
        residuals = [
            3 * residual_luma[..., 0].square(),
            (residual - residual_luma).square().sum(-1),
        ]
    reduction, residual = torch.stack(reductions), torch.stack(residuals)
    if scale != 1.0:  # a photo's sums stay exactly as they are
        reduction /= scale
        residual /= scale
    return reduction, residual


def sums_scale(noisy: np.ndarray, a: float, b: float) -> float:
    """What :func:`risk_sums` divides both sums by: the largest noise variance of the
    image when above 1 (only a profile no camera has), else 1."""
    brightest = max(0.0, float(np.max(noisy, initial=0.0)))
    return max(1.0, (a + U16 * b * brightest) / U16**2)


def _narrow(sums: Tensor) -> Tensor:
    """float64 sums as float32, saturated at float32's largest finite value."""
    largest = torch.finfo(torch.float32).max
    return sums.clamp(-largest, largest).float()


def weight_of_sums(
    reduction: Tensor, residual: Tensor, window: int, out: Tensor | None = None
) -> Tensor:
    """Each part's blend weight ``sum v (1 - df/dy) / sum r^2`` over each pixel's window,
    clipped to [0, 1]: ``[P,H,W], [P,H,W] -> [P,H,W]``; ``window`` odd, or 0 for the whole
    image. Two parts' weights are :func:`_shrunk` towards the one weight of both, which
    writes over ``residual``. ``out``: where the weights go (the blends pass
    ``reduction``, whose sums they need no more: on a 24 Mpx photo each plane is 96 MB)."""
    out = torch.empty_like(reduction) if out is None else out
    tiny = torch.finfo(residual.dtype).tiny
    if len(reduction) == 2:
        return _shrunk(reduction, residual, window, out)
    weight = _window_mean(reduction[0], window)
    weight /= _window_mean(residual[0], window).clamp_(min=tiny)
    out[0] = weight.clamp_(0, 1)
    return out


def _shrunk(reduction: Tensor, residual: Tensor, window: int, out: Tensor) -> Tensor:
    """The luma's and the chroma's weights, each shrunk towards the one weight ``w`` of
    both by its Monte-Carlo uncertainty: ``w + s d``, with ``d`` the part's own weight
    minus ``w``, ``s = d^2 / (d^2 + e^2)`` and ``e^2`` the variance of its own weight: the
    spread of its per-pixel ``reduction`` over the window, over their count, over the
    square of its mean residual energy. ``[2,H,W] x 2 -> [2,H,W]`` into ``out``, which may
    be ``reduction``; ``residual`` is written over with its window means (on a 24 Mpx
    photo each plane is 96 MB, and the blends need neither sum after).

    Why: a part's divergence is a probe's estimate, ``delta_i mean_c(J delta)``, whose
    cross terms over a pixel's other channels are of the order of the kernel's centre
    weight; where the part's residual is small (the luma of fur at the lowest noise) its
    weight came out 4.2 for 0.09 (design §13). The spread is an upper bound of that error
    (it holds the reduction's own variation too), so a well-measured weight keeps its own.
    """
    tiny = torch.finfo(residual.dtype).tiny
    for part in range(2):
        residual[part] = _window_mean(residual[part], window).clamp_(min=tiny)
    joint = _window_mean(reduction[0] + reduction[1], window).div_(residual[0] + residual[1])
    joint.clamp_(-WEIGHT_BOUND, WEIGHT_BOUND)
    rows, columns = _window_counts(reduction.shape[1:], window)
    for part in range(2):
        excess = _window_mean(reduction[part], window)
        error = _window_mean(reduction[part].square(), window).sub_(excess.square())
        error.clamp_(min=0).div_(rows[:, None]).div_(columns[None, :])
        error.div_(residual[part].square().clamp_(min=tiny))
        excess.div_(residual[part]).clamp_(-WEIGHT_BOUND, WEIGHT_BOUND).sub_(joint)
        shrink = excess.square()
        error.add_(shrink).clamp_(min=tiny)
        out[part] = excess.mul_(shrink.div_(error)).add_(joint).clamp_(0, 1)
    return out


def _window_counts(shape: torch.Size, window: int) -> tuple[Tensor, Tensor]:
    """``([H], [W])``: the rows and columns of each pixel's window inside the image (their
    product its pixels; ``window`` 0: all)."""
    counts = []
    for length in shape:
        low, high = _window_bounds(length, window or 2 * length + 1)  # 0: the whole line
        counts.append((high - low).float())
    return counts[0], counts[1]


def sure_blend(
    denoise: Callable[[np.ndarray], np.ndarray],
    noisy: np.ndarray,
    a: float,
    b: float,
    window: int,
    split: SureSplit = "none",
) -> np.ndarray:
    """``noisy`` denoised by ``denoise`` and blended towards ``noisy`` by SURE, the
    divergence from a second pass of ``denoise`` on the perturbed input.

    Args:
        denoise: the network on an ``[H,W,3]`` image, a new array.
        noisy: ``[H,W,3]`` float32 linear image with noise profile (a, b).
        window: odd side of the window of each pixel's blend weight; 0: one for the image.
        split: ``"none"``, one weight for the three channels; ``"luma_chroma"``, a weight
            for the residual's luma and one for its chroma (:data:`SPLITS`).

    Returns:
        ``[H,W,3]`` float32, a new array.
    """
    step = probe_step(noisy, a, b)
    if step == 0:  # no noise: the input is its own best estimate
        return noisy.copy()
    signs = probe(noisy.shape)
    perturbed = signs.astype(np.float32)
    perturbed *= step
    perturbed += noisy
    probed = denoise(perturbed)
    del perturbed
    denoised = denoise(noisy)
    reduction, residual = risk_sums(noisy, denoised, probed, signs, step, a, b, split)
    del probed, signs  # not needed for the window sums: memory back on large photos
    return _blend(noisy, denoised, weight_of_sums(reduction, residual, window, out=reduction))


def sure_blend_one_pass(
    denoise_along: Callable[[np.ndarray, np.ndarray, float], tuple[np.ndarray, np.ndarray]],
    noisy: np.ndarray,
    a: float,
    b: float,
    window: int,
    split: SureSplit = "none",
) -> np.ndarray:
    """:func:`sure_blend` with the divergence from the network's own pass.

    Args:
        denoise_along: ``(image, signs, step) -> (f(image), derivative)``, both new
            ``[H,W,3]`` float32 arrays: the network and its derivative along the probe
            ``signs`` (int8 ``[H,W,3]``), the kernels' own response taken at ``step``
            (:mod:`kpn.model.linearised`).
        noisy, a, b, window, split: as :func:`sure_blend`'s.

    Returns:
        ``[H,W,3]`` float32, a new array.
    """
    step = probe_step(noisy, a, b)
    if step == 0:
        return noisy.copy()
    signs = probe(noisy.shape)
    denoised, derivative = denoise_along(noisy, signs, step)
    reduction, residual = risk_sums(noisy, denoised, derivative, signs, None, a, b, split)
    del derivative, signs
    return _blend(noisy, denoised, weight_of_sums(reduction, residual, window, out=reduction))


def _blend(noisy: np.ndarray, denoised: np.ndarray, weights: Tensor) -> np.ndarray:
    """``denoised`` made ``noisy`` plus each part of ``denoised - noisy`` times its weight,
    in place: ``[H,W,3], [H,W,3], [P,H,W] -> [H,W,3]``, in float64 where float32
    overflows. P 1: ``y + lambda r``; P 2 (luma, chroma): ``y + lambda_C r + (lambda_Y -
    lambda_C) mean_c(r)``."""
    for top in range(0, noisy.shape[0], ROWS):
        rows = slice(top, top + ROWS)
        f, y = torch.from_numpy(denoised[rows]), torch.from_numpy(noisy[rows])
        blended = _blended(f, y, weights[:, rows, :, None])
        if not bool(blended.isfinite().all()):  # f - y of finite float32 overflowed
            blended = _blended(f.double(), y.double(), weights[:, rows, :, None]).float()
        f.copy_(blended)
    return denoised


def _blended(f: Tensor, y: Tensor, weights: Tensor) -> Tensor:
    """:func:`_blend` of a chunk: ``[h,W,3], [h,W,3], [P,h,W,1] -> [h,W,3]``."""
    residual = f - y
    out = residual * weights[-1] + y  # the one weight, or the chroma's
    if len(weights) == 2:
        out += (weights[0] - weights[1]) * residual.mean(-1, keepdim=True)
    return out
