"""Training tiles as vkdt's ``cnngenin`` makes them (docs/design.md §8), seeded and pure.

Per tile, in vkdt's order: an exposure ``ev`` uniform in [ev_min, ev_max], a flip (one
uniform number, its two bits flip x and y), an offset uniform over the whole image (the
tile mirrored past the edges, design §0), then in the noise modes a profile (a, b) and a
standard normal z per pixel and channel. The tile reads image pixel
``mirror(offset + (T-1-x if flipped else x))``; both images are multiplied by 2**ev.

``generate`` modes (vkdt randomises only when ``generate != 0``):

- 0: the static top-left tile of the pair, no flip, ev 0.
- 1: random tiles (offset, flips, ev), the input as it is.
- 2: the input replaced by reference + noise: x + z sqrt(a + 65535 max(x,0) b) / 65535.
- 3: the input Bayer-mosaicked: RGGB at (0, 0); the chosen value goes to all channels.
- 4: noise, then the mosaic.

vkdt draws the noise after the exposure, so (a, b) is the profile of the tile as
delivered. Where the input is a real noisy image (modes 0, 1, 3 of a ``pairs`` dataset)
its profile is carried along and scaled with the exposure: k = 2**ev turns (a, b) into
(k^2 a, k b). Where the input is the reference itself and no noise is added, the profile is
(0, 0), as vkdt reports it. ``synthesize`` takes its randomness from a
``torch.Generator`` passed in, so a tile is a pure function of the generator's state; the
draws are pure functions of the uniform numbers they are given.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from kpn.config import NOISE_MODES, DataConfig, TileOffset
from kpn.metrics import srgb_slope
from kpn.model.features import NOISE_SCALE, noise_sigma
from kpn.model.sampling import mirror_index

MOSAIC_MODES = (3, 4)


@dataclass(frozen=True)
class Sample:
    """One training tile: ``noisy [3,T,T]``, ``reference [3,T,T]``, ``noise_ab [2]``."""

    noisy: Tensor
    reference: Tensor
    noise_ab: Tensor


@dataclass(frozen=True)
class TileDraw:
    """cnngenin's random choices for one tile: exposure, flips and offset (x, y); and kpn's
    transpose (``data.transpose``), after the flips."""

    ev: float
    flip_x: bool
    flip_y: bool
    offset_x: int
    offset_y: int
    transpose: bool = False


# uniform numbers per tile, in vkdt's order: ev, flip, offset x, offset y, noise a, noise b
TILE_UNIFORMS = 6


def uniforms(count: int, generator: torch.Generator) -> list[float]:
    """``count`` numbers uniform in [0, 1), float64, in one draw."""
    return torch.rand(count, generator=generator, dtype=torch.float64).tolist()


def draw_offset(size: int, tile: int, offset: TileOffset, u: float) -> int:
    """Tile origin along one axis from a uniform ``u``.

    ``"anywhere"``: vkdt's ``int(size * u)``, so the tile may run past the edge (mirrored).
    ``"inside"``: the tile lies within the image, ``int((size - tile + 1) * u)``.
    """
    choices = size if offset == "anywhere" else max(size - tile + 1, 1)
    return min(int(choices * u), choices - 1)  # a product may round up to ``choices``


def draw_tile(
    height: int,
    width: int,
    tile: int,
    config: DataConfig,
    offset: TileOffset,
    u: Sequence[float],
) -> TileDraw:
    """cnngenin's per-tile choices from 4 uniform numbers ``u``: ev, flip (its bits: x, y,
    and with ``data.transpose`` a third, the transpose), offset x, offset y. Mode 0 makes
    none of them."""
    if config.generate == 0:
        return TileDraw(0.0, False, False, 0, 0)
    ev = config.ev_min + (config.ev_max - config.ev_min) * u[0]
    flip = int((8 if config.transpose else 4) * u[1])  # vkdt's draws as they were without
    offset_x = draw_offset(width, tile, offset, u[2])
    offset_y = draw_offset(height, tile, offset, u[3])
    flip_x, flip_y = bool(flip & 1) and config.flip_x, bool(flip & 2) and config.flip_y
    return TileDraw(ev, flip_x, flip_y, offset_x, offset_y, bool(flip & 4))


def cut_tile(image: Tensor, draw: TileDraw, tile: int) -> Tensor:
    """The tile at ``draw``'s offset and flips, mirrored past the edges (design §0), then
    transposed where ``draw`` says.

    ``[C,H,W] -> [C,T,T]``: tile pixel (x, y) reads image pixel
    ``mirror(offset_x + (T-1-x if flip_x else x), W)`` and likewise in y (before the
    transpose, which swaps x and y). A tile inside the image may be a view of it.
    """
    if draw.transpose:
        return cut_tile(image, dataclasses.replace(draw, transpose=False), tile).mT
    height, width = image.shape[-2:]
    if draw.offset_x + tile <= width and draw.offset_y + tile <= height:
        window = image[
            ..., draw.offset_y : draw.offset_y + tile, draw.offset_x : draw.offset_x + tile
        ]
        flips = [dim for dim, flip in ((-1, draw.flip_x), (-2, draw.flip_y)) if flip]
        return window.flip(flips) if flips else window
    steps = torch.arange(tile)
    xs = (tile - 1 - steps) if draw.flip_x else steps
    ys = (tile - 1 - steps) if draw.flip_y else steps
    columns = mirror_index(xs + draw.offset_x, width)
    rows = mirror_index(ys + draw.offset_y, height)
    # rows first: whole rows copy fast, and the column gather then runs on T rows only
    return image.index_select(-2, rows).index_select(-1, columns)


def draw_noise_profile(config: DataConfig, cameras: Tensor | None, u: Sequence[float]) -> Tensor:
    """One noise profile (a, b) on the 0..65535 scale, from two uniform numbers ``u``.

    ``"uniform"``: vkdt's law, a and b uniform in their ranges (vkdt: a = 1000*65535*u1,
    b = 1000*u2). ``"loguniform"``: log a and log b uniform in their ranges: each decade
    as likely, as real cameras spread. ``"loglevel"``: the noise variance at mid-grey,
    ``v = a + 65535/2 b``, log-uniform between the ranges' lowest and highest, and the
    shot noise's share of it, ``65535/2 b / v``, uniform in [0, 1]; a and b then clamped
    to their ranges. Each decade of sigma is as likely: under ``"loguniform"`` a quiet
    tile needs both a and b low, so that ISO 800's level is drawn about one time in 20.
    ``"cameras"``: one of ``cameras [K,2]`` (real profiles), each equally likely.

    Returns ``[2]`` float32.
    """
    u1, u2 = u
    if config.noise == "cameras":
        if cameras is None or not len(cameras):
            raise ValueError("noise = 'cameras' needs a [K,2] tensor of profiles")
        return cameras[min(int(len(cameras) * u1), len(cameras) - 1)].float()
    ranges = ((config.noise_a_min, config.noise_a_max), (config.noise_b_min, config.noise_b_max))
    if config.noise == "loglevel":
        return _loglevel_profile(ranges, u1, u2)
    values = []
    for (low, high), u in zip(ranges, (u1, u2), strict=True):
        if config.noise == "loguniform":
            values.append(math.exp(math.log(low) + u * (math.log(high) - math.log(low))))
        else:
            values.append(low + u * (high - low))
    return torch.tensor(values, dtype=torch.float32)


def _loglevel_profile(
    ranges: tuple[tuple[float, float], tuple[float, float]], u1: float, u2: float
) -> Tensor:
    """``"loglevel"``'s (a, b) ``[2]``: u1 places the mid-grey variance, u2 its shot share."""
    (a_min, a_max), (b_min, b_max) = ranges
    mid = NOISE_SCALE / 2
    low, high = a_min + mid * b_min, a_max + mid * b_max
    variance = math.exp(math.log(low) + u1 * (math.log(high) - math.log(low)))
    a = min(max((1.0 - u2) * variance, a_min), a_max)
    b = min(max(u2 * variance / mid, b_min), b_max)
    return torch.tensor((a, b), dtype=torch.float32)


