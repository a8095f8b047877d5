"""The training band with a hand-written backward pass: MLP -> softmax kernel -> apply.

Training spends its time in one band of pixels at a time
(:func:`kpn.model.level_filter.filter_level`): the MLP's products, then the 15-tap softmax
and the star filter. Autograd runs that band's backward as some hundred small operations
per band: the softmax's guards (maximum, NaN replacement, clamp) each save and
differentiate a 15-channel tensor, the filter's 15 taps scatter their gradients into
zero-filled copies, and the products meet their gradients in transposed layouts that
they copy. :func:`band_forward` does the band as one
:class:`torch.autograd.Function` whose backward is the band's own calculus, as vkdt's
``dapply`` and ``bck`` shaders are:

- softmax and filter together: with w = softmax(0.1 z) and I = sum_k w_k X_k, the
  gradient of a logit is dL/dz_k = 0.1 w_k sum_c g_c (X_k,c - I_c), g = dL/dI: no
  per-tap weight gradients, no maximum (its gradient cancels);
- the output layer and the hidden layers as pixel-row products over the whole band, each
  activation's backward read from its saved result.

It saves the hidden activations (bfloat16 under ``bf16``), the tap weights and I; X is
not differentiated, and the features only where they want it: a guide's channels depend
on the coarser levels' weights (design §16), one more product of the first layer. The
forward values are the plain path's (:func:`kpn.model.mlp.mlp_forward_planar`,
:func:`kpn.model.apply.kernel_weights`, :func:`kpn.model.apply.apply_kernel_padded`) to
rounding, not bit for bit: a batch's pixels go through each product together as
contiguous rows, the products take their activation fused
(:func:`kpn.model.mlp.linear_activated`), and the softmax filter and its backward run as
:mod:`kpn.model.native`'s C loops where they build (float32 within 1e-6; bfloat16 within
a few of its roundings).

It covers what training with the float32 path computes: precision ``fp32`` or ``bf16``,
``softmax`` kernels, no vkdt block transpose; :func:`band_applies` says when.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from kpn.config import KERNEL_OUTPUTS, ModelConfig
from kpn.model import native
from kpn.model.apply import SOFTMAX_SCALE, apply_kernel_padded, kernel_weights
from kpn.model.features import STAR15_RADIUS, STAR15_TAPS
from kpn.model.mlp import LEAKY_SLOPE, linear_activated

BAND_PRECISIONS = ("fp32", "bf16")


def band_applies(config: ModelConfig) -> bool:
    """Whether :func:`band_forward` computes what ``config``'s model computes."""
    return (
        config.precision in BAND_PRECISIONS
        and config.kernel_activation == "softmax"
        and not config.block_transpose
        and config.fine_passes == 1  # a second pass needs the level's kernels kept
        and not config.chroma_kernel  # one kernel a pixel
        and config.kernel_taps == "star15"
    )


def band_forward(
    inputs: Tensor, padded: Tensor, weights: Sequence[Tensor], activation: str, precision: str
) -> tuple[Tensor, Tensor]:
    """One band's network output, filtered: the plain path's result, with a hand-written
    backward pass to ``weights`` (and to ``inputs`` where they want it: a guide's).

    Args:
        inputs: ``[B,in,h*w]`` the band's features.
        padded: ``[B,3,h+4,w+4]`` the band's X padded by ``STAR15_PADDING``, not
            differentiated.
        weights: the MLP's matrices, ``[W,in]``, ``[W,W]``..., ``[16,W]``.
        activation: the hidden layers' (:func:`kpn.model.mlp.activate`).
        precision: ``"fp32"`` or ``"bf16"`` (hidden products in bfloat16).

    Returns:
        filtered I ``[B,3,h,w]`` and the raw alpha output ``[B,1,h,w]``.
    """
    return _Band.apply(inputs, padded, activation, precision, *weights)


def _activation_backward(grad: Tensor, result: Tensor, activation: str) -> Tensor:
    """dL/dz of a hidden layer from dL/dh and its activated result h (the sign of h is the
    sign of z for relu and leaky relu). ``[N,W], [N,W] -> [N,W]``"""
    if activation == "leaky_relu":
        return torch.ops.aten.leaky_relu_backward(grad, result, LEAKY_SLOPE, True)
    if activation == "relu":
        return torch.ops.aten.threshold_backward(grad, result, 0)
    return grad


