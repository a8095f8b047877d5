"""One level filtered in bands of rows: features -> MLP -> kernels -> apply (design §2-§4).

A level runs in horizontal bands of about ``BAND_PIXELS`` pixels so that features,
network activations and kernels stay in cache, fused per band as vkdt fuses per block.
Every band of a forward pass goes through the same band implementation, chosen once when
the pass starts (:func:`band_filter_for`) from the model's switches and the pass's
:class:`PassMode`:

- training where :func:`kpn.model.band.band_applies`: the fused band of
  :mod:`kpn.model.band`, with its hand-written backward pass (design §12);
- otherwise the planar MLP, vkdt's kernel store (block transpose, design §10) and a kernel
  filter (:func:`kernel_filter_for`): eager torch (autograd), :mod:`kpn.model.native`'s C
  loops where nothing wants a gradient, or apply.comp's own order under ``vkdt-f16``.

Each computes the same band to float rounding (tests/model/test_band.py, test_native.py).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.profiler import record_function

from kpn.config import ModelConfig
from kpn.model import native
from kpn.model.apply import (
    F16_PRECISION,
    alpha_weight,
    apply_kernel_padded,
    apply_kernel_vkdt,
    apply_limit,
    filter_with_outputs,
    kernel_factors,
    kernel_weights,
    output_alphas,
    vkdt_softmax_gradient,
)
from kpn.model.band import band_applies, band_forward
from kpn.model.features import (
    PATCH8X8_PADDING,
    STAR15_PADDING,
    STAR15_RADIUS,
    chroma_features_padded,
    guide_features,
    patch8x8_features_padded,
    patch8x8_features_past_end,
    star15_features_padded,
    star15_snr_features_padded,
)
from kpn.model.mlp import mlp_forward_planar
from kpn.model.sampling import pad_symmetric

BLOCK = 16  # vkdt's network processes the pixels of a level in blocks of 16
BAND_PIXELS = 16384  # pixels per fused band: 16384 x 64 float activations stay in cache
# How far past a band each input reads: the features' padding (left, right, top, bottom).
FEATURE_PADDING = {
    "star15": STAR15_PADDING,
    "star15_snr": STAR15_PADDING,
    "patch8x8": PATCH8X8_PADDING,
}

# (features [B,in,P], the band's X padded by STAR15_PADDING [B,3,h+4,w+4], the MLP's
# matrices) -> (I [B,3,h,w], alpha [B,1,h,w], network output [B,K,h,w] or None)
BandFilter = Callable[[Tensor, Tensor, Sequence[Tensor]], tuple[Tensor, Tensor, Tensor | None]]
# (the band's X padded by STAR15_PADDING [B,3,h+4,w+4], kernel logits [B,T,h,w]) -> I
KernelFilter = Callable[[Tensor, Tensor], Tensor]


def block_transpose(kernels: Tensor) -> Tensor:
    """vkdt HEAD's kernel store (docs/design.md §10): transposed inside each block of 16 pixels.

    The weight apply reads for pixel p, output k is output p % 16 of pixel 16*(p//16) + k.

    ``[B,16,P] -> [B,16,P]``, planar, P a multiple of 16, pixels in scanline order.
    """
    batch, outputs, pixels = kernels.shape
    blocks = kernels.reshape(batch, outputs, pixels // BLOCK, BLOCK)
    return blocks.permute(0, 3, 2, 1).reshape(batch, outputs, pixels)


class _TransposeWithUntransposedGradient(torch.autograd.Function):
    """vkdt HEAD's training (design §10): the forward pass transposes the kernels, the
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


@dataclass(frozen=True)
class PassMode:
    """What a forward pass asks of its bands, known when it starts."""

    weight_gradients: bool  # autograd wants the weights' gradients: training
    input_gradients: bool  # autograd wants the image's or the noise profile's gradients
    keep_kernels: bool  # every level's network output is returned
    float32_cpu: bool  # float32 image and weights on the CPU, outside torch.compile

    @classmethod
    def of(
        cls, noisy: Tensor, noise_ab: Tensor, weights: Sequence[Tensor], keep_kernels: bool
    ) -> PassMode:
        """The mode of a pass over ``noisy`` ``[B,3,H,W]`` with ``noise_ab`` ``[B,2]``
        and ``weights``, in the present grad mode. Every image a level filters is made
        from ``noisy`` alone, so it wants a gradient exactly when ``noisy`` does."""
        gradients = torch.is_grad_enabled()
        return cls(
            weight_gradients=gradients and any(weight.requires_grad for weight in weights),
            input_gradients=gradients and (noisy.requires_grad or noise_ab.requires_grad),
            keep_kernels=keep_kernels,
            float32_cpu=(
                noisy.device.type == "cpu"
                and noisy.dtype == weights[-1].dtype == torch.float32
                and not torch.compiler.is_compiling()
            ),
        )


def band_filter_for(config: ModelConfig, mode: PassMode) -> BandFilter:
    """The band implementation of ``config``'s model for a pass of ``mode``: the fused
    training band (weight gradients, none for the image, kernels dropped) where it
    covers the model, else the planar network with :func:`kernel_filter_for`'s filter."""
    training = mode.weight_gradients and not (mode.input_gradients or mode.keep_kernels)
    if training and band_applies(config):
        return functools.partial(_fused_band, config)
    native_loops = mode.float32_cpu and not (mode.weight_gradients or mode.input_gradients)
    return functools.partial(
        _network_band,
        config,
        kernel_store_for(config),
        kernel_filter_for(config, native_loops),
        mode.keep_kernels or config.fine_passes > 1,  # a second pass filters with them
    )


def kernel_store_for(config: ModelConfig) -> Callable[[Tensor], Tensor]:
    """How vkdt stores the network's planar output ``[B,16,P] -> [B,16,P]``: as computed,
    transposed in blocks (vkdt HEAD), or so with HEAD's untransposed backward pass."""
    if config.vkdt_kernel_grad_untransposed:
        return _TransposeWithUntransposedGradient.apply
    if config.block_transpose:
        return block_transpose
    return _as_computed


def _as_computed(kernels: Tensor) -> Tensor:
    return kernels


def kernel_filter_for(config: ModelConfig, native_loops: bool) -> KernelFilter:
    """I of a band from its kernel logits ``[B,3,h+4,w+4], [B,T,h,w] -> [B,3,h,w]``:
    the kernel weights, then apply. Under ``vkdt-f16``, apply.comp's own order of sums
    and its float16 clamp; softmax kernels without a clamp in one pass of
    :func:`kpn.model.native.softmax_apply` where ``native_loops`` (float32 CPU tensors
    that want no gradient) and the loops build; else eager torch."""
    limit = apply_limit(config.precision)  # vkdt's float16 clamp, only where vkdt's f16 is
    if config.precision == F16_PRECISION:
        kernel_filter = functools.partial(_filter_vkdt_order, config.kernel_activation, limit)
    elif config.kernel_activation == "softmax" and native_loops and native.library() is not None:
        kernel_filter = _filter_softmax_native
    else:
        kernel_filter = functools.partial(_filter_eager, config.kernel_activation, limit)
    if config.vkdt_softmax_grad and config.kernel_activation == "softmax":
        return functools.partial(_filter_tenfold_gradient, kernel_filter)
    if config.vkdt_plain_grad and config.kernel_activation == "plain":
        return functools.partial(_filter_unnormalised_gradient, kernel_filter)
    return kernel_filter


def _filter_tenfold_gradient(kernel_filter: KernelFilter, slab: Tensor, logits: Tensor) -> Tensor:
    return kernel_filter(slab, vkdt_softmax_gradient(logits))


def _filter_unnormalised_gradient(
    kernel_filter: KernelFilter, slab: Tensor, logits: Tensor
) -> Tensor:
    """The filtered image, with ``dapply.comp``'s gradient of plain kernels: that of the
    unnormalised sum, dI/dK_k = X(p + tap_k) inside (-10, 10) (defect 17 of
    docs/vkdt.md), and none into the image, as ``dapply`` computes none."""
    image = kernel_filter(slab, logits).detach()
    factors, _ = kernel_factors(logits, "plain")
    unnormalised = apply_kernel_padded(slab.detach(), factors, None)
    return image + (unnormalised - unnormalised.detach())


def _filter_eager(activation: str, limit: float | None, slab: Tensor, logits: Tensor) -> Tensor:
    with record_function("kernel_weights"):
        tap_weights = kernel_weights(logits, activation)
    with record_function("apply"):
        return apply_kernel_padded(slab, tap_weights, limit)


def _filter_vkdt_order(
    activation: str, limit: float | None, slab: Tensor, logits: Tensor
) -> Tensor:
    with record_function("kernel_weights"):
        factors, floor = kernel_factors(logits, activation)
    with record_function("apply"):
        return apply_kernel_vkdt(slab, factors, floor, limit)


def _filter_softmax_native(slab: Tensor, logits: Tensor) -> Tensor:
    with record_function("apply"):
        fused = native.softmax_apply(slab, logits)
    if fused is not None:
        return fused
    # only where a band's rows are not of unit stride, which the loops do not read
    return _filter_eager("softmax", None, slab, logits)


def _fused_band(
    config: ModelConfig, inputs: Tensor, slab: Tensor, weights: Sequence[Tensor]
) -> tuple[Tensor, Tensor, Tensor | None]:
    """:data:`BandFilter` of :func:`kpn.model.band.band_forward`: no kernels kept."""
    with record_function("band"):
        image, raw_alpha = band_forward(inputs, slab, weights, config.activation, config.precision)
    return image, alpha_weight(raw_alpha, config.alpha_activation), None


def _network_band(
    config: ModelConfig,
    store: Callable[[Tensor], Tensor],
    kernel_filter: KernelFilter,
    keep_kernel: bool,
    inputs: Tensor,
    slab: Tensor,
    weights: Sequence[Tensor],
) -> tuple[Tensor, Tensor, Tensor | None]:
    """:data:`BandFilter` of the planar MLP, ``store`` (:func:`kernel_store_for`) and
    ``kernel_filter``; the outputs of vkdt's padding past the last pixel are dropped."""
    batch, _, height, width = slab.shape
    height, width = height - 2 * STAR15_RADIUS, width - 2 * STAR15_RADIUS
    with record_function("mlp"):
        outputs = mlp_forward_planar(
            inputs,
            weights,
            config.activation,
            config.precision,
            config.vkdt_matmul,
            config.vkdt_f16_backward,
        )
        kernel = store(outputs)[..., : height * width].view(batch, -1, height, width)
    alpha = output_alphas(kernel, config.alpha_activation, config.kernel_outputs)
    image = filter_with_outputs(
        kernel, functools.partial(kernel_filter, slab), config.kernel_outputs
    )
    return image, alpha, kernel if keep_kernel else None


def band_features(
    padded: Tensor,
    x: Tensor,
    noise_ab: Tensor,
    level: int,
    noise_lum: Tensor,
    config: ModelConfig,
    guide: Tensor | None = None,
) -> Tensor:
    """The network input of one band of a level, pixels flattened.

    ``padded``: the band's rows of X padded by ``FEATURE_PADDING`` ``[B,3,h+a,w+b]``;
    ``x``: the whole level ``[B,3,H,W]``; ``noise_lum``: the band's ``[B,h,w]``;
    ``guide``: the band's up(O_{k+1}) ``[B,3,h,w]`` where ``config.guide`` reads it.
    Returns ``[B,in,h*w]`` (the features, the guide's channels, ``model.chroma_input``'s),
    and under vkdt's block transpose the inputs of the pixels past the level's last one up
    to a whole block, as vkdt's padded batch reads them.
    Channels past the first 3 (a probe, :mod:`kpn.model.linearised`) are not read.
    """
    padded, x = padded[:, :3], x[:, :3]
    guide = None if guide is None else guide[:, :3]
    # model.chroma_input's channels come last; without a guide in the same pass as star15_snr's
    chroma_apart = config.chroma_input and config.guide != "none"
    if config.features == "patch8x8":
        inputs = patch8x8_features_padded(padded).flatten(2)
    elif config.features == "star15_snr":
        chroma = config.chroma_input and not chroma_apart
        inputs = star15_snr_features_padded(padded, noise_ab, level, noise_lum, chroma).flatten(2)
    else:
        inputs = star15_features_padded(padded, noise_ab, level, noise_lum).flatten(2)
    if config.guide != "none":
        assert guide is not None, "a guided level needs its coarser output"
        r = STAR15_RADIUS
        centre = padded[..., r : padded.shape[-2] - r, r : padded.shape[-1] - r]
        guided = guide_features(guide, centre, noise_ab, level, noise_lum).flatten(2)
        inputs = torch.cat((inputs, guided), dim=1)
    if chroma_apart:  # last: a network without it reads the same first columns
        chroma = chroma_features_padded(padded, noise_ab, level, noise_lum).flatten(2)
        inputs = torch.cat((inputs, chroma), dim=1)
    padding = -inputs.shape[2] % BLOCK if config.block_transpose else 0
    if not padding:
        return inputs
    # vkdt pads its batch past the last pixel: star15 reads zeros there, patch8x8 reads
    # mirrored rows, and the transpose carries their outputs into real pixels
    if config.features == "patch8x8":
        extra = patch8x8_features_past_end(x, padding)
    else:
        extra = inputs.new_zeros(*inputs.shape[:2], padding)
    return torch.cat((inputs, extra), dim=2)


def filter_level(
    x: Tensor,
    noise_ab: Tensor,
    level: int,
    noise_lum: Tensor,
    weights: Sequence[Tensor],
    config: ModelConfig,
    band: BandFilter,
    guide: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Predict every pixel's kernel and alpha on one level, and filter the level with them,
    band by band.

    Args:
        x: ``[B,3,h,w]``, the level's X.
        noise_ab: ``[B,2]``.
        level: pyramid level.
        noise_lum: ``[B,h,w]``, luminance for the noise channel.
        weights: the MLP's matrices.
        config: the model's switches.
        band: the pass's band implementation (:func:`band_filter_for`).
        guide: ``[B,3,h,w]`` up(O_{k+1}), read where ``config.guide`` is not ``"none"``.

    Returns:
        filtered I ``[B,3,h,w]``, alpha ``[B,1,h,w]`` (``[B,2,h,w]``, luma's and
        chroma's, with ``model.chroma_kernel``), and the network output as apply reads it
        ``[B,K,h,w]`` (K = ``config.kernel_outputs``: kernel logits, then alpha; ``[B,2K,h,w]``,
        luma's then chroma's, with ``model.chroma_kernel``),
        or None where ``band`` drops it.
    """
    batch, _, height, width = x.shape
    padding = FEATURE_PADDING[config.features]
    feature_input = pad_symmetric(x, *padding)
    apply_input = feature_input if padding == STAR15_PADDING else pad_symmetric(x, *STAR15_PADDING)
    feature_rows = feature_input.shape[-2] - height
    rows = band_rows(batch, height, width, config.block_transpose)
    results = []
    for top in range(0, height, rows):
        bottom = min(top + rows, height)
        with record_function("features"):
            slab = feature_input[:, :, top : bottom + feature_rows]
            guide_rows = None if guide is None else guide[:, :, top:bottom]
            inputs = band_features(
                slab, x, noise_ab, level, noise_lum[:, top:bottom], config, guide_rows
            )
        slab = apply_input[:, :, top : bottom + 2 * STAR15_RADIUS]
        results.append(band(inputs, slab, weights))
    filtered, alphas, kernels = zip(*results, strict=True)
    with record_function("copies"):
        kernel = None if kernels[0] is None else torch.cat(kernels, dim=2)
        image = torch.cat(filtered, dim=2)
    if level == 0 and config.fine_passes == 2:
        assert kernel is not None, "a second filter pass needs the level's kernels"
        native_loops = (
            image.device.type == "cpu"
            and image.dtype == torch.float32
            and not torch.is_grad_enabled()
        )
        second = kernel_filter_for(config, native_loops)
        logits = kernel[:, : config.kernel_outputs - 1]
        image = second(pad_symmetric(image, *STAR15_PADDING), logits)
    return image, torch.cat(alphas, dim=2), kernel
