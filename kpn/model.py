"""The multilevel kernel-prediction network: pyramid -> features -> MLP -> apply -> blend.

One MLP, shared by every level, predicts per pixel a 15-tap star kernel and an alpha; each
level's X is filtered with its kernels and the levels are blended back coarse to fine.
:func:`kpn_forward` is the whole computation as a pure function; :class:`KPN` holds the
MLP's weights and calls it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from kpn.apply import alpha_weight, apply_kernel, kernel_weights
from kpn.blend import blend_level
from kpn.config import ModelConfig
from kpn.errors import KpnError
from kpn.features import luminance, patch8x8_features, patch8x8_features_past_end, star15_features
from kpn.mlp import MLP, OUTPUTS, mlp_forward
from kpn.precision import round_f16
from kpn.pyramid import details, mip_pyramid, upsample

BLOCK = 16  # vkdt's network processes the pixels of a level in blocks of 16
MLP_CHUNK = 16384  # pixels per MLP call: activations of 16384 x 64 floats stay in cache


@dataclass(frozen=True)
class LevelOutput:
    """Everything one pyramid level computed, for tests and visualisation."""

    mip: Tensor  # M_i [B,3,h,w]
    x: Tensor  # X_i, the filtered image: M_i or D_i [B,3,h,w]
    kernel: Tensor | None  # [B,16,h,w] network outputs as apply reads them; None: not filtered
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
    if not torch.isfinite(noisy).all():
        raise KpnError("noisy image contains NaN or Inf")
    if not torch.isfinite(noise_ab).all() or (noise_ab < 0).any():
        raise KpnError(f"noise profile (a, b) must be finite and >= 0, got {noise_ab.tolist()}")


def block_transpose(kernels: Tensor) -> Tensor:
    """vkdt HEAD's kernel store (SPEC 10): transposed inside each block of 16 pixels.

    The weight apply reads for pixel p, output k is output p % 16 of pixel 16*(p//16) + k.

    ``[B,16,P] -> [B,16,P]``, P a multiple of 16, pixels in scanline order.
    """
    batch, outputs, pixels = kernels.shape
    blocks = kernels.reshape(batch, outputs, pixels // BLOCK, BLOCK)
    return blocks.permute(0, 3, 2, 1).reshape(batch, outputs, pixels)


def level_features(
    x: Tensor, noise_ab: Tensor, level: int, noise_lum: Tensor, features: str
) -> Tensor:
    """The network input of every pixel of one level. ``[B,3,h,w] -> [B,C,h,w]``"""
    if features == "star15":
        return star15_features(x, noise_ab, level, noise_lum)
    return patch8x8_features(x)


def predict_kernels(
    x: Tensor,
    noise_ab: Tensor,
    level: int,
    noise_lum: Tensor,
    weights: Sequence[Tensor],
    config: ModelConfig,
) -> Tensor:
    """Run the MLP on every pixel of a level.

    Args:
        x: ``[B,3,h,w]``, the level's X.
        noise_ab: ``[B,2]``.
        level: pyramid level.
        noise_lum: ``[B,h,w]``, luminance for the noise channel.
        weights: the MLP's matrices.
        config: the model's switches (features, activation, precision, block transpose).

    Returns:
        ``[B,16,h,w]``: kernel logits then alpha, as apply reads them.
    """
    batch, _, height, width = x.shape
    inputs = level_features(x, noise_ab, level, noise_lum, config.features)
    inputs = inputs.reshape(batch, inputs.shape[1], height * width)
    pixels = height * width
    padding = -pixels % BLOCK if config.block_transpose else 0
    if padding:
        # vkdt pads the batch past the last pixel: star15 reads zeros there, patch8x8
        # reads mirrored rows, and the transpose carries their outputs into real pixels
        if config.features == "star15":
            extra = inputs.new_zeros(batch, inputs.shape[1], padding)
        else:
            extra = patch8x8_features_past_end(x, padding)
        inputs = torch.cat((inputs, extra), dim=2)
    # pixels in rows, a cache-sized chunk at a time: the small matrices then run near
    # the machine's matmul speed instead of waiting on memory between layers
    outputs = torch.cat(
        [
            mlp_forward(chunk.T, weights, config.activation, config.precision).T
            for image in inputs
            for chunk in image.split(MLP_CHUNK, dim=1)
        ],
        dim=1,
    ).view(OUTPUTS, batch, pixels + padding)
    outputs = outputs.transpose(0, 1)
    if config.block_transpose:
        outputs = block_transpose(outputs)[..., :pixels]
    return outputs.reshape(batch, OUTPUTS, height, width)


def kpn_forward(
    noisy: Tensor,
    noise_ab: Tensor,
    weights: Sequence[Tensor],
    config: ModelConfig,
    levels: int | None = None,
) -> KPNOutput:
    """Denoise a batch of images.

    Args:
        noisy: ``[B,3,H,W]`` linear RGB.
        noise_ab: ``[B,2]``, each image's Gaussian-Poissonian profile (a, b), 0..65535 scale.
        weights: the MLP's matrices (:attr:`kpn.mlp.MLP.weights`).
        config: the model's switches.
        levels: network levels N; default ``config.levels`` (vkdt infers with 6 what it
            trained with 4).

    Returns:
        :class:`KPNOutput` with O_0 ``[B,3,H,W]`` and the per-level results.
    """
    check_inputs(noisy, noise_ab)
    count = config.levels if levels is None else levels
    if not 1 <= count <= 16:
        raise KpnError(f"levels = {count} is outside 1..16")
    f16 = config.precision == "vkdt-f16"
    store = round_f16 if f16 else (lambda t: t)
    noise_ab = noise_ab.to(device=noisy.device, dtype=noisy.dtype)

    with_residual = config.blend == "add"
    mips = [store(m) for m in mip_pyramid(store(noisy), count + with_residual, config.down)]
    if config.mlp_input == "detail":
        xs = [store(d) for d in details(mips, config.up)]
    else:
        xs = mips
    denoised = config.denoise_levels or count

    filtered, alphas, kernels = [], [], []
    for level in range(count):
        x = xs[level]
        if level >= denoised:  # vkdt: passed through unchanged, alpha 1
            filtered.append(x)
            alphas.append(torch.ones_like(x[:, :1]))
            kernels.append(None)
            continue
        lowpass = mips[level] if config.noise_luminance == "lowpass" else x
        kernel = predict_kernels(x, noise_ab, level, luminance(lowpass), weights, config)
        tap_weights = kernel_weights(kernel[:, : OUTPUTS - 1], config.kernel_activation)
        filtered.append(store(apply_kernel(x, tap_weights)))
        alphas.append(store(alpha_weight(kernel[:, OUTPUTS - 1 :], config.alpha_activation)))
        kernels.append(kernel)

    residual = mips[count] if with_residual else None
    outputs: list[Tensor] = [None] * count  # type: ignore[list-item]
    coarse = residual
    for level in reversed(range(count)):
        if coarse is None:  # mix and post_diff: the coarsest level's output is its I
            outputs[level] = filtered[level]
        else:
            if level == 0 and config.gradient_stop:
                coarse = coarse.detach()
            height, width = xs[level].shape[-2:]
            coarse_up = upsample(coarse, height, width, config.up)
            outputs[level] = store(
                blend_level(coarse_up, filtered[level], alphas[level], config.blend)
            )
        coarse = outputs[level]

    per_level = tuple(
        LevelOutput(mips[i], xs[i], kernels[i], alphas[i], filtered[i], outputs[i])
        for i in range(count)
    )
    return KPNOutput(outputs[0], per_level, residual)


class KPN(nn.Module):
    """The multilevel KPN denoiser: an :class:`~kpn.mlp.MLP` and the config around it."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate("model")
        self.config = config
        self.mlp = MLP(
            config.in_features, config.width, config.n_hidden, config.activation, config.precision
        )

    def forward(self, noisy: Tensor, noise_ab: Tensor, levels: int | None = None) -> Tensor:
        """``[B,3,H,W], [B,2] -> [B,3,H,W]`` denoised."""
        return self.inspect(noisy, noise_ab, levels).output

    def inspect(self, noisy: Tensor, noise_ab: Tensor, levels: int | None = None) -> KPNOutput:
        """Like :meth:`forward`, returning every level's intermediate results too."""
        return kpn_forward(noisy, noise_ab, self.mlp.weights, self.config, levels)
