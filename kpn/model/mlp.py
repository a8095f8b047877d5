"""The bias-free fully fused MLP shared by every pyramid level (docs/design.md §3)."""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kpn.config import KERNEL_OUTPUTS
from kpn.errors import KpnError
from kpn.model.precision import VKDT_MATMULS, matmul_f16, matmul_f16_fallback, round_f16
from kpn.model.vkdt_backward import vkdt_f16_mlp

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


_POST_OPS = {
    "leaky_relu": ("leaky_relu", [LEAKY_SLOPE], ""),
    "relu": ("relu", [], ""),
    "none": ("none", [], ""),
}


@functools.cache
def fused_linear() -> Callable[..., Tensor] | None:
    """oneDNN's product with the activation fused, as torch.compile's CPU code calls it
    (``torch.ops.mkldnn._linear_pointwise``): one pass over the layer's output instead of
    two, 1.3x (bfloat16) to 1.5x (float32) the separate product and activation on a
    [16384,64] band. None where this torch lacks it or it fails a probe against
    :func:`activate` of ``F.linear`` (it is not public API)."""
    operator = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    if operator is None or not torch.backends.mkldnn.is_available():
        return None
    probe = torch.linspace(-1.0, 1.0, 48).view(6, 8)
    weight = torch.linspace(1.0, -0.5, 32).view(4, 8)
    try:
        for activation, post_op in _POST_OPS.items():
            fused = operator(probe, weight, None, *post_op)
            expected = activate(F.linear(probe, weight), activation)
            if not torch.allclose(fused, expected, rtol=1e-5, atol=1e-6):
                return None
    except RuntimeError:
        return None
    return operator


def linear_activated(x: Tensor, weight: Tensor, activation: str) -> Tensor:
    """``activate(F.linear(x, weight), activation)``: on the CPU without gradients, one
    oneDNN call (:func:`fused_linear`; float32 to rounding, bfloat16 activated before the
    product rounds to bfloat16, not after). ``[N, in], [out, in] -> [N, out]``"""
    if (
        x.device.type == "cpu"
        and x.dim() == 2
        and x.dtype == weight.dtype
        and x.dtype in (torch.float32, torch.bfloat16)
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        and not torch.compiler.is_compiling()
        and (fused := fused_linear()) is not None
    ):
        return fused(x, weight.contiguous(), None, *_POST_OPS[activation])
    return activate(F.linear(x, weight), activation)


def f16_product(matmul: str) -> Callable[[Tensor, Tensor], Tensor]:
    """vkdt's float16 matrix product of one path (:data:`kpn.model.precision.VKDT_MATMULS`)."""
    if matmul == "coopmat":
        return matmul_f16
    if matmul == "fallback":
        return matmul_f16_fallback
    raise ValueError(f"unknown vkdt matmul {matmul!r} (expected one of {list(VKDT_MATMULS)})")


def mlp_forward_planar(
    inputs: Tensor,
    weights: Sequence[Tensor],
    activation: str,
    precision: str = "fp32",
    matmul: str = "coopmat",
    f16_backward: bool = False,
) -> Tensor:
    """Run the MLP on pixels as columns, vkdt's layout: ``[..., in, N] -> [..., 16, N]``
    (the plain layout, pixels as rows: :func:`kpn.model.reference.mlp_forward`).

    Args:
        inputs: ``[..., in, N]``.
        weights: ``[W, in]``, then ``n_hidden - 1`` of ``[W, W]``, then ``[16, W]``
            (``nn.Linear.weight`` layout, vkdt's row-major [out][in]).
        activation: after every hidden layer, none after the output.
        precision: ``"fp32"``; ``"bf16"``: the hidden layers' products in bfloat16 (float32
            accumulation), the output layer in float32; ``"vkdt-f16"``: vkdt's float16
            weights, activations and accumulation.
        matmul: under ``"vkdt-f16"``, vkdt's matrix path: ``"coopmat"`` (a float16
            accumulator rounded per 16-wide slice) or ``"fallback"`` (rounded after every
            product), see :mod:`kpn.model.precision`.
        f16_backward: under ``"vkdt-f16"``, the same forward pass with kpn-t's float16
            backward pass (:mod:`kpn.model.vkdt_backward`) where gradients are wanted.

    Returns:
        ``[..., 16, N]``: K[0..14] kernel weights, K[15] alpha.

    One image's pixels go through the hidden layers as the rows of one matrix (a view of
    its input), one plain product per layer: a transposed view takes batched products and
    copies, 16% slower. A batch keeps one product per image, so that each image's result
    is exactly the one it gets alone (one product over every image's rows sums in another
    order). The last product writes planar output, without a transposing copy.
    """
    if f16_backward and precision == "vkdt-f16" and torch.is_grad_enabled():
        layer = functools.partial(
            f16_hidden_layer, product=f16_product(matmul), activation=activation
        )
        return vkdt_f16_mlp(inputs, weights, activation, f16_product(matmul), layer)
    if math.prod(inputs.shape[:-2]) == 1:
        rows = inputs.reshape(inputs.shape[-2], -1).T  # [N, in], a view
        hidden = mlp_hidden(rows, weights[:-1], activation, precision, matmul)
        hidden = hidden.view(*inputs.shape[:-2], *hidden.shape)  # [..., N, W]
    else:
        hidden = mlp_hidden(inputs.transpose(-1, -2), weights[:-1], activation, precision, matmul)
    if precision == "vkdt-f16":
        product = f16_product(matmul)(hidden, round_f16(weights[-1]))
        return product.transpose(-1, -2).contiguous()
    return torch.matmul(weights[-1], hidden.to(weights[-1].dtype).transpose(-1, -2))


