"""The plain versions of the network's stages, as docs/design.md writes them, which the
tests compare the fast paths against; nothing in kpn computes with them.

The network computes every stage on horizontal bands of a level, already padded
(:mod:`kpn.model.level_filter`), and its MLP with pixels as columns, vkdt's layout. Here
each stage takes a whole level as it is, pads it itself and returns the whole result,
and the MLP takes pixels as rows (``[N, in]``, the layout of design §3's formulas):

- :func:`star15_features`, :func:`patch8x8_features`: the per-pixel input (design §2);
- :func:`mlp_forward`: the MLP (design §3);
- :func:`apply_kernel`: the star filter (design §4);
- :func:`receptive_radius`: the halo of a tile cut once through the whole pyramid, which
  the level-wise tiles of :mod:`kpn.model.tiling` avoid (design §14).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from kpn.config import ModelConfig
from kpn.model.apply import apply_kernel_padded
from kpn.model.features import (
    PATCH8X8_PADDING,
    STAR15_PADDING,
    patch8x8_features_padded,
    star15_features_padded,
)
from kpn.model.mlp import f16_product, mlp_hidden
from kpn.model.precision import F16_LIMIT, round_f16
from kpn.model.sampling import pad_symmetric
from kpn.model.tiling import down_depth, level_depths, output_depth, up_depth


def star15_features(x: Tensor, noise_ab: Tensor, level: int, noise_lum: Tensor) -> Tensor:
    """The 32-channel ``star15`` input of a whole level
    (:func:`kpn.model.features.star15_features_padded`, mirrored at the level's edges).

    ``[B,3,H,W] (X), [B,2], level, [B,H,W] (noise luminance) -> [B,32,H,W]``
    """
    return star15_features_padded(pad_symmetric(x, *STAR15_PADDING), noise_ab, level, noise_lum)


def patch8x8_features(x: Tensor) -> Tensor:
    """The 64-channel ``patch8x8`` input of a whole level
    (:func:`kpn.model.features.patch8x8_features_padded`, mirrored at the level's edges).

    ``[B,3,H,W] -> [B,64,H,W]``
    """
    return patch8x8_features_padded(pad_symmetric(x, *PATCH8X8_PADDING))


def apply_kernel(x: Tensor, weights: Tensor, limit: float | None = F16_LIMIT) -> Tensor:
    """Star-shaped convolution of a whole level, I(p) = sum_k w_k(p) X(p + tap_k), clamped
    to +-``limit`` (:func:`kpn.model.apply.apply_kernel_padded`, mirrored at the edges).

    ``[B,C,H,W], [B,T,H,W] (normalised weights, T 15 or 21 taps) -> [B,C,H,W]``; ``limit``: default
    vkdt's, None keeps every value.
    """
    return apply_kernel_padded(pad_symmetric(x, *STAR15_PADDING), weights, limit)


def mlp_forward(
    inputs: Tensor,
    weights: Sequence[Tensor],
    activation: str,
    precision: str = "fp32",
    matmul: str = "coopmat",
) -> Tensor:
    """The MLP on pixels as rows, ``[..., N, in] -> [..., N, 16]``: the hidden layers of
    :func:`kpn.model.mlp.mlp_hidden`, then the output layer; arguments as
    :func:`kpn.model.mlp.mlp_forward_planar`'s. K[0..14] are the kernel logits, K[15]
    alpha."""
    hidden = mlp_hidden(inputs, weights[:-1], activation, precision, matmul)
    if precision == "vkdt-f16":
        return f16_product(matmul)(hidden, round_f16(weights[-1]))
    return F.linear(hidden.to(weights[-1].dtype), weights[-1])


def receptive_radius(config: ModelConfig, levels: int) -> int:
    """The whole pyramid's reach in full-resolution pixels: the halo a tile would need to
    be cut once through every level (for crops that start on multiples of 2**levels).

    The rules of :func:`kpn.model.tiling.level_halo`, followed through
    :func:`kpn.model.network.kpn_forward`: down the mips, across to X, I and alpha, and up
    the blend. Ignores vkdt's block transpose, which reaches along whole rows.
    """
    with_residual = config.blend == "add"
    mips = [0]
    for _ in range(levels + with_residual - 1):
        mips.append(down_depth(mips[-1], config.down))
    if config.mlp_input == "detail":
        xs = [max(mips[i], up_depth(mips[i + 1], config.up)) for i in range(levels)]
    else:
        xs = mips[:levels]
    out = mips[levels] if with_residual else None
    for level in reversed(range(levels)):
        kernel, image = level_depths(config, xs[level], level, levels)
        out = image if out is None else output_depth(config, out, kernel, image)
    assert out is not None
    return out
