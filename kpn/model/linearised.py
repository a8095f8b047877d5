"""The network's derivative along a probe, in the same pass as its output: the divergence
that SURE's blend needs (docs/design.md §13).

With every level's kernels and alphas fixed as the pass predicts them from the image y,
the network is a linear operator L on its input: the pyramid, each level's star kernels
and the blend up are linear in the image; only the MLP is not. So a pass that carries a
probe delta beside y, as channels 3..5 of every image (:func:`with_probe`), computes
``L delta`` for the price of filtering three more channels: the MLP reads the first three
channels only, the pyramid, apply, blend and float16 stores act on all six.

L misses the network's response to its own input: measured on the benchmark photos, the
design network's divergence is 0.03 to 0.07 larger than L's, and a blend from L alone is
up to 0.07 dB worse than the two-pass blend. Level 0's kernels and alpha make nearly all
of the difference, the coarser levels' at most 0.002 dB. So the pass samples level 0's
(:func:`kernel_response`): on every second row and column, a quarter of the pixels, the
MLP runs again on the features of ``X + eps X_delta``, and ``4 (apply(X, w') - I) / eps``
is added to the probe's I, ``4 (alpha' - alpha) / eps`` times dO/dalpha to its O
(:class:`Response`). The grid starts at the level's (or crop's) first pixel, whose
position is even in every tile (:mod:`kpn.model.tiling`), so that tiles sample the
pixels the whole level does.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from kpn.config import ModelConfig
from kpn.errors import KpnError
from kpn.model.apply import (
    F16_PRECISION,
    apply_limit,
    filter_with_outputs,
    kernel_weights,
    output_alphas,
)
from kpn.model.blend import alpha_slope, alpha_times_slope
from kpn.model.features import STAR15_PADDING, STAR15_RADIUS, kernel_taps, luminance
from kpn.model.level_filter import FEATURE_PADDING, band_features
from kpn.model.mlp import mlp_forward_planar
from kpn.model.precision import round_f16
from kpn.model.sampling import mirror_index, pad_symmetric

IMAGE_CHANNELS = 3  # the channels the MLP reads; a probe rides in the ones after them
SAMPLE_STRIDE = 2  # the kernels' response: every second row and column of a level
SAMPLE_PIXELS = 16384  # sampled pixels per chunk of rows: bounded temporaries


def probe_applies(config: ModelConfig) -> bool:
    """Whether a pass can carry a probe for ``config``'s model: not under vkdt's block
    transpose (a pixel's kernel comes from another pixel's network, which a sample of
    pixels does not reproduce), nor with a second filter pass (the sampled response is
    the first pass's)."""
    transposed = config.block_transpose or config.vkdt_kernel_grad_untransposed
    return not transposed and config.fine_passes == 1


def check_probe(noisy: Tensor, probe: Tensor, step: float, config: ModelConfig) -> None:
    """Refuse a probe that the pass cannot carry, with one line."""
    if not probe_applies(config):
        raise KpnError("a probe cannot ride along a model with vkdt's block transpose")
    if not isinstance(probe, Tensor) or probe.shape != noisy.shape:
        shape = list(probe.shape) if isinstance(probe, Tensor) else type(probe).__name__
        raise KpnError(f"the probe must have the image's shape {list(noisy.shape)}, got {shape}")
    if not (math.isfinite(step) and step >= 0):
        raise KpnError(f"the probe's step must be finite and >= 0, got {step}")


def with_probe(image: Tensor, probe: Tensor) -> Tensor:
    """``[B,3,...], [B,3,...] -> [B,6,...]``: the probe, in the image's dtype, as channels
    3..5."""
    return torch.cat((image, probe.to(image.dtype)), dim=1)


@dataclass(frozen=True)
class Response:
    """The network at the sampled pixels of a level (rows and columns 0, 2, 4, ...) on
    ``X + step X_probe``: what its kernels filter there and its alpha, to add their
    response to the probe's channels (:meth:`add_to_filtered`, :meth:`add_to_output`)."""

    step: float
    filtered: Tensor  # [B,3,ceil(h/2),ceil(w/2)] apply(X, w'), X not moved
    alpha: Tensor  # [B,1,ceil(h/2),ceil(w/2)] alpha' ([B,2,...]: luma's, chroma's)

    def add_to_filtered(self, filtered: Tensor) -> Tensor:
        """``[B,6,h,w]`` I of X and of the probe: the probe's, at the sampled pixels,
        plus ``SAMPLE_STRIDE**2 (apply(X, w') - I) / step`` (in place)."""
        change = self.filtered - filtered[:, :IMAGE_CHANNELS, ::SAMPLE_STRIDE, ::SAMPLE_STRIDE]
        probed = filtered[:, IMAGE_CHANNELS:, ::SAMPLE_STRIDE, ::SAMPLE_STRIDE]
        probed.add_(change, alpha=SAMPLE_STRIDE**2 / self.step)
        return filtered

    def add_to_output(
        self,
        output: Tensor,
        coarse_up: Tensor,
        filtered: Tensor,
        alpha: Tensor,
        config: ModelConfig,
    ) -> Tensor:
        """``[B,6,h,w]`` O of X and of the probe: the probe's, at the sampled pixels, plus
        ``SAMPLE_STRIDE**2 (alpha' - alpha) / step`` times dO/dalpha (in place; blended
        from ``coarse_up`` and ``filtered`` ``[B,6,h,w]`` with ``alpha``)."""
        sampled = (slice(None), slice(None), slice(None, None, SAMPLE_STRIDE))
        sampled += (slice(None, None, SAMPLE_STRIDE),)
        change = self.alpha - alpha[sampled]
        if not bool(change.any()):  # a constant alpha
            return output
        image = slice(0, IMAGE_CHANNELS)
        blend, border = config.blend, config.vkdt_post_diff_border
        if blend == "post_diff":  # its smoothing reads I about the pixel: the whole level
            slope = alpha_slope(coarse_up[:, image], filtered[:, image], blend, border)[sampled]
        else:  # mix and add blend pixel by pixel
            up, own = coarse_up[:, image][sampled], filtered[:, image][sampled]
            slope = alpha_slope(up, own, blend, border)
        if change.shape[1] == 2:  # luma's and chroma's alpha (design §18)
            moved = alpha_times_slope(change, slope)
            output[:, IMAGE_CHANNELS:][sampled].add_(moved, alpha=SAMPLE_STRIDE**2 / self.step)
            return output
        output[:, IMAGE_CHANNELS:][sampled].addcmul_(
            change, slope, value=SAMPLE_STRIDE**2 / self.step
        )
        return output


def kernel_response(
    x: Tensor,
    lowpass: Tensor,
    guide: Tensor | None,
    noise_ab: Tensor,
    level: int,
    weights: Sequence[Tensor],
    config: ModelConfig,
    step: float,
) -> Response:
    """The network at the sampled pixels of a level whose images carry a probe, on
    ``X + step X_probe``.

    Args:
        x: ``[B,6,h,w]`` X and the probe's X.
        lowpass: ``[B,6,h,w]`` what the noise luminance is taken from (X or the mip).
        guide: ``[B,6,h,w]`` the guide the MLP reads, or None.
        noise_ab: ``[B,2]``.
        level: the pyramid level.
        weights: the MLP's matrices.
        config: the model's switches.
        step: the finite difference's step along the probe (> 0).

    Returns:
        :class:`Response`, computed in chunks of rows of about ``SAMPLE_PIXELS`` pixels.
    """
    image, probed = slice(0, IMAGE_CHANNELS), slice(IMAGE_CHANNELS, None)
    batch, _, height, width = x.shape
    columns = -(-width // SAMPLE_STRIDE)
    rows = max(1, SAMPLE_PIXELS // (batch * columns))
    filtered, alphas = [], []
    for top in range(0, height, SAMPLE_STRIDE * rows):
        stop = min(height, top + SAMPLE_STRIDE * rows)
        sampled = (slice(None), image, slice(top, stop, SAMPLE_STRIDE))
        moved_rows = (slice(None), probed, *sampled[2:])
        both = _padded_rows(x, top, stop, FEATURE_PADDING[config.features])
        moved = both[:, image] + step * both[:, probed]
        noise_lum = luminance(lowpass[sampled] + step * lowpass[moved_rows])
        moved_guide = None if guide is None else guide[sampled] + step * guide[moved_rows]
        inputs = _sampled_features(
            moved, x[:, image], noise_ab, level, noise_lum, moved_guide, config
        )
        logits = mlp_forward_planar(
            inputs, weights, config.activation, config.precision, config.vkdt_matmul
        ).view(batch, config.outputs, -1, columns)
        still = _padded_rows(x[:, image], top, stop, STAR15_PADDING)
        sampled_filter = functools.partial(_apply_sampled, still, config=config)
        filtered.append(filter_with_outputs(logits, sampled_filter, config.kernel_outputs))
        alpha = output_alphas(logits, config.alpha_activation, config.kernel_outputs)
        alphas.append(round_f16(alpha) if config.precision == F16_PRECISION else alpha)  # as stored
    return Response(step, torch.cat(filtered, dim=2), torch.cat(alphas, dim=2))


def _padded_rows(image: Tensor, first: int, stop: int, padding: tuple[int, ...]) -> Tensor:
    """Rows ``first..stop`` of ``[B,C,h,w]`` as :func:`kpn.model.sampling.pad_symmetric`
    pads the whole image by ``padding`` (left, right, top, bottom), and only those rows:
    ``-> [B,C,stop-first+top+bottom,w+left+right]``."""
    left, right, top, bottom = padding
    height = image.shape[-2]
    if first >= top and stop + bottom <= height:
        rows = image[..., first - top : stop + bottom, :]
    else:  # mirrored at the image's first or last row
        index = torch.arange(first - top, stop + bottom, device=image.device)
        rows = image.index_select(-2, mirror_index(index, height))
    return _mirror_padded(rows, left, right, 0, 0)


def _mirror_padded(x: Tensor, left: int, right: int, top: int, bottom: int) -> Tensor:
    """:func:`kpn.model.sampling.pad_symmetric` by copies of the edges, a fifth of its
    gathers' time, where the padding is not wider than ``x`` (else by it)."""
    height, width = x.shape[-2:]
    if max(left, right) > width or max(top, bottom) > height:
        return pad_symmetric(x, left, right, top, bottom)
    out = x.new_empty(*x.shape[:-2], top + height + bottom, left + width + right)
    rows = slice(top, top + height)
    out[..., rows, left : left + width] = x
    out[..., rows, :left] = x[..., :left].flip(-1)
    out[..., rows, left + width :] = x[..., width - right :].flip(-1)
    out[..., :top, :] = out[..., top : 2 * top, :].flip(-2)
    out[..., top + height :, :] = out[..., top + height - bottom : top + height, :].flip(-2)
    return out


def _sampled_features(
    padded: Tensor,
    x: Tensor,
    noise_ab: Tensor,
    level: int,
    noise_lum: Tensor,
    guide: Tensor | None,
    config: ModelConfig,
) -> Tensor:
    """The network input at every ``SAMPLE_STRIDE``-th row and column of ``padded``, rows
    of X padded by the features' padding ``[B,3,r+a,w+b]``: ``-> [B,in,n*ceil(w/stride)]``,
    each of the n rows from its own slab as a batch entry; ``noise_lum`` ``[B,n,w]`` and
    ``guide`` ``[B,3,n,w]`` at those rows."""
    batch, count, width = noise_lum.shape
    reach = sum(FEATURE_PADDING[config.features][2:])  # padded rows about each row
    rows = range(0, SAMPLE_STRIDE * count, SAMPLE_STRIDE)
    slabs = torch.stack([padded[:, :, row : row + reach + 1] for row in rows], 1)
    lum = noise_lum.reshape(batch * count, 1, width)
    ab = noise_ab.repeat_interleave(count, 0)
    guide_rows = None
    if guide is not None:
        guide_rows = guide.transpose(1, 2).reshape(batch * count, -1, 1, width)
    inputs = band_features(slabs.flatten(0, 1), x, ab, level, lum, config, guide_rows)
    inputs = inputs[..., ::SAMPLE_STRIDE]  # [B*n, in, columns]
    features = inputs.shape[1]
    return inputs.reshape(batch, count, features, -1).transpose(1, 2).reshape(batch, features, -1)


def _apply_sampled(padded: Tensor, logits: Tensor, config: ModelConfig) -> Tensor:
    """The star filter of rows of X padded by ``STAR15_PADDING`` ``[B,3,r+4,w+4]`` with
    the kernels ``logits`` ``[B,T,n,c]`` of every ``SAMPLE_STRIDE``-th row and column:
    ``-> [B,3,n,c]``, clamped as apply clamps."""
    tap_weights = kernel_weights(logits, config.kernel_activation)
    count, columns = logits.shape[-2:]
    r = STAR15_RADIUS
    filtered = None
    for k, (dx, dy) in enumerate(kernel_taps(logits.shape[1])):
        tap = padded[
            ...,
            r + dy : r + dy + SAMPLE_STRIDE * count : SAMPLE_STRIDE,
            r + dx : r + dx + SAMPLE_STRIDE * columns : SAMPLE_STRIDE,
        ]
        term = tap_weights[:, k : k + 1]
        filtered = term * tap if filtered is None else torch.addcmul(filtered, term, tap)
    limit = apply_limit(config.precision)
    return filtered if limit is None else filtered.clamp(-limit, limit)
