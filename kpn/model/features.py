"""Per-pixel network input (docs/design.md §2): what the MLP sees of one pyramid level.

Tap order and channel order are vkdt's (``input.glsl``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from kpn.model import native
from kpn.model.sampling import mirror_index

# Rec.2020 luminance weights, as vkdt's luminance_rec2020.
LUMA_REC2020 = (0.2627002, 0.6779981, 0.0593017)
# The 15 taps (dx, dy) of the star-shaped kernel, in vkdt's order (also used by apply).
STAR15_TAPS = (
    (0, -2),
    (-2, -1), (-1, -1), (0, -1), (1, -1), (2, -1),
    (-1, 0), (0, 0), (1, 0),
    (-2, 1), (-1, 1), (0, 1), (1, 1), (2, 1),
    (0, 2),
)  # fmt: skip
STAR15_RADIUS = 2
STAR15_PADDING = (2, 2, 2, 2)  # left, right, top, bottom
# model.kernel_taps = "star21" (design §20): star15 and its transpose, 5x5 without its
# corners, the same reach. star15's taps first, so that they keep their outputs.
STAR21_TAPS = (*STAR15_TAPS, (-1, -2), (1, -2), (-2, 0), (2, 0), (-1, 2), (1, 2))
KERNEL_TAPS = {"star15": STAR15_TAPS, "star21": STAR21_TAPS}
# patch8x8: channel c reads tap (c//8 - 4, c%8 - 4).
PATCH8X8_TAPS = tuple((c // 8 - 4, c % 8 - 4) for c in range(64))
PATCH8X8_PADDING = (4, 3, 4, 3)
NOISE_SCALE = 65535.0  # vkdt's noise profiles live on the 0..65535 scale
OPPONENT_RG, OPPONENT_YB = 1 / math.sqrt(2), 1 / math.sqrt(6)  # orthonormal opponent axes
SIGMA_FLOOR = 1e-7  # star15_snr divides by sigma: a noise-free profile gives 1e7, not inf
# ... and takes log2(65535 sigma): a profile near float32's largest (a, b) overflowed the
# variance to inf there, and the network's output to NaN. A sigma of 1e30 already leaves
# every tap's channel at 0 for any image: larger ones are taken as it.
SIGMA_CEIL = 1e30
STAR15_CENTRE = STAR15_TAPS.index((0, 0))


def kernel_taps(count: int) -> tuple[tuple[int, int], ...]:
    """The taps (dx, dy) of a kernel of ``count`` weights, in their order (15: star15,
    21: star21)."""
    for taps in KERNEL_TAPS.values():
        if len(taps) == count:
            return taps
    raise ValueError(f"no kernel has {count} taps")


def luminance(rgb: Tensor) -> Tensor:
    """Rec.2020 luminance. ``[B,3,H,W] -> [B,H,W]``"""
    r, g, b = rgb.unbind(1)
    return LUMA_REC2020[0] * r + LUMA_REC2020[1] * g + LUMA_REC2020[2] * b


def saturation(rgb: Tensor) -> Tensor:
    """vkdt's "saturation", max(r,g,b) - min(r,g,b). ``[B,3,H,W] -> [B,H,W]``"""
    return rgb.amax(1) - rgb.amin(1)


def noise_sigma(lum: Tensor, noise_ab: Tensor, level: int) -> Tensor:
    """Noise standard deviation at luminance ``lum`` on pyramid level ``level``.

    0.5**level * sqrt(a + 65535*max(lum,0)*b) / 65535: the Gaussian-Poissonian profile
    (a, b) on the 0..65535 scale, halved per level as a 2x2 mean halves the deviation.

    Args:
        lum: ``[B,H,W]``.
        noise_ab: ``[B,2]``, one (a, b) per image.
        level: pyramid level of ``lum``.

    Returns:
        ``[B,H,W]``.
    """
    a = noise_ab[:, 0].view(-1, 1, 1)
    b = noise_ab[:, 1].view(-1, 1, 1)
    variance = a + NOISE_SCALE * lum.clamp(min=0) * b
    return 0.5**level * torch.sqrt(variance) / NOISE_SCALE


