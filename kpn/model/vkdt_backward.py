"""The MLP's backward pass as vkdt's kpn-t computes it (``model.vkdt_f16_backward``).

kpn's ``vkdt-f16`` forward pass rounds straight through (:func:`kpn.model.precision.round_f16`):
its gradients are float32. kpn-t's are not (``bck-impl.glsl``, ``mulw-impl.glsl``):

- the gradient of the network's output, d loss / dK, reaches ``bck`` as float16 times
  ``GRAD_SCALE`` (128, so that small gradients do not flush to zero), clamped to +-65000;
- ``bck`` multiplies it back through each layer with vkdt's float16 matrix product (the
  path of ``model.vkdt_matmul``: the transposed weights, inner index in order) and the
  activation's derivative (leaky relu: ``float16(0.001 * x)`` where the stored forward
  activation is not positive), storing every layer's d loss / d pre-activation as float16;
- ``mulw`` sums d loss / d pre-activation times the stored float16 activation (the input
  layer: the float32 features, clamped to +-65000) over the pixels in float32, and
  ``adam.comp`` divides by ``GRAD_SCALE``.

The input's gradient is float32 (kpn-t computes none: the features have no parameters).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from kpn.model.precision import F16_LIMIT, round_f16

VKDT_GRAD_SCALE = 128.0  # kpn-t's config.h GRAD_SCALE (train.grad_scale's default)

Product = Callable[[Tensor, Tensor], Tensor]  # [..., N, in], [out, in] -> [..., N, out]


def activation_backward(grad: Tensor, stored: Tensor, activation: str) -> Tensor:
    """``warp_activation_backward``: d loss / d pre-activation from d loss / d activation
    and the stored (float16) activation. ``[..., N, W], [..., N, W] -> [..., N, W]``"""
    if activation == "leaky_relu":
        return torch.where(stored > 0, grad, round_f16(0.001 * grad))
    if activation == "relu":
        return torch.where(stored > 0, grad, torch.zeros_like(grad))
    if activation == "none":
        return grad
    raise ValueError(f"unknown activation {activation!r}")


class VkdtF16Mlp(torch.autograd.Function):
    """``mlp_forward_planar``'s ``vkdt-f16`` forward pass, kpn-t's backward pass.

    ``apply(inputs, activation, product, hidden_layer, *weights)``: ``[..., in, N]``
    planar features, the activation's name, the float16 matrix product
    (``f16_product(matmul)``), one hidden layer's forward pass as stored (``[..., N, in],
    [W, in] -> [..., N, W]``, :func:`kpn.model.mlp.f16_hidden_layer`) and the matrices
    ``[W,in]``, ``[W,W]``..., ``[16,W]`` -> ``[..., 16, N]``.
    """

    @staticmethod
    def forward(ctx, inputs, activation, product, hidden_layer, *weights):
        features = inputs.transpose(-1, -2)  # [..., N, in]
        stored = [round_f16(features)]
        rounded = [round_f16(weight) for weight in weights]
        for weight in rounded[:-1]:
            stored.append(hidden_layer(stored[-1], weight))
        ctx.activation, ctx.product = activation, product
        ctx.save_for_backward(features, *stored[1:], *rounded)
        return product(stored[-1], rounded[-1]).transpose(-1, -2).contiguous()

    @staticmethod
    def backward(ctx, grad: Tensor):
        features, *saved = ctx.saved_tensors
        layers = len(saved) // 2 + 1
        activations, weights = saved[: layers - 1], saved[layers - 1 :]
        scaled = (grad.transpose(-1, -2) * VKDT_GRAD_SCALE).clamp(-F16_LIMIT, F16_LIMIT)
        upstream = round_f16(scaled)  # [..., N, 16], dapply's float16 dE/dK
        weight_grads: list[Tensor | None] = [None] * layers
        for index in reversed(range(layers)):
            below = activations[index - 1] if index else features.clamp(-F16_LIMIT, F16_LIMIT)
            weight_grads[index] = _batch_sum(upstream, below) / VKDT_GRAD_SCALE
            if index:
                through = ctx.product(upstream, weights[index].T.contiguous())
                upstream = activation_backward(through, below, ctx.activation)
        input_grad = None
        if ctx.needs_input_grad[0]:
            input_grad = (upstream @ weights[0]).transpose(-1, -2) / VKDT_GRAD_SCALE
        return input_grad, None, None, None, *weight_grads


def _batch_sum(upstream: Tensor, below: Tensor) -> Tensor:
    """mulw: sum over every pixel (and image) of upstream x below, in float32.
    ``[..., N, out], [..., N, in] -> [out, in]``"""
    return upstream.reshape(-1, upstream.shape[-1]).T @ below.reshape(-1, below.shape[-1])


def vkdt_f16_mlp(
    inputs: Tensor,
    weights: Sequence[Tensor],
    activation: str,
    product: Product,
    hidden_layer: Product,
) -> Tensor:
    """:class:`VkdtF16Mlp`: ``[..., in, N] -> [..., 16, N]``."""
    return VkdtF16Mlp.apply(inputs, activation, product, hidden_layer, *weights)