def mlp_hidden(
    inputs: Tensor,
    weights: Sequence[Tensor],
    activation: str,
    precision: str,
    matmul: str = "coopmat",
) -> Tensor:
    """The hidden layers: ``[..., N, in] -> [..., N, W]``, activated (bfloat16 under
    ``"bf16"``: the output layer reads them in float32, as kernel logits rounded to
    bfloat16 cost the shipped model 0.9 dB at ISO 800 on the benchmark photos; README,
    Speed)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}")
    if precision == "bf16":
        x = inputs.to(torch.bfloat16)
        for weight in weights:
            x = linear_activated(x, weight.to(torch.bfloat16), activation)
        return x
    if precision == "vkdt-f16":
        product = f16_product(matmul)
        x = round_f16(inputs)
        for weight in weights:
            x = f16_hidden_layer(x, round_f16(weight), product, activation)
        return x
    x = inputs
    for weight in weights:
        x = linear_activated(x, weight, activation)
    return x


def f16_hidden_layer(x: Tensor, weight: Tensor, product: Callable, activation: str) -> Tensor:
    """One hidden layer in vkdt's float16, as stored: ``[..., N, in], [W, in] -> [..., N, W]``
    (both operands float16-valued)."""
    x = activate(product(x, weight), activation)
    return round_f16(x) if activation == "leaky_relu" else x  # vkdt: float16(0.001 * x)


def vkdt_init_bound(width: int) -> float:
    """vkdt initialises every matrix uniform in +-sqrt(6/(W+W)), W for both fans."""
    return math.sqrt(6.0 / (width + width))


class MLP(nn.Module):
    """Bias-free MLP: in -> W (n_hidden layers) -> ``outputs`` (vkdt's 16, or 32 for
    ``model.chroma_kernel``), vkdt's Xavier initialisation.

    ``matmul``: vkdt's matrix path under ``precision = "vkdt-f16"`` (:func:`mlp_forward_planar`).
    ``first_live``: when > 0, only the first hidden layer's units below it feed the next
    layer: the next matrix's columns from ``first_live`` on are held at 0 (masked in
    :attr:`weights`, so they also get no gradient). ``model.vkdt_head_layout`` sets it to
    32 so that vkdt HEAD's kpn module, which reads the later matrices from float 32*W,
    inside the first matrix's rows 32.., runs the network as trained
    (:func:`kpn.vkdt.lut_layout.head_layout_conflict`).
    """

    def __init__(
        self,
        in_features: int,
        width: int,
        n_hidden: int,
        activation: str,
        precision: str = "fp32",
        matmul: str = "coopmat",
        first_live: int = 0,
        outputs: int = KERNEL_OUTPUTS,
    ) -> None:
        super().__init__()
        if not 0 <= first_live <= width:
            raise ValueError(f"first_live {first_live} is outside 0..{width}")
        sizes = [in_features] + [width] * n_hidden + [outputs]
        self.layers = nn.ModuleList(
            nn.Linear(fan_in, fan_out, bias=False) for fan_in, fan_out in itertools.pairwise(sizes)
        )
        self.width = width
        self.activation = activation
        self.precision = precision
        self.matmul = matmul
        self.first_live = first_live
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = vkdt_init_bound(self.width)
        for layer in self.layers:
            nn.init.uniform_(layer.weight, -bound, bound)
        if self.first_live and self.first_live < self.width:
            with torch.no_grad():  # held at 0 by the mask; stored as 0 too
                self.layers[1].weight[:, self.first_live :] = 0.0

    @property
    def parameter_matrices(self) -> list[Tensor]:
        """The trainable matrices in vkdt's buffer order (the optimiser's and the gradient
        clipping's): :attr:`weights` before the ``first_live`` mask, whose masked columns
        hold 0 and get no gradient."""
        return [layer.weight for layer in self.layers]

    @property
    def weights(self) -> list[Tensor]:
        """The matrices in order, ``[W,in]``, ``[W,W]``..., ``[16,W]``, as the network
        computes with them (``first_live`` applied)."""
        matrices = [layer.weight for layer in self.layers]
        if self.first_live and self.first_live < self.width:
            matrices[1] = live_columns(matrices[1], self.first_live)
        return matrices

    def forward(self, inputs: Tensor) -> Tensor:
        """``[N, in] -> [N, 16]``, by the network's planar path (a transposed view of it)."""
        return mlp_forward_planar(
            inputs.mT, self.weights, self.activation, self.precision, self.matmul
        ).mT

    def extra_repr(self) -> str:
        text = f"activation={self.activation}, precision={self.precision}"
        if self.precision == "vkdt-f16":
            text += f", matmul={self.matmul}"
        if self.first_live and self.first_live < self.width:
            text += f", first_live={self.first_live}"
        return text


def live_columns(matrix: Tensor, live: int) -> Tensor:
    """``matrix`` with its columns from ``live`` on set to 0 (no gradient reaches them).

    ``[out, in] -> [out, in]``
    """
    mask = torch.zeros(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)
    mask[:live] = 1
    return matrix * mask


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
