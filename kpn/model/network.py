"""The multilevel kernel-prediction network: pyramid -> features -> MLP -> apply -> blend.

One MLP, shared by every level, predicts per pixel a 15-tap star kernel and an alpha; each
level's X is filtered with its kernels and the levels are blended back coarse to fine.
:func:`kpn_forward` is the whole computation as a pure function; :class:`KPN` holds the
MLP's weights and calls it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.profiler import record_function

from kpn.config import VKDT_INFERENCE_IN_WIDTH, ModelConfig
from kpn.errors import KpnError
from kpn.model import native
from kpn.model.apply import (
    F16_PRECISION,
    alpha_weight,
    apply_kernel_padded,
    apply_kernel_vkdt,
    apply_limit,
    kernel_factors,
    kernel_weights,
)
from kpn.model.band import band_applies, band_forward
from kpn.model.blend import blend_level
from kpn.model.features import (
    PATCH8X8_PADDING,
    STAR15_PADDING,
    STAR15_RADIUS,
    luminance,
    patch8x8_features_padded,
    patch8x8_features_past_end,
    star15_features_padded,
    star15_snr_features_padded,
)
from kpn.model.mlp import MLP, OUTPUTS, mlp_forward_planar
from kpn.model.precision import round_f16
from kpn.model.pyramid import mip_pyramid, upsample
from kpn.model.sampling import pad_symmetric

BLOCK = 16  # vkdt's network processes the pixels of a level in blocks of 16
BAND_PIXELS = 16384  # pixels per fused band: 16384 x 64 float activations stay in cache


@dataclass(frozen=True)
class LevelOutput:
    """Everything one pyramid level computed, for tests and visualisation."""

    mip: Tensor  # M_i [B,3,h,w]
    x: Tensor  # X_i, the filtered image: M_i or D_i [B,3,h,w]
    kernel: Tensor | None  # [B,16,h,w] network outputs as apply reads them, or None
    # (None: the level is passed through, or its kernels were not kept)
    alpha: Tensor  # a_i [B,1,h,w]
    filtered: Tensor  # I_i [B,3,h,w]
    output: Tensor  # O_i [B,3,h,w]


@dataclass(frozen=True)
class KPNOutput:
    """The denoised image and the per-level intermediate results."""

    output: Tensor  # O_0 [B,3,H,W]
    levels: tuple[LevelOutput, ...]  # finest first
    residual: Tensor | None  # the low-pass M_N that ``add`` starts from, else None


def check_inputs(noisy: Tensor, noise_ab: Tensor) -> None:
    """Refuse what the network cannot denoise, with one line, before any work."""
    if not isinstance(noisy, Tensor) or not isinstance(noise_ab, Tensor):
        raise KpnError("noisy image and noise profile must be torch tensors")
    if noisy.dim() != 4 or noisy.shape[1] != 3:
        raise KpnError(f"noisy image must have shape [B,3,H,W], got {list(noisy.shape)}")
    if noisy.numel() == 0:
        raise KpnError(f"noisy image is empty: shape {list(noisy.shape)}")
    if not noisy.is_floating_point():
        raise KpnError(f"noisy image must be floating point, got {noisy.dtype}")
    if tuple(noise_ab.shape) != (noisy.shape[0], 2):
        raise KpnError(
            f"noise profile must have shape [B,2] = [{noisy.shape[0]},2] (one (a, b) per "
            f"image), got {list(noise_ab.shape)}"
        )
    # a float64 sum is NaN or Inf exactly when an element is: one pass, no mask
    if not torch.isfinite(noisy.sum(dtype=torch.float64)):
        raise KpnError("noisy image contains NaN or Inf")
    if not torch.isfinite(noise_ab).all() or (noise_ab < 0).any():
        raise KpnError(f"noise profile (a, b) must be finite and >= 0, got {noise_ab.tolist()}")


def block_transpose(kernels: Tensor) -> Tensor:
    """vkdt HEAD's kernel store (SPEC 10): transposed inside each block of 16 pixels.

    The weight apply reads for pixel p, output k is output p % 16 of pixel 16*(p//16) + k.

    ``[B,16,P] -> [B,16,P]``, planar, P a multiple of 16, pixels in scanline order.
    """
    batch, outputs, pixels = kernels.shape
    blocks = kernels.reshape(batch, outputs, pixels // BLOCK, BLOCK)
    return blocks.permute(0, 3, 2, 1).reshape(batch, outputs, pixels)


class _TransposeWithUntransposedGradient(torch.autograd.Function):
    """vkdt HEAD's training (SPEC 10): the forward pass transposes the kernels, the
    backward pass reads their gradient as if it had not, so gradients go to the wrong
    pixels and outputs."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, kernels: Tensor) -> Tensor:
        return block_transpose(kernels)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        return grad


def band_rows(batch: int, height: int, width: int, block_transpose: bool) -> int:
    """Rows per band: about ``BAND_PIXELS`` pixels, whole blocks of 16 under the transpose."""
    rows = max(1, BAND_PIXELS // (batch * width))
    if block_transpose:  # a band must hold whole blocks of the level's scanline order
        step = BLOCK // math.gcd(width, BLOCK)
        rows = -(-rows // step) * step
    return min(rows, height)


def filter_level(
    x: Tensor,
    noise_ab: Tensor,
    level: int,
    noise_lum: Tensor,
    weights: Sequence[Tensor],
    config: ModelConfig,
    *,
    keep_kernel: bool = True,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Predict every pixel's kernel and alpha on one level, and filter the level with them.

    Works in horizontal bands of about ``BAND_PIXELS`` pixels so that features, network
    activations and kernels stay in cache: fused per band as vkdt fuses per block.

    Args:
        x: ``[B,3,h,w]``, the level's X.
        noise_ab: ``[B,2]``.
        level: pyramid level.
        noise_lum: ``[B,h,w]``, luminance for the noise channel.
        weights: the MLP's matrices.
        config: the model's switches.
        keep_kernel: return the network's output; False: each band's is dropped once
            applied (64 bytes a pixel that training and inference do not read).

    Returns:
        filtered I ``[B,3,h,w]``, alpha ``[B,1,h,w]``, and the network output as apply
        reads it ``[B,16,h,w]`` (kernel logits, then alpha), or None.
    """
    batch, _, height, width = x.shape
    star15 = config.features != "patch8x8"
    star15_input = (
        star15_snr_features_padded if config.features == "star15_snr" else star15_features_padded
    )
    feature_input = pad_symmetric(x, *(STAR15_PADDING if star15 else PATCH8X8_PADDING))
    apply_input = feature_input if star15 else pad_symmetric(x, *STAR15_PADDING)
    feature_rows = feature_input.shape[-2] - height
    rows = band_rows(batch, height, width, config.block_transpose)
    hand_backward = (
        band_applies(config)
        and not keep_kernel
        and torch.is_grad_enabled()
        and any(weight.requires_grad for weight in weights)
        and not (x.requires_grad or noise_ab.requires_grad or noise_lum.requires_grad)
    )
    filtered, alphas, kernels = [], [], []
    for top in range(0, height, rows):
        bottom = min(top + rows, height)
        with record_function("features"):
            slab = feature_input[:, :, top : bottom + feature_rows]
            if star15:
                inputs = star15_input(slab, noise_ab, level, noise_lum[:, top:bottom])
            else:
                inputs = patch8x8_features_padded(slab)
            inputs = inputs.flatten(2)
            pixels = inputs.shape[2]
            padding = -pixels % BLOCK if config.block_transpose else 0
            if padding:
                # vkdt pads its batch past the last pixel: star15 reads zeros there, patch8x8
                # reads mirrored rows, and the transpose carries their outputs into real pixels
                if star15:
                    extra = inputs.new_zeros(batch, inputs.shape[1], padding)
                else:
                    extra = patch8x8_features_past_end(x, padding)
                inputs = torch.cat((inputs, extra), dim=2)
        slab = apply_input[:, :, top : bottom + 2 * STAR15_RADIUS]
        if hand_backward:
            with record_function("band"):
                image, raw_alpha = band_forward(
                    inputs, slab, weights, config.activation, config.precision
                )
            filtered.append(image)
            alphas.append(alpha_weight(raw_alpha, config.alpha_activation))
            continue
        with record_function("mlp"):
            outputs = mlp_forward_planar(
                inputs, weights, config.activation, config.precision, config.vkdt_matmul
            )
            if config.vkdt_kernel_grad_untransposed:
                outputs = _TransposeWithUntransposedGradient.apply(outputs)[..., :pixels]
            elif config.block_transpose:
                outputs = block_transpose(outputs)[..., :pixels]
            kernel = outputs.view(batch, OUTPUTS, bottom - top, width)
        if keep_kernel:
            kernels.append(kernel)
        alphas.append(alpha_weight(kernel[:, OUTPUTS - 1 :], config.alpha_activation))
        filtered.append(filter_band(slab, kernel[:, : OUTPUTS - 1], config))
    with record_function("copies"):
        kernel_out = torch.cat(kernels, dim=2) if keep_kernel else None
        return torch.cat(filtered, dim=2), torch.cat(alphas, dim=2), kernel_out


def filter_band(slab: Tensor, logits: Tensor, config: ModelConfig) -> Tensor:
    """I of one band from its kernel logits: the kernel weights, then apply (vkdt's own
    order of sums under ``vkdt-f16``); softmax kernels without a clamp in one pass of
    :func:`kpn.model.native.softmax_apply` where it applies.

    ``[B,3,h+4,w+4], [B,15,h,w] -> [B,3,h,w]``
    """
    limit = apply_limit(config.precision)  # vkdt's float16 clamp, only where vkdt's f16 is
    if config.kernel_activation == "softmax" and limit is None:
        with record_function("apply"):
            fused = native.softmax_apply(slab, logits)
        if fused is not None:
            return fused
    if config.precision == F16_PRECISION:  # apply.comp's own order of its float32 sums
        with record_function("kernel_weights"):
            factors, floor = kernel_factors(logits, config.kernel_activation)
        with record_function("apply"):
            return apply_kernel_vkdt(slab, factors, floor, limit)
    with record_function("kernel_weights"):
        tap_weights = kernel_weights(logits, config.kernel_activation)
    with record_function("apply"):
        return apply_kernel_padded(slab, tap_weights, limit)


def level_forward(
    mip: Tensor,
    mip_next: Tensor | None,
    coarse: Tensor | None,
    noise_ab: Tensor,
    up: Callable[[Tensor], Tensor],
    weights: Sequence[Tensor],
    config: ModelConfig,
    level: int,
    levels: int,
    *,
    keep_kernel: bool = False,
) -> LevelOutput:
    """One level of the network, on a whole level or a tile's crop of it: X_k, the
    kernels and alpha, I_k, and O_k = blend(up(O_{k+1}), I_k, a_k).

    :func:`kpn_forward` runs it on every level, :mod:`kpn.model.tiling` on crops of them.

    Args:
        mip: ``[B,3,h,w]`` M_k (as stored: float16-rounded under vkdt-f16).
        mip_next: ``[B,3,ceil(h/2),ceil(w/2)]`` M_{k+1}, read by a detail input.
        coarse: O_{k+1} (or the residual M_N for the coarsest level of ``add``); None for
            the coarsest level of ``mix`` and ``post_diff``, whose output is its I.
        noise_ab: ``[B,2]``.
        up: expands a ``[B,C,ceil(h/2),ceil(w/2)]`` tensor to ``[B,C,h,w]`` (``config.up``
            at the level's, or the tile's, sampling positions).
        weights: the MLP's matrices.
        config: the model's switches.
        level: k.
        levels: network levels N.
        keep_kernel: keep the network's output in the result (visualisation, tests).

    Returns:
        :class:`LevelOutput` of the level (or crop).
    """
    store = stored_image(config)
    if config.mlp_input == "detail":
        assert mip_next is not None
        with record_function("pyramid"):
            x = store(mip - up(mip_next))
    else:
        x = mip
    if level < (config.denoise_levels or levels):
        lowpass = mip if config.noise_luminance == "lowpass" else x
        image, alpha, kernel = filter_level(
            x, noise_ab, level, luminance(lowpass), weights, config, keep_kernel=keep_kernel
        )
        image, alpha = store(image), store(alpha)
    else:  # vkdt: passed through unchanged, alpha 1
        image, alpha, kernel = x, torch.ones_like(x[:, :1]), None
    if coarse is None:
        return LevelOutput(mip, x, kernel, alpha, image, image)
    with record_function("blend"):
        blended = blend_level(up(coarse), image, alpha, config.blend)
    output = blended if level == 0 else store(blended)  # O_0: float32, vkdt's output
    return LevelOutput(mip, x, kernel, alpha, image, output)


def stored_image(config: ModelConfig) -> Callable[[Tensor], Tensor]:
    """What storing an image between vkdt's shaders does to it: float16 rounding under
    ``vkdt-f16`` (kpn-t's ``rgba:f16`` node outputs), else nothing. ``[...] -> [...]``"""
    return round_f16 if config.precision == "vkdt-f16" else _unchanged


def _unchanged(image: Tensor) -> Tensor:
    return image


def kpn_forward(
    noisy: Tensor,
    noise_ab: Tensor,
    weights: Sequence[Tensor],
    config: ModelConfig,
    levels: int | None = None,
    *,
    keep_kernels: bool = True,
) -> KPNOutput:
    """Denoise a batch of images.

    Args:
        noisy: ``[B,3,H,W]`` linear RGB.
        noise_ab: ``[B,2]``, each image's Gaussian-Poissonian profile (a, b), 0..65535 scale.
        weights: the MLP's matrices (:attr:`kpn.model.mlp.MLP.weights`).
        config: the model's switches.
        levels: network levels N; default ``config.levels`` (vkdt infers with 6 what it
            trained with 4).
        keep_kernels: keep every level's network output (:attr:`LevelOutput.kernel`);
            False saves 64 bytes a pixel where only the images are read.

    Returns:
        :class:`KPNOutput` with O_0 ``[B,3,H,W]`` and the per-level results.

    Under ``precision = "vkdt-f16"`` every image is rounded as vkdt's inference graph
    stores it (:func:`stored_image`): the input M_0 and the output O_0 stay float32 (the
    module's connectors, rgba:f32 from i-pfm and to o-pfm); each mip is reduced from the
    stored float16 mip before it; details, filtered images, alphas and the coarser
    outputs are float16.
    """
    check_inputs(noisy, noise_ab)
    count = config.levels if levels is None else levels
    if not 1 <= count <= 16:
        raise KpnError(f"levels = {count} is outside 1..16")
    store = stored_image(config)
    noise_ab = noise_ab.to(device=noisy.device, dtype=noisy.dtype)

    with_residual = config.blend == "add"
    with record_function("pyramid"):
        mips = mip_pyramid(
            noisy, count + with_residual, config.down, store, config.precision == F16_PRECISION
        )
    residual = mips[count] if with_residual else None
    per_level: list[LevelOutput] = []
    coarse = residual
    for level in reversed(range(count)):
        if level == 0 and config.gradient_stop and coarse is not None:
            coarse = coarse.detach()
        height, width = mips[level].shape[-2:]
        result = level_forward(
            mips[level],
            mips[level + 1] if level + 1 < len(mips) else None,
            coarse,
            noise_ab,
            functools.partial(upsample, height=height, width=width, up=config.up),
            weights,
            config,
            level,
            count,
            keep_kernel=keep_kernels,
        )
        per_level.insert(0, result)
        coarse = result.output
    return KPNOutput(per_level[0].output, tuple(per_level), residual)


class KPN(nn.Module):
    """The multilevel KPN denoiser: an :class:`~kpn.model.mlp.MLP` and the config around it."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate("model")
        self.config = config
        self.mlp = MLP(
            config.in_features,
            config.width,
            config.n_hidden,
            config.activation,
            config.precision,
            config.vkdt_matmul,
            VKDT_INFERENCE_IN_WIDTH if config.vkdt_head_layout else 0,
        )

    def forward(self, noisy: Tensor, noise_ab: Tensor, levels: int | None = None) -> Tensor:
        """``[B,3,H,W], [B,2] -> [B,3,H,W]`` denoised."""
        return kpn_forward(
            noisy, noise_ab, self.mlp.weights, self.config, levels, keep_kernels=False
        ).output

    def inspect(self, noisy: Tensor, noise_ab: Tensor, levels: int | None = None) -> KPNOutput:
        """Like :meth:`forward`, returning every level's intermediate results too."""
        return kpn_forward(noisy, noise_ab, self.mlp.weights, self.config, levels)