def star15_features_padded(
    padded: Tensor, noise_ab: Tensor, level: int, noise_lum: Tensor
) -> Tensor:
    """The 32-channel ``star15`` input of an X already padded by ``STAR15_PADDING``, so that
    a caller can work on horizontal bands of a level (the whole level:
    :func:`kpn.model.reference.star15_features`).

    Channel 2t is the luminance of tap t, 2t+1 its saturation, 30 the noise sigma at the
    centre, 31 the constant 1 (the bias path of a network without biases).

    Args:
        padded: ``[B,3,h+4,w+4]``, the level's X (mip or detail), padded.
        noise_ab: ``[B,2]``.
        level: pyramid level (scales the sigma).
        noise_lum: ``[B,h,w]`` luminance the sigma is computed from (vkdt: of X itself).

    Returns:
        ``[B,32,h,w]``.
    """
    height, width = noise_lum.shape[-2:]
    r = STAR15_RADIUS
    lum, sat = luminance(padded), saturation(padded)
    channels = []
    for dx, dy in STAR15_TAPS:
        window = (slice(None), slice(r + dy, r + dy + height), slice(r + dx, r + dx + width))
        channels += [lum[window], sat[window]]
    channels.append(noise_sigma(noise_lum, noise_ab, level))
    channels.append(torch.ones_like(channels[0]))
    return torch.stack(channels, dim=1)


class _SignedLog1p(torch.autograd.Function):
    """sign(x) log(1 + |x|), with a backward pass of one division (autograd's of abs and
    copysign costs three times the forward; torch.asinh, the smooth alternative, is not
    vectorised on the CPU and took a quarter of a training step)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor) -> Tensor:
        magnitude = x.abs()
        ctx.save_for_backward(magnitude)
        return torch.log1p(magnitude).copysign_(x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        (magnitude,) = ctx.saved_tensors
        return grad / (magnitude + 1)


def signed_log1p(x: Tensor) -> Tensor:
    """sign(x) log(1 + |x|), elementwise: the identity's slope at 0, a logarithm far out."""
    return _SignedLog1p.apply(x)


def star15_snr_features_padded(
    padded: Tensor, noise_ab: Tensor, level: int, noise_lum: Tensor, chroma: bool = False
) -> Tensor:
    """kpn's own ``star15_snr`` input: the star15 taps in units of the noise.

    What a denoiser must decide, whether a neighbour differs from the centre by more than
    the noise, is a function of (tap - centre) / sigma, not of absolute values: the same
    edge is signal at ISO 100 and noise at ISO 51200. ``star15`` leaves the network to
    divide by a sigma channel of order 1e-3 beside values of order 1; this input does the
    division, and s(v) = sign(v) log(1 + |v|) compresses the result (linear within a
    sigma, logarithmic beyond, so 1e4 sigma of a clean edge stays a moderate number).
    Channels as star15's: 2t, 2t+1 = s((lum_t - lum_c) / sigma), s((sat_t - sat_c) / sigma)
    for the 14 outer taps, the centre's own slots s(lum_c / sigma), s(sat_c / sigma) (its
    signal-to-noise ratio), 30 = log2(65535 sigma) / 16 (the noise level itself), 31 = 1.
    vkdt's input.glsl does not compute this: such a network runs in kpn only.

    ``[B,3,h+4,w+4] -> [B,32,h,w]``, with ``chroma`` :func:`chroma_features_padded`'s
    channels after them (``[B,62,h,w]``); on float32 CPU tensors (no gradient) by
    :func:`kpn.model.native.star15_snr_features` where it builds, stored channels last.
    """
    fused = native.star15_snr_features(padded, noise_ab, level, noise_lum, chroma)
    if fused is not None:
        return fused
    if chroma:
        both = (star15_snr_features_padded(padded, noise_ab, level, noise_lum),)
        both += (chroma_features_padded(padded, noise_ab, level, noise_lum),)
        return torch.cat(both, 1)
    height, width = noise_lum.shape[-2:]
    r = STAR15_RADIUS
    lum, sat = luminance(padded), saturation(padded)
    sigma = noise_sigma(noise_lum, noise_ab, level).clamp(min=SIGMA_FLOOR, max=SIGMA_CEIL)
    inverse = sigma.reciprocal()
    taps = []
    for dx, dy in STAR15_TAPS:
        window = (slice(None), slice(r + dy, r + dy + height), slice(r + dx, r + dx + width))
        taps.append((lum[window], sat[window]))
    lum_c, sat_c = taps[STAR15_CENTRE]
    channels = []
    for index, (lum_t, sat_t) in enumerate(taps):
        if index == STAR15_CENTRE:
            channels += [lum_c * inverse, sat_c * inverse]
        else:
            channels += [(lum_t - lum_c) * inverse, (sat_t - sat_c) * inverse]
    features = signed_log1p(torch.stack(channels, dim=1))
    level_channel = torch.log2(sigma * NOISE_SCALE) / 16
    return torch.cat((features, level_channel[:, None], torch.ones_like(level_channel)[:, None]), 1)


def opponent_colours(rgb: Tensor) -> tuple[Tensor, Tensor]:
    """Two orthonormal opponent colours, (r - g) / sqrt 2 and (r + g - 2b) / sqrt 6: the
    chroma plane, in which RGB noise of deviation sigma keeps deviation sigma.
    ``[B,3,...] -> [B,...] x 2``"""
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    return (r - g) * OPPONENT_RG, (r + g - 2 * b) * OPPONENT_YB


