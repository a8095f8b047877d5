"""Emulation of vkdt's float16 arithmetic (SPEC 10, ``precision = "vkdt-f16"``).

vkdt stores weights, activations, kernels and pyramid images as float16 and accumulates
its matrix products in float16, rounding after each 16-wide slice of the inner dimension
(one cooperative-matrix multiply-add). Rounding here is straight-through: the forward
pass sees float16 values, the backward pass the identity, so the emulation also trains.
"""

from __future__ import annotations

import torch
from torch import Tensor

F16_BLOCK = 16  # inner-dimension slice of one cooperative-matrix multiply-add


def round_f16(x: Tensor) -> Tensor:
    """Round to the nearest float16 value, keeping dtype; gradient passes unchanged.

    ``[...] -> [...]``
    """
    return x + (x.to(torch.float16).to(x.dtype) - x).detach()


def matmul_f16(inputs: Tensor, weight: Tensor) -> Tensor:
    """``inputs @ weight.T`` with a float16 accumulator rounded after every 16-wide slice.

    Args:
        inputs: ``[..., N, in]``, already float16-valued.
        weight: ``[out, in]``, already float16-valued.

    Returns:
        ``[..., N, out]``.
    """
    accumulator = inputs.new_zeros(*inputs.shape[:-1], weight.shape[0])
    for start in range(0, inputs.shape[-1], F16_BLOCK):
        block = inputs[..., start : start + F16_BLOCK] @ weight[:, start : start + F16_BLOCK].T
        accumulator = round_f16(accumulator + block)
    return accumulator
