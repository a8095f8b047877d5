"""The bias-free fully fused MLP shared by every pyramid level (SPEC 3)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kpn.errors import KpnError
from kpn.precision import matmul_f16, round_f16

OUTPUTS = 16  # 15 kernel weights in tap order, then alpha
PRECISIONS = ("fp32", "bf16", "vkdt-f16")
LEAKY_SLOPE = 0.001  # vkdt's leaky relu


def activate(x: Tensor, activation: str) -> Tensor:
    """Hidden-layer activation, in place: ``leaky_relu`` (slope 0.001) | ``relu`` | ``none``."""
    # in place: a product's output is not needed by its backward pass, and the
    # activations' own backward reads their result
    if activation == "leaky_relu":
        return F.leaky_relu(x, LEAKY_SLOPE, inplace=True)
    if activation == "relu":
        return F.relu(x, inplace=True)
    if activation == "none":
        return x
    raise ValueError(f"unknown activation {activation!r}")


def mlp_forward(
    inputs: Tensor, weights: Sequence[Tensor], activation: str, precision: str = "fp32"
) -> Tensor:
    """Run the MLP on a batch of pixels.

    Args:
        inputs: ``[N, in]``.
        weights: ``[W, in]``, then ``n_hidden - 1`` of ``[W, W]``, then ``[16, W]``
            (``nn.Linear.weight`` layout, vkdt's row-major [out][in]).
        activation: after every hidden layer, none after the output.
        precision: ``"fp32"``; ``"bf16"``: the hidden layers' products in bfloat16 (float32
            accumulation), the output layer in float32; ``"vkdt-f16"``: vkdt's float16
            weights, activations and accumulation.

    Returns:
        ``[N, 16]``: K[0..14] kernel weights, K[15] alpha.
    """
    hidden = mlp_hidden(inputs, weights[:-1], activation, precision)
    if precision == "vkdt-f16":
        return matmul_f16(hidden, round_f16(weights[-1]))
    return F.linear(hidden.to(weights[-1].dtype), weights[-1])


def mlp_forward_planar(
    inputs: Tensor, weights: Sequence[Tensor], activation: str, precision: str = "fp32"
) -> Tensor:
    """:func:`mlp_forward` with pixels as columns, vkdt's layout: ``[..., in, N] -> [..., 16, N]``.

    The first product reads the transposed view and the last one writes planar output,
    so planar images go through the network without a transposing copy of the output.
    """
    hidden = mlp_hidden(inputs.transpose(-1, -2), weights[:-1], activation, precision)
    if precision == "vkdt-f16":
        return matmul_f16(hidden, round_f16(weights[-1])).transpose(-1, -2).contiguous()
    return torch.matmul(weights[-1], hidden.to(weights[-1].dtype).transpose(-1, -2))


def mlp_hidden(
    inputs: Tensor, weights: Sequence[Tensor], activation: str, precision: str
) -> Tensor:
    """The hidden layers: ``[..., N, in] -> [..., N, W]``, activated (bfloat16 under
    ``"bf16"``: the output layer reads them in float32, as kernel logits rounded to
    bfloat16 cost 0.9 dB at low noise, benchmarks/results/speed.md)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}")
    if precision == "bf16":
        x = inputs.to(torch.bfloat16)
        for weight in weights:
            x = activate(F.linear(x, weight.to(torch.bfloat16)), activation)
        return x
    f16 = precision == "vkdt-f16"
    x = round_f16(inputs) if f16 else inputs
    for weight in weights:
        x = activate(matmul_f16(x, round_f16(weight)) if f16 else F.linear(x, weight), activation)
        if f16 and activation == "leaky_relu":  # vkdt stores float16(0.001 * x)
            x = round_f16(x)
    return x


def vkdt_init_bound(width: int) -> float:
    """vkdt initialises every matrix uniform in +-sqrt(6/(W+W)), W for both fans."""
    return math.sqrt(6.0 / (width + width))


class MLP(nn.Module):
    """Bias-free MLP: in -> W (n_hidden layers) -> 16, vkdt's Xavier initialisation."""

    def __init__(
        self, in_features: int, width: int, n_hidden: int, activation: str, precision: str = "fp32"
    ) -> None:
        super().__init__()
        sizes = [in_features] + [width] * n_hidden + [OUTPUTS]
        self.layers = nn.ModuleList(
            nn.Linear(fan_in, fan_out, bias=False) for fan_in, fan_out in itertools.pairwise(sizes)
        )
        self.width = width
        self.activation = activation
        self.precision = precision
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = vkdt_init_bound(self.width)
        for layer in self.layers:
            nn.init.uniform_(layer.weight, -bound, bound)

    @property
    def weights(self) -> list[Tensor]:
        """The matrices in order, ``[W,in]``, ``[W,W]``..., ``[16,W]``."""
        return [layer.weight for layer in self.layers]

    def forward(self, inputs: Tensor) -> Tensor:
        """``[N, in] -> [N, 16]``"""
        return mlp_forward(inputs, self.weights, self.activation, self.precision)

    def extra_repr(self) -> str:
        return f"activation={self.activation}, precision={self.precision}"


def load_weights(mlp: MLP, matrices: Sequence[Tensor]) -> None:
    """Copy ``matrices`` (as :attr:`MLP.weights` lists them) into ``mlp``, shapes checked."""
    if len(matrices) != len(mlp.layers):
        raise KpnError(
            f"weights do not fit the model: {len(matrices)} matrices where {len(mlp.layers)} fit"
        )
    for index, (layer, matrix) in enumerate(zip(mlp.layers, matrices, strict=True)):
        if tuple(matrix.shape) != tuple(layer.weight.shape):
            raise KpnError(
                f"weights do not fit the model: matrix {index} has shape "
                f"{tuple(matrix.shape)} where {tuple(layer.weight.shape)} fits"
            )
    with torch.no_grad():
        for layer, matrix in zip(mlp.layers, matrices, strict=True):
            layer.weight.copy_(matrix)