def told_profile(noise_ab: Tensor, jitter: float, generator: torch.Generator) -> Tensor:
    """The profile a training tile tells the network: ``noise_ab [2]`` times f^2 (its
    sigma times f), f log-uniform in [1/jitter, jitter] from ``generator``; ``jitter`` 1:
    ``noise_ab`` itself, the generator untouched."""
    if jitter == 1.0:
        return noise_ab
    u = float(torch.rand((), generator=generator, dtype=torch.float64))
    factor = jitter ** (2.0 * u - 1.0)
    return noise_ab * factor**2


def add_noise(image: Tensor, noise_ab: Tensor, generator: torch.Generator) -> Tensor:
    """Gaussian-Poissonian noise, per pixel and channel: x + z sqrt(a + 65535 max(x,0) b)/65535.

    ``[3,H,W], [2] -> [3,H,W]``; z standard normal from ``generator``.
    """
    # noise_sigma works on [B,H,W] luminance with one (a, b) per image: the channels are
    # three images with the same profile
    sigma = noise_sigma(image, noise_ab.expand(image.shape[0], 2), 0)
    z = torch.randn(image.shape, generator=generator, dtype=image.dtype)
    return image + z * sigma


def add_grain(clean: Tensor, grain: float, generator: torch.Generator) -> Tensor:
    """``data.grain`` (kpn only): on half the tiles (``u < 1/2`` leaves the tile as it is),
    white grain of std ``(2u - 1) grain`` on the sRGB scale, carried to linear by the
    slope of the sRGB curve at each value, per pixel and channel: a scan's film grain or a
    photo's finest texture, which the network must keep as the image's.

    ``[3,T,T] -> [3,T,T]``; ``grain`` 0: ``clean`` itself, the generator untouched.
    """
    if grain == 0.0:
        return clean
    u = float(torch.rand((), generator=generator, dtype=torch.float64))
    if u < 0.5:
        return clean
    z = torch.randn(clean.shape, generator=generator, dtype=clean.dtype)
    return clean + z * ((2 * u - 1) * grain / srgb_slope(clean))