def chroma_features_padded(
    padded: Tensor, noise_ab: Tensor, level: int, noise_lum: Tensor
) -> Tensor:
    """``model.chroma_input``'s 30 channels (design §18), after star15_snr's: each tap's
    two opponent colours (:func:`opponent_colours`) against the centre's, in noise units
    as star15_snr's taps, s((o_t - o_c) / sigma); the centre's own slots s(o_c / sigma).
    star15_snr's saturation, max - min, cannot tell a red edge from a green one of the
    same luminance; these can, so the chroma kernel can keep coloured edges.

    ``[B,3,h+4,w+4] -> [B,30,h,w]``, channels 2t, 2t+1 for tap t.
    """
    batch = padded.shape[0]
    height, width = noise_lum.shape[-2:]
    r = STAR15_RADIUS
    planes = torch.stack(opponent_colours(padded), 1)  # [B,2,h+4,w+4]
    sigma = noise_sigma(noise_lum, noise_ab, level).clamp(min=SIGMA_FLOOR, max=SIGMA_CEIL)
    inverse = sigma.reciprocal()[:, None]
    centre = planes[..., r : r + height, r : r + width]
    differences = []
    for dx, dy in STAR15_TAPS:
        tap = planes[..., r + dy : r + dy + height, r + dx : r + dx + width]
        differences.append((tap if (dx, dy) == (0, 0) else tap - centre) * inverse)
    stacked = torch.stack(differences, 1)  # [B,15,2,h,w]
    return signed_log1p(stacked.view(batch, 2 * len(differences), height, width))


def guide_features(
    guide: Tensor, x: Tensor, noise_ab: Tensor, level: int, noise_lum: Tensor
) -> Tensor:
    """The ``centre`` guide's two channels (design §16): the expanded coarser output
    up(O_{k+1}) against the pixel, in noise units as star15_snr's taps,
    s((lum_g - lum_c) / sigma), s((sat_g - sat_c) / sigma).

    A 5x5 star cannot tell a flat region's low-frequency noise from signal; the coarser
    level, which has filtered that noise, can. Differentiable in ``guide``: training
    teaches the coarser levels to guide (design §16).

    Args:
        guide: ``[B,3,h,w]`` up(O_{k+1}) at the level's (or band's) pixels.
        x: ``[B,3,h,w]`` the level's X at the same pixels.
        noise_ab: ``[B,2]``.
        level: pyramid level (scales the sigma).
        noise_lum: ``[B,h,w]`` luminance the sigma is computed from.

    Returns:
        ``[B,2,h,w]``.
    """
    sigma = noise_sigma(noise_lum, noise_ab, level).clamp(min=SIGMA_FLOOR, max=SIGMA_CEIL)
    inverse = sigma.reciprocal()
    channels = (
        (luminance(guide) - luminance(x)) * inverse,
        (saturation(guide) - saturation(x)) * inverse,
    )
    return signed_log1p(torch.stack(channels, dim=1))


def patch8x8_features_padded(padded: Tensor) -> Tensor:
    """The 64-channel ``patch8x8`` input of an X already padded by ``PATCH8X8_PADDING``:
    luminance of |rgb| on an 8x8 patch (dx,dy in -4..3); the whole level:
    :func:`kpn.model.reference.patch8x8_features`.

    No noise channel and no constant: vkdt's WIDTH 64 build ignores the noise profile.

    ``[B,3,h+7,w+7] -> [B,64,h,w]``
    """
    height, width = padded.shape[-2] - 7, padded.shape[-1] - 7
    lum = luminance(padded.abs())
    channels = [
        lum[:, 4 + dy : 4 + dy + height, 4 + dx : 4 + dx + width] for dx, dy in PATCH8X8_TAPS
    ]
    return torch.stack(channels, dim=1)


def patch8x8_features_past_end(x: Tensor, count: int) -> Tensor:
    """``patch8x8`` input of the ``count`` pixels after the last one, as vkdt reads them.

    vkdt runs the network on a batch padded past the image's last pixel; pixel p sits at
    (p % W, p // W), so the padding pixels lie in rows H, H+1, ... which vkdt's patch8x8
    input reads unchecked through the mirrored sampler (design §10).

    ``[B,3,H,W] -> [B,64,count]``
    """
    height, width = x.shape[-2:]
    pixel = height * width + torch.arange(count, device=x.device)
    px, py = pixel % width, pixel // width
    lum = luminance(x.abs())
    channels = []
    for dx, dy in PATCH8X8_TAPS:
        cols, rows = mirror_index(px + dx, width), mirror_index(py + dy, height)
        channels.append(lum[:, rows, cols])
    return torch.stack(channels, dim=1)
