"""Apply (docs/design.md §4): filter a level's X with its predicted star kernels (15 taps,
or 21 with ``model.kernel_taps = "star21"``, design §20), and alpha.

vkdt's ``apply.comp``: the kernel weights are normalised by their sum, with guards against
NaN and runaway values, and the result is clamped to the float16 range. That clamp is part
of vkdt's float16 arithmetic, so only the ``vkdt-f16`` precision has it
(:func:`apply_limit`; vkdt has it in every precision): a float32 model keeps HDR values
above 65000 as they are.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from kpn.model.features import STAR15_RADIUS, kernel_taps
from kpn.model.precision import F16_LIMIT

F16_PRECISION = "vkdt-f16"  # the model precision that emulates vkdt's float16
SOFTMAX_SCALE = 0.1  # vkdt's sigma_exp: exp(0.1 * x)
SOFTMAX_MIN_SUM = 1e-3
SOFTMAX_MAX_START = -1e38  # apply.comp's initial maxK
PLAIN_LIMIT = 10.0  # plain weights outside (-10, 10) are replaced ...
PLAIN_REPLACEMENT = 0.001  # ... by this
PLAIN_MIN_SUM = 0.001


class _TenfoldGradient(torch.autograd.Function):
    """The identity, whose gradient is 1 / SOFTMAX_SCALE times as large."""

    @staticmethod
    def forward(ctx, logits: Tensor) -> Tensor:
        return logits.view_as(logits)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad / SOFTMAX_SCALE


def vkdt_softmax_gradient(logits: Tensor) -> Tensor:
    """``logits`` as they are, with kpn-t's gradient: ``dapply.comp`` differentiates the
    softmax as if its factors were exp(K), not ``sigma_exp``'s exp(0.1 K), so its d loss /
    dK is 10 times the true one (defect 16 of docs/vkdt.md). ``[...] -> [...]``"""
    return _TenfoldGradient.apply(logits)


def kernel_factors(logits: Tensor, activation: str) -> tuple[Tensor, float]:
    """The taps' unnormalised weights, and the floor of their sum (what
    :func:`kernel_weights` divides by is max(floor, sum)).

    - ``softmax``: w_k = exp(0.1*(K_k - max K)), a NaN K_k gives 1; floor 1e-3.
    - ``plain``: w_k = K_k, or 0.001 where K_k is NaN or outside (-10, 10); floor 0.001.

    ``[B,T,H,W] -> [B,T,H,W]`` (T taps), weights in the taps' order.
    """
    if activation == "softmax":
        # vkdt's max starts from -1e38 and skips NaN; a NaN difference (a NaN tap, or
        # inf - inf) gives factor exp(0) = 1, replaced before exp so that its gradient
        # stays finite; exp(0.1 x) underflows to 0 before vkdt's clamp to +-1000 acts
        largest = torch.nan_to_num(logits, nan=-math.inf, posinf=math.inf, neginf=-math.inf)
        largest = largest.amax(1, keepdim=True).clamp(min=SOFTMAX_MAX_START)
        shifted = torch.nan_to_num(logits - largest, nan=0.0)
        return torch.exp(SOFTMAX_SCALE * shifted), SOFTMAX_MIN_SUM
    if activation == "plain":
        inside = (logits < PLAIN_LIMIT) & (logits > -PLAIN_LIMIT)  # False for NaN too
        factors = torch.where(inside, logits, torch.full_like(logits, PLAIN_REPLACEMENT))
        return factors, PLAIN_MIN_SUM
    raise ValueError(f"unknown kernel activation {activation!r}")


def kernel_weights(logits: Tensor, activation: str) -> Tensor:
    """Normalised tap weights from the network's T kernel outputs: the
    :func:`kernel_factors` divided by max(floor, their sum).

    Args:
        logits: ``[B,T,H,W]``.
        activation: ``"softmax"`` | ``"plain"``.

    Returns:
        ``[B,T,H,W]`` weights of the taps in :func:`kpn.model.features.kernel_taps` order.
    """
    factors, floor = kernel_factors(logits, activation)
    return factors / factors.sum(1, keepdim=True).clamp(min=floor)


def apply_limit(precision: str) -> float | None:
    """The clamp of the filtered values for a model precision: +-65000 for ``vkdt-f16``
    (vkdt's float16 range), None (no clamp) for float32 and bfloat16, whose range holds
    any HDR value.

    This departs from vkdt (design §4), which clamps I.rgb to [-65000, 65000] in every precision
    (docs/vkdt.md, "Where kpn departs from vkdt"): outside vkdt's float16 the clamp
    would only cut HDR values, and the vkdt presets, all ``vkdt-f16``, clamp as vkdt
    does.
    """
    return F16_LIMIT if precision == F16_PRECISION else None


def apply_kernel_padded(padded: Tensor, weights: Tensor, limit: float | None = F16_LIMIT) -> Tensor:
    """Star-shaped convolution of an X already padded by ``STAR15_PADDING``:
    I(p) = sum_k w_k(p) X(p + tap_k), clamped to +-``limit`` (the whole level:
    :func:`kpn.model.reference.apply_kernel`), the taps those of the weights' count
    (:func:`kpn.model.features.kernel_taps`).

    Args:
        padded: ``[B,C,h+4,w+4]``.
        weights: ``[B,T,h,w]``, normalised (:func:`kernel_weights`).
        limit: the clamp, default vkdt's; None keeps every value (:func:`apply_limit`).

    Returns:
        ``[B,C,h,w]``.
    """
    height, width = weights.shape[-2:]
    r = STAR15_RADIUS
    filtered = None
    for k, (dx, dy) in enumerate(kernel_taps(weights.shape[1])):
        tap = padded[..., r + dy : r + dy + height, r + dx : r + dx + width]
        term = weights[:, k : k + 1]
        filtered = term * tap if filtered is None else torch.addcmul(filtered, term, tap)
    return filtered if limit is None else filtered.clamp(-limit, limit)


def apply_kernel_vkdt(
    padded: Tensor, factors: Tensor, floor: float, limit: float | None = F16_LIMIT
) -> Tensor:
    """:func:`apply_kernel_padded` in ``apply.comp``'s own float32 order, for the
    ``vkdt-f16`` precision: sum_k w_k X(p + tap_k) and sum_k w_k, each accumulated in tap
    order, then their quotient (kpn's float32 path normalises the weights first). Under
    float16 stores the order decides roundings that plain kernels amplify: measured
    against vkdt-cli, 2.1e-2 apart the other way (benchmarks/results/vkdt-oracle-head.md).

    ``[B,C,h+4,w+4], [B,T,h,w] (kernel_factors), floor -> [B,C,h,w]``
    """
    height, width = factors.shape[-2:]
    r = STAR15_RADIUS
    filtered, total = None, None
    for k, (dx, dy) in enumerate(kernel_taps(factors.shape[1])):
        tap = padded[..., r + dy : r + dy + height, r + dx : r + dx + width]
        factor = factors[:, k : k + 1]
        filtered = factor * tap if filtered is None else filtered + factor * tap
        total = factor if total is None else total + factor
    filtered = filtered / total.clamp(min=floor)
    return filtered if limit is None else filtered.clamp(-limit, limit)


def luma_chroma(luma: Tensor, chroma: Tensor) -> Tensor:
    """The luma (channel mean) of ``luma`` with the chroma (the image less its channel
    mean) of ``chroma``: the image that ``model.chroma_kernel`` filters or blends one way
    in luma and another in chroma (design §18). Channels go in threes (an image, then a
    probe's). ``[B,3n,H,W] x 2 -> [B,3n,H,W]``"""
    difference = (luma - chroma).unflatten(1, (-1, 3))
    return chroma + difference.mean(2, keepdim=True).expand_as(difference).flatten(1, 2)


def filter_with_outputs(
    outputs: Tensor, filter_kernel: Callable[[Tensor], Tensor], kernel_outputs: int
) -> Tensor:
    """I from the network's outputs, ``kernel_outputs`` (K, ``model.kernel_outputs``) a
    kernel: ``filter_kernel`` (K - 1 logits -> filtered image) with the luma kernel's
    logits, and where there is a second kernel (``model.chroma_kernel``) the chroma of what
    it filters (:func:`luma_chroma`). ``[B,K,...]`` or ``[B,2K,...] -> [B,3,...]``"""
    image = filter_kernel(outputs[:, : kernel_outputs - 1])
    if outputs.shape[1] == kernel_outputs:
        return image
    return luma_chroma(image, filter_kernel(outputs[:, kernel_outputs : 2 * kernel_outputs - 1]))


def output_alphas(outputs: Tensor, activation: str, kernel_outputs: int) -> Tensor:
    """The alpha after each kernel of the network's outputs, ``kernel_outputs`` (K) a
    kernel (:func:`alpha_weight`): ``[B,K,...] -> [B,1,...]``, ``[B,2K,...] -> [B,2,...]``
    (luma's, chroma's)."""
    return alpha_weight(outputs[:, kernel_outputs - 1 :: kernel_outputs], activation)


def vkdt_sigmoid(x: Tensor) -> Tensor:
    """vkdt's algebraic sigmoid 0.5*x/sqrt(1+x^2) + 0.5 (``sigmoid.glsl``)."""
    return 0.5 * x * torch.rsqrt(1.0 + x * x) + 0.5


def alpha_weight(raw: Tensor, activation: str) -> Tensor:
    """Blend weight from the network's 16th output.

    ``const`` (1, vkdt's default) | ``plain`` | ``clamped`` (to [0,1]) | ``sigmoid``.

    ``[B,1,H,W] -> [B,1,H,W]``
    """
    if activation == "const":
        return torch.ones_like(raw)
    if activation == "plain":
        return raw
    if activation == "clamped":
        return raw.clamp(0.0, 1.0)
    if activation == "sigmoid":
        return vkdt_sigmoid(raw)
    raise ValueError(f"unknown alpha activation {activation!r}")
