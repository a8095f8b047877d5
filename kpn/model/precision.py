"""Emulation of vkdt's float16 arithmetic (docs/design.md §10, ``precision = "vkdt-f16"``).

vkdt stores weights, activations, kernels and pyramid images as float16 and accumulates
its matrix products in a float16 accumulator. How the products reach the accumulator
depends on the GPU (``model.vkdt_matmul``, vkdt's ``shared/coopmat.glsl``):

- ``coopmat`` (:func:`matmul_f16`): a device with ``VK_KHR_cooperative_matrix`` and a
  16x16x16 float16 configuration runs ``coopMatMulAdd``, one 16-wide slice of the inner
  dimension at a time; emulated as the slice's products summed in float32, added to the
  accumulator and rounded to float16 once per slice.
- ``fallback`` (:func:`matmul_f16_fallback`): any other device runs vkdt's emergency
  fallback, ``C[i] += As[..] * Bs[..]`` in ``float16_t``: every product is rounded to
  float16, then added to the float16 accumulator and rounded again, one product at a
  time, inner index in order (the 16-wide slices in order, and inside each slice
  ``k = 0..15``).

Float16 sums and products computed in float32 and rounded once are the correctly rounded
float16 results (float32 has more than 2 * 11 + 2 bits), so both emulations are exact
models of float16 hardware that rounds to nearest even.

Rounding here is straight-through: the forward pass sees float16 values, the backward
pass the identity, so the emulation also trains.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

F16_BLOCK = 16  # inner-dimension slice of one cooperative-matrix multiply-add
VKDT_MATMULS = ("coopmat", "fallback")  # model.vkdt_matmul: vkdt's two matrix paths
# vkdt's clamp before a float16 store (apply's I.rgb, the optimiser's weights and moments):
# below float16's largest value, 65504, so that the store stays finite
F16_LIMIT = 65000.0


def round_f16(x: Tensor) -> Tensor:
    """Round to the nearest float16 value, keeping dtype; gradient passes unchanged.

    ``[...] -> [...]``
    """
    rounded = x.to(torch.float16).to(x.dtype)
    if not (x.requires_grad and torch.is_grad_enabled()):
        return rounded  # the same values, without the straight-through bookkeeping
    return x + (rounded - x).detach()


def matmul_f16(inputs: Tensor, weight: Tensor) -> Tensor:
    """``inputs @ weight.T`` with a float16 accumulator rounded after every 16-wide slice
    (vkdt's cooperative-matrix path).

    ``[..., N, in], [out, in] -> [..., N, out]``, both operands already float16-valued.
    """
    slices = (
        inputs[..., start : start + F16_BLOCK] @ weight[:, start : start + F16_BLOCK].T
        for start in range(0, inputs.shape[-1], F16_BLOCK)
    )
    return _accumulate_f16(slices, (*inputs.shape[:-1], weight.shape[0]), inputs)


def matmul_f16_fallback(inputs: Tensor, weight: Tensor) -> Tensor:
    """``inputs @ weight.T`` as vkdt's non-cooperative-matrix fallback computes it:
    ``C = f16(C + f16(A[k] * B[k]))`` for k = 0, 1, ..., in order, C starting at 0.

    ``[..., N, in], [out, in] -> [..., N, out]``, both operands already float16-valued.
    """
    products = (round_f16(inputs[..., k, None] * weight[:, k]) for k in range(inputs.shape[-1]))
    return _accumulate_f16(products, (*inputs.shape[:-1], weight.shape[0]), inputs)


def _accumulate_f16(terms: Iterable[Tensor], shape: tuple[int, ...], like: Tensor) -> Tensor:
    """A float16 accumulator of ``shape`` (``like``'s dtype and device), starting at 0:
    each term added in order and the sum rounded to float16, as vkdt's accumulators are."""
    accumulator = like.new_zeros(shape)
    for term in terms:
        accumulator = round_f16(accumulator + term)
    return accumulator