def softmax_apply_backward(
    grad: Tensor, padded: Tensor, tap_weights: Tensor, filtered: Tensor
) -> Tensor:
    """dL/dz of the 15 kernel logits from dL/dI, for I = sum_k softmax(0.1 z)_k X_k.

    dL/dz_k = 0.1 w_k sum_c g_c (X_k,c - I_c).

    ``[B,C,h,w], [B,C,h+4,w+4], [B,15,h,w], [B,C,h,w] -> [B,15,h,w]``
    """
    height, width = tap_weights.shape[-2:]
    r = STAR15_RADIUS
    along_taps = torch.stack(
        [
            (grad * padded[..., r + dy : r + dy + height, r + dx : r + dx + width]).sum(1)
            for dx, dy in STAR15_TAPS
        ],
        dim=1,
    )
    along_output = (grad * filtered).sum(1, keepdim=True)
    return (along_taps - along_output).mul_(tap_weights).mul_(SOFTMAX_SCALE)


class _Band(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        inputs: Tensor,
        padded: Tensor,
        activation: str,
        precision: str,
        *weights: Tensor,
    ) -> tuple[Tensor, Tensor]:
        batch, features, pixels = inputs.shape
        height, width = padded.shape[-2] - 2 * STAR15_RADIUS, padded.shape[-1] - 2 * STAR15_RADIUS
        hidden_dtype = torch.bfloat16 if precision == "bf16" else weights[-1].dtype
        # pixel rows of every image together: [B*P, in], one product per layer
        rows = torch.empty(batch, pixels, features, dtype=hidden_dtype, device=inputs.device)
        rows = rows.copy_(inputs.transpose(1, 2)).view(batch * pixels, features)
        layers = [rows]
        for weight in weights[:-1]:
            layers.append(linear_activated(layers[-1], weight.to(hidden_dtype), activation))
        last = layers[-1].to(weights[-1].dtype).view(batch, pixels, -1)
        outputs = torch.matmul(weights[-1], last.transpose(1, 2))  # [B,16,P], planar
        outputs = outputs.view(batch, KERNEL_OUTPUTS, height, width)
        logits = outputs[:, : KERNEL_OUTPUTS - 1]
        tap_weights = logits.new_empty(logits.shape)
        filtered = native.softmax_apply(padded, logits, tap_weights)
        if filtered is None:  # no native loops: kpn's eager definition
            tap_weights = kernel_weights(logits, "softmax")
            filtered = apply_kernel_padded(padded, tap_weights, None)
        ctx.save_for_backward(padded, tap_weights, filtered, last, *layers, *weights)
        ctx.activation = activation
        ctx.hidden_dtype = hidden_dtype
        ctx.layer_count = len(layers)
        ctx.input_shape, ctx.input_dtype = inputs.shape, inputs.dtype
        return filtered, outputs[:, KERNEL_OUTPUTS - 1 :]

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_filtered: Tensor, grad_alpha: Tensor
    ) -> tuple[Tensor | None, ...]:
        padded, tap_weights, filtered, last, *saved = ctx.saved_tensors
        layers, weights = saved[: ctx.layer_count], saved[ctx.layer_count :]
        logits = native.softmax_apply_backward(grad_filtered, padded, tap_weights, filtered)
        if logits is None:
            logits = softmax_apply_backward(grad_filtered, padded, tap_weights, filtered)
        grad_outputs = torch.cat((logits, grad_alpha), dim=1)  # [B,16,h,w]
        # planar -> pixel rows [B*P, 16]: the products below run on rows, as the forward's
        grad_rows = grad_outputs.flatten(2).transpose(1, 2).reshape(-1, KERNEL_OUTPUTS)
        grads = [grad_rows.T @ last.view(grad_rows.shape[0], -1)]
        grad = (grad_rows @ weights[-1]).to(ctx.hidden_dtype)
        grad_inputs = None
        for index in reversed(range(len(weights) - 1)):
            grad = _activation_backward(grad, layers[index + 1], ctx.activation)
            grads.append((grad.T @ layers[index]).to(weights[index].dtype))
            if index:
                grad = grad @ weights[index].to(ctx.hidden_dtype)
            elif ctx.needs_input_grad[0]:  # a guide's channels: the coarser levels learn
                batch, features, pixels = ctx.input_shape
                rows = grad @ weights[0].to(ctx.hidden_dtype)  # [B*P, in]
                grad_inputs = rows.view(batch, pixels, features).transpose(1, 2)
                grad_inputs = grad_inputs.to(ctx.input_dtype)
        return grad_inputs, None, None, None, *reversed(grads)
