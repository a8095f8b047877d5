"""The multilevel kernel-prediction network: pyramid -> features -> MLP -> apply -> blend.

One MLP, shared by every level, predicts per pixel a 15-tap star kernel and an alpha; each
level's X is filtered with its kernels and the levels are blended back coarse to fine.
:func:`kpn_forward` is the whole computation as a pure function; :class:`KPN` holds the
MLP's weights and calls it. Each level's network and filter run in bands of rows
(:mod:`kpn.model.level_filter`), by one band implementation chosen when the pass starts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.profiler import record_function

from kpn.config import VKDT_INFERENCE_IN_WIDTH, ModelConfig
from kpn.errors import KpnError
from kpn.model.apply import F16_PRECISION
from kpn.model.blend import blend_level
from kpn.model.features import luminance
from kpn.model.level_filter import BandFilter, PassMode, band_filter_for, filter_level
from kpn.model.linearised import IMAGE_CHANNELS, check_probe, kernel_response, with_probe
from kpn.model.mlp import MLP
from kpn.model.precision import round_f16
from kpn.model.pyramid import mip_pyramid, upsample


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
    band: BandFilter,
    probe_step: float = 0.0,
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
        band: the pass's band implementation (:func:`begin_pass`); it decides whether
            the result keeps the network's output.
        probe_step: > 0 where the images carry a probe in channels 3..5
            (:mod:`kpn.model.linearised`): at level 0, the network's response to it (its
            kernels' and alpha's), sampled at this step, is added to the probe's I and O.

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
    with record_function("blend"):
        coarse_up = None if coarse is None else up(coarse)
    response = None
    if level < (config.denoise_levels or levels):
        lowpass = mip if config.noise_luminance == "lowpass" else x
        # the coarsest level has no coarser output: its guide is its own X (zero channels)
        guide = None if config.guide == "none" else x if coarse_up is None else coarse_up
        noise_lum = luminance(lowpass[:, :IMAGE_CHANNELS])  # a probe's channels: not read
        image, alpha, kernel = filter_level(
            x, noise_ab, level, noise_lum, weights, config, band, guide
        )
        if probe_step and level == 0:  # SURE's probe (design §13): the network's response
            response = kernel_response(
                x, lowpass, guide, noise_ab, level, weights, config, probe_step
            )
            image = response.add_to_filtered(image)
        image, alpha = store(image), store(alpha)
    else:  # vkdt: passed through unchanged, alpha 1
        image, alpha, kernel = x, torch.ones_like(x[:, :1]), None
    if coarse is None:
        return LevelOutput(mip, x, kernel, alpha, image, image)
    with record_function("blend"):
        blended = blend_level(coarse_up, image, alpha, config.blend, config.vkdt_post_diff_border)
    if response is not None:
        blended = response.add_to_output(blended, coarse_up, image, alpha, config)
    output = blended if level == 0 else store(blended)  # O_0: float32, vkdt's output
    return LevelOutput(mip, x, kernel, alpha, image, output)


def stored_image(config: ModelConfig) -> Callable[[Tensor], Tensor]:
    """What storing an image between vkdt's shaders does to it: float16 rounding under
    ``vkdt-f16`` (kpn-t's ``rgba:f16`` node outputs), else nothing. ``[...] -> [...]``"""
    return round_f16 if config.precision == "vkdt-f16" else _unchanged


def _unchanged(image: Tensor) -> Tensor:
    return image


def begin_pass(
    noisy: Tensor,
    noise_ab: Tensor,
    weights: Sequence[Tensor],
    config: ModelConfig,
    levels: int | None,
    *,
    keep_kernels: bool,
) -> tuple[Tensor, int, BandFilter]:
    """What a forward pass settles before any work (:func:`kpn_forward`,
    :func:`kpn.model.tiling.tiled_forward`): the inputs checked (one line for each
    mistake), the noise profile ``[B,2]`` on the image's device and dtype, the network
    levels N (``levels``, default ``config.levels``) and the band implementation of the
    pass (:func:`kpn.model.level_filter.band_filter_for`), the same for every level."""
    check_inputs(noisy, noise_ab)
    count = config.levels if levels is None else levels
    if not 1 <= count <= 16:
        raise KpnError(f"levels = {count} is outside 1..16")
    noise_ab = noise_ab.to(device=noisy.device, dtype=noisy.dtype)
    band = band_filter_for(config, PassMode.of(noisy, noise_ab, weights, keep_kernels))
    return noise_ab, count, band


def kpn_forward(
    noisy: Tensor,
    noise_ab: Tensor,
    weights: Sequence[Tensor],
    config: ModelConfig,
    levels: int | None = None,
    *,
    keep_kernels: bool = True,
    probe: Tensor | None = None,
    probe_step: float = 0.0,
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
        probe: ``[B,3,H,W]``, carried through the pass with the image's kernels and
            alphas (:mod:`kpn.model.linearised`): every image then has 6 channels, O_0's
            last three the network's derivative along the probe.
        probe_step: with a probe, the step of the kernels' sampled response to it; 0:
            none (the derivative with the kernels held fixed).

    Returns:
        :class:`KPNOutput` with O_0 ``[B,3,H,W]`` (with a probe ``[B,6,H,W]``) and the
        per-level results.

    Under ``precision = "vkdt-f16"`` every image is rounded as vkdt's inference graph
    stores it (:func:`stored_image`): the input M_0 and the output O_0 stay float32 (the
    module's connectors, rgba:f32 from i-pfm and to o-pfm); each mip is reduced from the
    stored float16 mip before it; details, filtered images, alphas and the coarser
    outputs are float16.
    """
    noise_ab, count, band = begin_pass(
        noisy, noise_ab, weights, config, levels, keep_kernels=keep_kernels
    )
    store = stored_image(config)
    if probe is not None:
        check_probe(noisy, probe, probe_step, config)
        noisy = with_probe(noisy, probe)
    probe_step = 0.0 if probe is None else probe_step

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
            band=band,
            probe_step=probe_step,
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
            config.outputs,
        )

    def forward(self, noisy: Tensor, noise_ab: Tensor, levels: int | None = None) -> Tensor:
        """``[B,3,H,W], [B,2] -> [B,3,H,W]`` denoised."""
        return kpn_forward(
            noisy, noise_ab, self.mlp.weights, self.config, levels, keep_kernels=False
        ).output

    def inspect(self, noisy: Tensor, noise_ab: Tensor, levels: int | None = None) -> KPNOutput:
        """Like :meth:`forward`, returning every level's intermediate results too."""
        return kpn_forward(noisy, noise_ab, self.mlp.weights, self.config, levels)