def bayer_mosaic(image: Tensor) -> Tensor:
    """Design §8's three-channel RGGB mosaic: at pixel (x, y), (x+y) odd -> green, else y odd
    -> blue, else red; the chosen value is written to all three channels.

    ``[...,3,H,W] -> [...,3,H,W]``
    """
    height, width = image.shape[-2:]
    x = torch.arange(width)
    y = torch.arange(height)[:, None]
    channel = torch.where((x + y) % 2 == 1, 1, torch.where(y % 2 == 1, 2, 0))  # [H,W]
    index = channel.expand(*image.shape[:-3], 1, height, width)
    return torch.gather(image, -3, index).expand_as(image).clone()


def synthesize(
    reference: Tensor,
    noisy: Tensor | None,
    noisy_ab: Tensor | None,
    config: DataConfig,
    tile: int,
    offset: TileOffset,
    cameras: Tensor | None,
    generator: torch.Generator,
) -> Sample:
    """One training tile from an image pair, as cnngenin makes it (design §8).

    Args:
        reference: ``[3,H,W]`` clean image.
        noisy: ``[3,H,W]`` the real noisy input, or None: the input is the reference.
        noisy_ab: ``[2]`` profile of ``noisy`` (0..65535 scale); None when ``noisy`` is.
        config: the data section (generate mode, ev range, flips, noise law and ranges).
        tile: tile side T.
        offset: ``"anywhere"`` (vkdt) or ``"inside"`` (the tile within the image).
        cameras: ``[K,2]`` real profiles for the ``"cameras"`` noise law, else None.
        generator: the tile's randomness, advanced by the draws.

    Returns:
        the tile's noisy input, reference and noise profile (0..65535 scale, exposed).
    """
    u = uniforms(TILE_UNIFORMS, generator)
    draw = draw_tile(reference.shape[-2], reference.shape[-1], tile, config, offset, u[:4])
    gain = 2.0**draw.ev
    clean = cut_tile(reference, draw, tile) * gain
    if config.generate in NOISE_MODES:
        noise_ab = draw_noise_profile(config, cameras, u[4:])
        clean = add_grain(clean, config.grain, generator)
        image = add_noise(clean, noise_ab, generator)
    elif noisy is None:
        noise_ab = torch.zeros(2)
        image = clean
    else:
        if noisy_ab is None:
            raise ValueError("a real noisy input needs its noise profile noisy_ab")
        noise_ab = noisy_ab * torch.tensor([gain * gain, gain], dtype=torch.float32)
        image = cut_tile(noisy, draw, tile) * gain
    if config.generate in MOSAIC_MODES:
        image = bayer_mosaic(image)
    return Sample(image, clean, noise_ab)
