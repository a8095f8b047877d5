"""Training losses (docs/design.md §6, vkdt's ``loss.comp``).

vkdt sums over pixels and channels; ``reduction = "mean"`` divides by their count so the
learning rate does not depend on the tile size. Pixels whose output is not finite are
left out (they contribute neither value nor gradient), as vkdt does.

vkdt's ``loss.comp`` computes SMAPE's value but writes a derivative of its own (defect 15
of docs/vkdt.md): SMAPE's, times |O (O - R)| / (1e-3 + |O (O - R)|), which fades the
gradient of pixels whose error is small (half of it where |O (O - R)| = 1e-3, an error of
2e-3 at O = 0.5). ``vkdt_grad`` replays it; kpn trains with SMAPE's own.
"""

from __future__ import annotations

import torch
from torch import Tensor

SMAPE_EPS = 1e-3
PSNR_LOSS_EPS = 1e-10  # the psnr loss's floor: 100 dB, so a perfect tile has a finite loss


def pixel_loss(output: Tensor, reference: Tensor, loss: str) -> Tensor:
    """Per-element loss. ``l2``: d^2; ``smape``: |d|/(|O|+|R|+1e-3); ``cosh``: cosh(d)-1.

    ``[B,C,H,W], [B,C,H,W] -> [B,C,H,W]``, with d = O - R.
    """
    diff = output - reference
    if loss == "l2":
        return diff * diff
    if loss == "smape":
        return diff.abs() / (output.abs() + reference.abs() + SMAPE_EPS)
    if loss == "cosh":
        return torch.cosh(diff) - 1.0
    raise ValueError(f"unknown loss {loss!r}")


class _VkdtSmape(torch.autograd.Function):
    """SMAPE's value with ``loss.comp``'s derivative (the module docstring)."""

    @staticmethod
    def forward(ctx, output: Tensor, reference: Tensor) -> Tensor:
        ctx.save_for_backward(output, reference)
        return pixel_loss(output, reference, "smape")

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        output, reference = ctx.saved_tensors
        diff = output - reference
        den = output.abs() + reference.abs() + SMAPE_EPS
        product = output * reference
        slope = (
            diff / (den * den)
            * (product.abs() + SMAPE_EPS * output.abs() + product)
            / (SMAPE_EPS + (output * diff).abs())
        )  # fmt: skip
        return grad * slope, None


def kpn_loss(
    output: Tensor,
    reference: Tensor,
    loss: str,
    reduction: str = "sum",
    vkdt_grad: bool = False,
) -> Tensor:
    """Scalar loss over the finite pixels of ``output``.

    Args:
        output: ``[B,C,H,W]``, the network's O_0.
        reference: ``[B,C,H,W]``, the clean image.
        loss: ``"l2"`` | ``"smape"`` | ``"cosh"`` | ``"psnr"`` (kpn's: per image).
        reduction: ``"sum"`` (vkdt) | ``"mean"`` (over the finite pixels' elements).
        vkdt_grad: ``smape`` only: the value unchanged, the gradient ``loss.comp``'s
            (the module docstring).

    Returns:
        scalar tensor.
    """
    if vkdt_grad and loss != "smape":
        raise ValueError(f"vkdt_grad is loss.comp's SMAPE derivative, not {loss!r}'s")
    finite = torch.isfinite(output).all(dim=1, keepdim=True).expand_as(output)
    # where() before the loss, so no NaN reaches the backward pass of the masked pixels
    safe_output = torch.where(finite, output, reference)
    if loss == "psnr":
        return negative_psnr(safe_output, reference, finite, reduction)
    if vkdt_grad:
        elementwise = _VkdtSmape.apply(safe_output, reference)
    else:
        elementwise = pixel_loss(safe_output, reference, loss)
    total = elementwise.sum()
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / finite.sum().clamp(min=1)
    raise ValueError(f"unknown reduction {reduction!r}")


def negative_psnr(output: Tensor, reference: Tensor, finite: Tensor, reduction: str) -> Tensor:
    """The ``psnr`` loss: -PSNR of each image (10 log10 of its mean squared error over its
    finite pixels, floored at 100 dB), summed or averaged over the batch.

    Every tile counts in decibels, as the validation's and the benchmarks' mean PSNR do:
    a low-noise tile whose error doubles costs as much as a high-noise one, where l2's
    batch mean is all but blind to the quiet tiles and lets a model make them worse than
    their noisy input.

    ``[B,C,H,W], [B,C,H,W], [B,C,H,W] bool -> scalar``
    """
    squared = (output - reference).square().flatten(1).sum(1)
    count = finite.flatten(1).sum(1).clamp(min=1)
    per_image = 10.0 * torch.log10(squared / count + PSNR_LOSS_EPS)
    if reduction == "sum":
        return per_image.sum()
    if reduction == "mean":
        return per_image.mean()
    raise ValueError(f"unknown reduction {reduction!r}")
