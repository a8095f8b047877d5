"""Tiled inference: the KPN's output computed in tiles, equal to the untiled forward pass.

A photo of 24 megapixels does not fit through :func:`kpn.model.network.kpn_forward` at once in
bounded memory (it keeps every level's kernels, 64 bytes a pixel), so it is denoised in
tiles. The tiles here are cut **level by level**, coarse to fine, not once through the
whole pyramid:

1. The mip pyramid M_1, M_2, ... of the whole image is computed first, in bands of full
   rows (:func:`global_mips`): a third of the image's size, and exact.
2. For each level k from the coarsest to 0, the level's output O_k is computed in tiles
   of that level (:func:`level_tile`): a tile crops M_k, M_{k+1} (for a detail input) and
   the finished coarser output O_{k+1}, and computes X_k, the kernels, I_k and O_k on its
   crop exactly as :func:`kpn.model.network.kpn_forward` does on the whole level. O_k is kept
   whole for the next finer level; O_0 is written into the caller's output.

Why not tiles through the whole pyramid at once. Such a tile needs a halo of the whole
pyramid's receptive field, :func:`kpn.model.reference.receptive_radius`: each coarser
level doubles it, so it is 30 pixels for the design (4 levels) and 317 for vkdt's 6-level
inference (binomial5/bilinear, detail input), which computes a 1024-pixel tile 2.6 times
over. Per level, every input of a tile (M_k, M_{k+1}, O_{k+1}) is an exact crop, so the
halo is only the reach of one level's own operations: 2 to 10 pixels (:func:`level_halo`). Two
further reasons: vkdt's ``bilinear`` expansion samples at ``(x+1) * Wc/W - 0.5``, which
for an odd-sized level drifts with the *global* position (not shift-invariant), so a tile
must use the whole level's sampling positions, and that needs the level's sizes; and the
kernel block transpose (below) needs full rows of a level.

The halo (contamination depth). A tile's crop ends where the image does not: past that
edge the crop mirrors what the image would hold, so values near the edge are wrong. The
depth d of that wrong band, in pixels of the level at hand, grows through each stage
(these are the rules of :func:`down_depth`, :func:`up_depth` and the reach tables):

- a same-level stage reading taps up to r pixels away: d + r. The star15 features and
  the apply read r = 2 (taps (+-2, +-1), (0, +-2)); patch8x8 features r = 4 (taps -4..3).
- down (fine d -> coarse): coarse x reads fine 2x..2x+1 (box2, box2_vkdt), or 2x-2..2x+2
  (binomial5): ceil((d + reach) / 2), reach 0 or 2.
- up (coarse d -> fine): fine x reads coarse x//2-1 .. x//2+1 (bspline): 2d + 2; bilinear
  reads floor(x/2 + drift) and the next, drift in [0, 0.5]: 2d + 3.
- post_diff's up(down(I)) (a 2x2 mean, then bspline): 2 ceil(d/2) + 2.
- vkdt's block transpose (per level, in full-row stripes): a pixel's kernel comes from
  the 15 pixels after it in its block, in scanline order: ceil(15 / w) more rows.

A tile's core is correct when the crop reaches ``level_halo`` pixels past it on every
side where the image goes on. Crops start on even pixels so that a tile's coarse grid is
the image's (fine 2c, 2c+1 -> coarse c), and where the crop reaches the image's edge it
mirrors exactly where the image does: tiled equals untiled to float rounding.

vkdt's kernel block transpose (``model.block_transpose``, docs/design.md §10) groups the pixels of a
level in blocks of 16 in scanline order, so a block wraps from one row into the next
wherever the width is not a multiple of 16. A tile reproduces it when it holds whole
rows and starts on a row r with r * w a multiple of 16 (its blocks are then the image's):
such configs are tiled in full-width stripes of the level, and exact too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from kpn.config import InferConfig, ModelConfig
from kpn.errors import KpnError
from kpn.model.apply import F16_PRECISION
from kpn.model.features import STAR15_RADIUS
from kpn.model.level_filter import BLOCK, BandFilter
from kpn.model.linearised import IMAGE_CHANNELS, check_probe, with_probe
from kpn.model.network import begin_pass, level_forward, stored_image
from kpn.model.pyramid import bilinear_coords, level_sizes, mip_pyramid, up_bspline
from kpn.model.sampling import sample_linear_axis

# Extra fine taps a coarse pixel reads past its own 2x2 block, per reduction.
DOWN_REACH = {"box2": 0, "binomial5": 2, "box2_vkdt": 0}
# Fine pixels made wrong by one wrong coarse pixel past the edge, per expansion.
UP_REACH = {"bspline": 2, "bilinear": 3}
# How far the per-pixel network input reads (star15: (+-2, +-1), (0, +-2); patch8x8: -4..3).
FEATURE_REACH = {"star15": STAR15_RADIUS, "star15_snr": STAR15_RADIUS, "patch8x8": 4}
APPLY_REACH = STAR15_RADIUS  # the star kernel's taps
BAND_PIXELS = 1 << 22  # pixels per band of the global mip pyramid (4 Mpx, ~50 MB a band)
DEFAULT_TILE = InferConfig.tile  # a core of ~1 Mpx: a few percent of halo, ~250 MB at work


def down_depth(depth: int, down: str) -> int:
    """Wrong-band depth on the coarse level from one of ``depth`` on the fine level."""
    return -(-(depth + DOWN_REACH[down]) // 2)


def up_depth(depth: int, up: str) -> int:
    """Wrong-band depth on the fine level from one of ``depth`` on the coarse level."""
    return 2 * depth + UP_REACH[up]


def smooth_depth(depth: int) -> int:
    """Wrong-band depth after post_diff's up(down(I)): a 2x2 mean, then bspline."""
    return up_depth(-(-depth // 2), "bspline")


def level_depths(config: ModelConfig, x: int, level: int, levels: int) -> tuple[int, int]:
    """(kernel and alpha, filtered image I) depths of a level whose X has depth ``x``."""
    if level >= (config.denoise_levels or levels):  # passed through: I = X, alpha 1
        return 0, x
    kernel = x + FEATURE_REACH[config.features]
    if config.guide != "none" and level < levels - 1:  # up(O_{k+1}) at the pixel itself
        kernel = max(kernel, up_depth(0, config.up))
    image = max(kernel, x + APPLY_REACH)
    if level == 0 and config.fine_passes == 2:  # I filtered again with the same kernels
        image = max(kernel, image + APPLY_REACH)
    return kernel, image


def output_depth(config: ModelConfig, coarse: int, kernel: int, image: int) -> int:
    """Depth of O_i = blend(up(O_{i+1}), I_i, a_i) from the depths of its parts."""
    depth = max(up_depth(coarse, config.up), kernel, image)
    if config.blend == "post_diff":
        depth = max(depth, smooth_depth(image))
    return depth


def level_halo(config: ModelConfig, level: int, levels: int, width: int) -> int:
    """Pixels of ``level`` a tile's crop must reach past its core, in level-wise tiling.

    Every input of a level's tile is an exact crop (M_k, M_{k+1}, O_{k+1}), so the halo
    is the depth that the level's own stages add: X (a detail: one expansion), the
    features and the apply, the blend with the expanded O_{k+1}. ``width``: the level's
    width, for the rows that vkdt's block transpose adds. See the module docstring.
    """
    x = 0 if config.mlp_input == "mip" else up_depth(0, config.up)
    kernel, image = level_depths(config, x, level, levels)
    if config.block_transpose and level < (config.denoise_levels or levels):
        kernel += -(-(BLOCK - 1) // width)  # the rest of a block: rows of a stripe
        image = max(image, kernel)
    if level == levels - 1 and config.blend != "add":  # the coarsest O is its I
        return image
    return output_depth(config, 0, kernel, image)


def mip_band_halo(down: str, count: int) -> int:
    """Rows a band of the full image must reach past its own so that its ``count`` mip
    levels are exact: the deepest wrong band over the levels, in full-resolution rows."""
    depth, rows = 0, 0
    for level in range(1, count):
        depth = down_depth(depth, down)
        rows = max(rows, depth * 2**level)
    return rows


# --- planning ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    """One tile of a level: the crop it computes and the core of it that it keeps.

    Level pixels, ends exclusive; the core lies inside the crop.
    """

    top: int
    left: int
    bottom: int
    right: int
    core_top: int
    core_left: int
    core_bottom: int
    core_right: int

    @property
    def coarse(self) -> tuple[slice, slice]:
        """Rows and columns of the next coarser level under the crop."""
        return (
            slice(self.top // 2, -(-self.bottom // 2)),
            slice(self.left // 2, -(-self.right // 2)),
        )

    @property
    def core(self) -> tuple[slice, slice]:
        """The core's rows and columns inside the crop."""
        return (
            slice(self.core_top - self.top, self.core_bottom - self.top),
            slice(self.core_left - self.left, self.core_right - self.left),
        )


def _floor_to(value: int, step: int) -> int:
    return value // step * step


def _ceil_to(value: int, step: int) -> int:
    return -(-value // step) * step


def stripe_alignment(width: int) -> int:
    """Row step of stripes whose blocks of 16 (scanline order) are the level's: even, and
    r * width a multiple of 16 for every start row r."""
    return math.lcm(2, BLOCK // math.gcd(width, BLOCK))


def plan_level(
    height: int, width: int, tile: int, halo: int, *, stripes: bool = False
) -> list[Window]:
    """The tiles of one level of ``height`` x ``width``: cores of ``tile`` x ``tile``
    (rounded up to even) in scanline order, each crop reaching ``halo`` past its core
    (rounded outwards to even), clipped to the level.

    ``stripes``: full-width cores of about ``tile**2`` pixels whose rows start on
    :func:`stripe_alignment`, for vkdt's block transpose.
    """
    if tile < 1:
        raise KpnError(f"tile size {tile} must be >= 1")
    if stripes:
        step = stripe_alignment(width)
        rows = _ceil_to(max(1, -(-(tile * tile) // width)), step)
        cores = [(top, 0, min(top + rows, height), width) for top in range(0, height, rows)]
    else:
        step = 2
        side = _ceil_to(tile, 2)
        cores = [
            (top, left, min(top + side, height), min(left + side, width))
            for top in range(0, height, side)
            for left in range(0, width, side)
        ]
    windows = []
    for core_top, core_left, core_bottom, core_right in cores:
        windows.append(
            Window(
                top=max(0, _floor_to(core_top - halo, step)),
                left=max(0, _floor_to(core_left - halo, 2)),
                bottom=min(height, _ceil_to(core_bottom + halo, step)),
                right=min(width, _ceil_to(core_right + halo, 2)),
                core_top=core_top,
                core_left=core_left,
                core_bottom=core_bottom,
                core_right=core_right,
            )
        )
    return windows


@dataclass(frozen=True)
class TilePlan:
    """Every tile of a tiled forward pass, per level (finest first), and the mip bands."""

    sizes: tuple[tuple[int, int], ...]  # (h, w) of every mip level, residual included
    windows: tuple[tuple[Window, ...], ...]  # the network levels' tiles, level 0 first
    band_rows: int  # full-resolution rows per band of the global mips
    band_halo: int  # rows a band reaches past its own
    band_align: int  # bands start on multiples of this: 2**(mip levels - 1)

    @property
    def tiles(self) -> int:
        """Tiles over all levels."""
        return sum(len(level) for level in self.windows)


def plan_tiles(
    height: int, width: int, config: ModelConfig, levels: int, tile: int = DEFAULT_TILE
) -> TilePlan:
    """The tiles that :func:`tiled_forward` computes for an image of ``height`` x ``width``."""
    if not 1 <= levels <= 16:
        raise KpnError(f"levels = {levels} is outside 1..16")
    count = levels + (config.blend == "add")
    sizes = level_sizes(height, width, count)
    windows = tuple(
        tuple(
            plan_level(
                h,
                w,
                tile,
                level_halo(config, level, levels, w),
                stripes=config.block_transpose,
            )
        )
        for level, (h, w) in enumerate(sizes[:levels])
    )
    align = 2 ** (count - 1)
    band_rows = max(align, _ceil_to(max(1, BAND_PIXELS // width), align))
    band_halo = _ceil_to(mip_band_halo(config.down, count), align)
    return TilePlan(tuple(sizes), windows, band_rows, band_halo, align)


# --- computing ---------------------------------------------------------------------------
def global_mips(
    noisy: Tensor, config: ModelConfig, plan: TilePlan, probe: Tensor | None = None
) -> list[Tensor]:
    """M_0, M_1, ... of the whole image as :func:`kpn.model.network.kpn_forward` stores them,
    computed in bands of full rows (exact: see :func:`mip_band_halo`).

    M_0 is ``noisy`` itself (float32 under vkdt-f16 too, as vkdt's input); the others are
    new tensors, each reduced from the stored one before it.
    ``[B,3,H,W] -> [[B,3,H,W], [B,3,H1,W1], ...]``; with a ``probe`` ``[B,3,H,W]`` (any
    dtype) the levels from 1 on are 6 channels, the probe's mips after the image's.
    """
    store = stored_image(config)
    vkdt_order = config.precision == F16_PRECISION
    height = noisy.shape[-2]
    count = len(plan.sizes)
    channels = noisy.shape[1] * (1 if probe is None else 2)
    mips = [noisy] + [noisy.new_empty(noisy.shape[0], channels, h, w) for h, w in plan.sizes[1:]]
    for top in range(0, height, plan.band_rows):
        bottom = min(height, top + plan.band_rows)
        # near the end the mirrored rows of odd-sized levels (whose last 2x2, or box2_vkdt
        # 8x8, block hangs past the edge) reach back up to 2 * align rows: keep them in
        crop_top = max(0, min(top, _floor_to(height, plan.band_align) - plan.band_align))
        crop_top = max(0, crop_top - plan.band_halo)
        band = noisy[..., crop_top : min(height, bottom + plan.band_halo), :].contiguous()
        if probe is not None:
            band = with_probe(band, probe[..., crop_top : min(height, bottom + plan.band_halo), :])
        band_mips = mip_pyramid(band, count, config.down, store, vkdt_order)
        for level, mip in enumerate(band_mips[1:], start=1):
            scale = 2**level
            first, last = top // scale, -(-bottom // scale)
            offset = (top - crop_top) // scale
            mips[level][..., first:last, :] = mip[..., offset : offset + last - first, :]
    return mips


def level_tile(
    mip: Tensor,
    mip_next: Tensor | None,
    coarse: Tensor | None,
    noise_ab: Tensor,
    up_coords: tuple[Tensor, Tensor] | None,
    weights: Sequence[Tensor],
    config: ModelConfig,
    level: int,
    levels: int,
    band: BandFilter,
    probe_step: float = 0.0,
) -> Tensor:
    """O_k of one tile of level k, as :func:`kpn.model.network.kpn_forward` computes it.

    Args:
        mip: ``[B,3,h,w]`` the crop of M_k (float16-rounded under vkdt-f16 for k > 0).
        mip_next: ``[B,3,ceil(h/2),ceil(w/2)]`` the crop of M_{k+1} below it; used for a
            detail input.
        coarse: the crop of O_{k+1} (or of the residual M_N) below it; None for the
            coarsest level of ``mix`` and ``post_diff``.
        noise_ab: ``[B,2]``.
        up_coords: for ``bilinear``: the coarse texel coordinates, in the crop, that the
            crop's rows and columns sample (:func:`bilinear_window_coords`).
        weights: the MLP's matrices.
        config: the model's switches.
        level: k.
        levels: network levels N.
        band: the pass's band implementation (:func:`kpn.model.network.begin_pass`).
        probe_step: the step of the kernels' response to a probe the images carry.

    Returns:
        ``[B,3,h,w]`` O_k on the crop (float32 for k = 0, as vkdt's output).
    """
    height, width = mip.shape[-2:]

    def up(image: Tensor) -> Tensor:
        if up_coords is None:
            return up_bspline(image, height, width)
        rows, cols = up_coords
        return sample_linear_axis(sample_linear_axis(image, cols, -1), rows, -2)

    return level_forward(
        mip,
        mip_next,
        coarse,
        noise_ab,
        up,
        weights,
        config,
        level,
        levels,
        band=band,
        probe_step=probe_step,
    ).output


def bilinear_window_coords(
    window: Window, fine: tuple[int, int], coarse: tuple[int, int], device: torch.device
) -> tuple[Tensor, Tensor]:
    """The coarse texel coordinates that the crop's rows and columns sample in vkdt's
    bilinear expansion, relative to the coarse crop that starts at half the window's
    start: the whole level's coordinates ``(x+1) * Wc/W - 0.5``, cut and shifted."""
    rows = bilinear_coords(fine[0], coarse[0], device)[window.top : window.bottom]
    cols = bilinear_coords(fine[1], coarse[1], device)[window.left : window.right]
    return rows - window.top // 2, cols - window.left // 2


def tiled_forward(
    noisy: Tensor,
    noise_ab: Tensor,
    weights: Sequence[Tensor],
    config: ModelConfig,
    levels: int | None = None,
    tile: int = DEFAULT_TILE,
    *,
    out: Tensor | None = None,
    progress: Callable[[int], None] | None = None,
    probe: Tensor | None = None,
    probe_out: Tensor | None = None,
    probe_step: float = 0.0,
) -> Tensor:
    """Denoise ``noisy`` level by level in tiles; equal to :func:`kpn.model.network.kpn_forward`.

    Call it under ``torch.no_grad()``. Memory beyond ``noisy`` and ``out``: the mip
    pyramid (a third of the image), the finished level above the one at work (a quarter),
    and one tile's working set (about 250 bytes a crop pixel).

    Args:
        noisy: ``[B,3,H,W]`` linear RGB; any strides (a view of an ``[H,W,3]`` array).
        noise_ab: ``[B,2]``.
        weights: the MLP's matrices.
        config: the model's switches.
        levels: network levels N; default ``config.levels``.
        tile: a tile's core side in pixels of each level (see :func:`plan_level`).
        out: ``[B,3,H,W]`` to write O_0 into (any strides); default a new tensor.
        progress: called with 1 after every tile.
        probe: ``[B,3,H,W]`` (any dtype and strides), carried through the pass with the
            image's kernels and alphas (:mod:`kpn.model.linearised`); its output, the
            network's derivative along it, is written into ``probe_out`` ``[B,3,H,W]``.
            Memory: the probe's mips and coarser outputs beside the image's.
        probe_step: the step of the kernels' sampled response to the probe; 0: none.

    Returns:
        ``out``, holding the denoised image.
    """
    noise_ab, count, band = begin_pass(noisy, noise_ab, weights, config, levels, keep_kernels=False)
    plan = plan_tiles(noisy.shape[-2], noisy.shape[-1], config, count, tile)
    if out is None:
        out = torch.empty_like(noisy, memory_format=torch.contiguous_format)
    if probe is not None:
        check_probe(noisy, probe, probe_step, config)
        if probe_out is None or probe_out.shape != noisy.shape:
            raise KpnError("a probe's output needs probe_out of the image's shape")
    mips = global_mips(noisy, config, plan, probe)
    channels = mips[-1].shape[1]  # with a probe, the coarser levels carry its channels
    coarse_level = mips[count] if config.blend == "add" else None
    for level in reversed(range(count)):
        size = plan.sizes[level]
        level_out = out if level == 0 else noisy.new_empty(noisy.shape[0], channels, *size)
        for window in plan.windows[level]:
            crop = (..., slice(window.top, window.bottom), slice(window.left, window.right))
            mip = mips[level][crop]
            mip = mip.contiguous() if level == 0 else mip  # M_0: the caller's layout
            if level == 0 and probe is not None:
                mip = with_probe(mip, probe[crop])
            below = window.coarse
            mip_next = mips[level + 1][..., below[0], below[1]] if level + 1 < len(mips) else None
            coarse = None if coarse_level is None else coarse_level[..., below[0], below[1]]
            coords = None
            if config.up == "bilinear" and level + 1 < len(plan.sizes):
                coords = bilinear_window_coords(window, size, plan.sizes[level + 1], noisy.device)
            result = level_tile(
                mip, mip_next, coarse, noise_ab, coords, weights, config, level, count, band,
                probe_step if probe is not None else 0.0,
            )  # fmt: skip
            core_rows, core_cols = window.core
            core = (
                ...,
                slice(window.core_top, window.core_bottom),
                slice(window.core_left, window.core_right),
            )
            if level == 0 and probe is not None:
                probe_out[core] = result[:, IMAGE_CHANNELS:, core_rows, core_cols]
                result = result[:, :IMAGE_CHANNELS]
            level_out[core] = result[..., core_rows, core_cols]
            if progress is not None:
                progress(1)
        coarse_level = level_out
        if level + 1 < count:  # no finer level reads M_{k+1} any more
            mips[level + 1] = None  # type: ignore[call-overload]
    return out
