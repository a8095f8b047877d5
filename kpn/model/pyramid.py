"""The image pyramid (docs/design.md §1, §10): reductions, expansions, mips and detail coefficients.

Level 0 is full resolution; a coarser level has size ``((w+1)//2, (h+1)//2)``. Every tap
past an edge mirrors including the edge pixel (:mod:`kpn.model.sampling`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from kpn.model.sampling import mirror_index, pad_symmetric, sample_linear_axis

BINOMIAL5 = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)
# The 6x6 B-spline expansion: weights of coarse pixels x//2-1, x//2, x//2+1 for fine x.
BSPLINE_EVEN = (5 / 16, 10 / 16, 1 / 16)
BSPLINE_ODD = (1 / 16, 10 / 16, 5 / 16)
Store = Callable[[Tensor], Tensor]  # what storing an image between two passes does to it


def coarse_size(height: int, width: int) -> tuple[int, int]:
    """Size of the next coarser level: ``((h+1)//2, (w+1)//2)``."""
    return (height + 1) // 2, (width + 1) // 2


def level_sizes(height: int, width: int, count: int) -> list[tuple[int, int]]:
    """``[(h0, w0), (h1, w1), ...]`` for ``count`` levels starting at full resolution."""
    sizes = [(height, width)]
    for _ in range(count - 1):
        sizes.append(coarse_size(*sizes[-1]))
    return sizes


def _correlate(x: Tensor, taps: tuple[float, ...], dim: int, stride: int) -> Tensor:
    """Correlate ``x`` with ``taps`` along ``dim`` (no padding), keeping every stride-th.

    ``[..., L, ...] -> [..., (L - len(taps)) // stride + 1, ...]``
    """
    count = (x.shape[dim] - len(taps)) // stride + 1
    total = None
    for offset, tap in enumerate(taps):
        term = tap * x.narrow(dim, offset, (count - 1) * stride + 1)
        if stride > 1:
            term = term.index_select(dim, torch.arange(0, term.shape[dim], stride, device=x.device))
        total = term if total is None else total + term
    return total


def down_box2(fine: Tensor) -> Tensor:
    """2x2 mean: coarse(x,y) = mean of fine(2x..2x+1, 2y..2y+1), mirrored past the edge.

    ``[B,C,H,W] -> [B,C,(H+1)//2,(W+1)//2]``
    """
    height, width = fine.shape[-2:]
    padded = pad_symmetric(fine, 0, width % 2, 0, height % 2)
    return F.avg_pool2d(padded, 2)


def down_binomial5(fine: Tensor) -> Tensor:
    """Binomial 5x5 low-pass then decimation (vkdt's ``sub.comp``), mirrored edges.

    coarse(x,y) = sum over i,j in -2..2 of b[i] b[j] fine(2x+i, 2y+j), b = [1,4,6,4,1]/16.
    ``[B,C,H,W] -> [B,C,(H+1)//2,(W+1)//2]``
    """
    height, width = fine.shape[-2:]
    padded = pad_symmetric(fine, 2, 2 + width % 2, 2, 2 + height % 2)
    rows = _correlate(padded, BINOMIAL5, -1, 2)
    return _correlate(rows, BINOMIAL5, -2, 2)


def down_binomial5_vkdt(fine: Tensor) -> Tensor:
    """:func:`down_binomial5` in ``sub.comp``'s own float32 order, for the ``vkdt-f16``
    precision: one sum of the 25 taps b[j] b[i] fine(2x+i, 2y+j), j outer, i inner (the
    separable filter rounds in another order, which float16 stores can expose).

    ``[B,C,H,W] -> [B,C,(H+1)//2,(W+1)//2]``
    """
    height, width = fine.shape[-2:]
    padded = pad_symmetric(fine, 2, 2 + width % 2, 2, 2 + height % 2)
    coarse_h, coarse_w = (height + 1) // 2, (width + 1) // 2
    total = None
    for j, row_tap in enumerate(BINOMIAL5):
        for i, column_tap in enumerate(BINOMIAL5):
            tap = padded[..., j : j + 2 * coarse_h : 2, i : i + 2 * coarse_w : 2]
            term = (row_tap * column_tap) * tap
            total = term if total is None else total + term
    return total


def _strided_pair_mean(base: Tensor, stride: int, offset: int, size: tuple[int, int]) -> Tensor:
    """mean of base(s*x+o .. s*x+o+1, s*y+o .. s*y+o+1), mirrored at base's edge."""
    height, width = base.shape[-2:]
    out_h, out_w = size
    device = base.device
    cols = stride * torch.arange(out_w, device=device) + offset
    rows = stride * torch.arange(out_h, device=device) + offset
    left = base.index_select(-1, mirror_index(cols, width))
    right = base.index_select(-1, mirror_index(cols + 1, width))
    pairs = 0.5 * (left + right)
    top = pairs.index_select(-2, mirror_index(rows, height))
    bottom = pairs.index_select(-2, mirror_index(rows + 1, height))
    return 0.5 * (top + bottom)


def mips_box2_vkdt(image: Tensor, count: int, store: Store | None = None) -> list[Tensor]:
    """What vkdt's ``mip.comp`` computes (design §10), ``count`` levels including level 0.

    ``mip.comp`` makes three levels at once from a base level B: the first is the true 2x2
    mean, but its subgroupShuffleXor fetches the neighbouring pair instead of adding it, so
    the second is the 2x2 mean at offset (2,2) of each 4x4 block of B and the third at
    offset (6,6) of each 8x8 block. The third level, as stored (``store``), is the base
    of the next three.

    ``[B,C,H,W] -> [[B,C,H,W], [B,C,H1,W1], ...]``
    """

    def level(base: Tensor, step: int, size: tuple[int, int]) -> Tensor:
        return _strided_pair_mean(base, 2**step, 2**step - 2, size)

    return _three_at_a_time(image, count, store, level)


def _three_at_a_time(
    image: Tensor,
    count: int,
    store: Store | None,
    level: Callable[[Tensor, int, tuple[int, int]], Tensor],
) -> list[Tensor]:
    """``mip.comp``'s order: from a base B, ``level(B, step, size)`` for the levels
    ``step`` = 1, 2, 3 below it, each stored; the third, as stored, is the next base."""
    keep = store or _unchanged
    sizes = level_sizes(image.shape[-2], image.shape[-1], count)
    mips = [image]
    base = image
    for index in range(1, count):
        step = (index - 1) % 3 + 1
        mips.append(keep(level(base, step, sizes[index])))
        if step == 3:
            base = mips[-1]
    return mips


def mirror_levels(index: Tensor, size: int, depth: int) -> Tensor:
    """Where texel ``index`` of a 2^depth block reads a base of length ``size`` so that each
    level is the 2x2 mean of the one before, mirrored at its own edge (``down_box2``): past
    the edge of level k (k = depth-1 .. 1, of length ``(size + 2^k - 1) // 2^k``) whole
    2^k-blocks are mirrored, then past the base's edge texels (patch 0010's mip.comp).

    ``index``: integer tensor, values in ``0 .. 2^depth * ceil(size / 2^depth) - 1``.
    """
    lengths = [size]
    for _ in range(depth - 1):
        lengths.append((lengths[-1] + 1) // 2)
    for k in range(depth - 1, 0, -1):
        texel = index >> k
        mirrored = ((2 * lengths[k] - 1 - texel) << k) | (index & ((1 << k) - 1))
        index = torch.where(texel >= lengths[k], mirrored, index)
    return torch.where(index >= size, 2 * size - 1 - index, index)


def _block_mean(base: Tensor, depth: int, size: tuple[int, int]) -> Tensor:
    """The 2^depth x 2^depth means of ``base``, each level mirrored at its own edge
    (:func:`mirror_levels`), as a tree of pairwise means (a+b)/2: along x first (pairs,
    then pairs of pairs), then along y.

    ``[B,C,H,W] -> [B,C,out_h,out_w]`` for ``size = (out_h, out_w)``.
    """
    height, width = base.shape[-2:]
    out_h, out_w = size
    device = base.device
    stride = 2**depth
    columns = mirror_levels(torch.arange(stride * out_w, device=device), width, depth)
    rows = mirror_levels(torch.arange(stride * out_h, device=device), height, depth)
    block = base.index_select(-1, columns).index_select(-2, rows)
    for dim in (-1, -2):
        while block.shape[dim] > (out_w if dim == -1 else out_h):
            even = block.narrow(dim, 0, block.shape[dim] // 2 * 2)
            pairs = even.unflatten(dim, (-1, 2))
            block = 0.5 * (pairs.select(dim, 0) + pairs.select(dim, 1))
    return block


def mips_box2_mipcomp(image: Tensor, count: int, store: Store | None = None) -> list[Tensor]:
    """The 2x2 box pyramid as vkdt's ``mip.comp`` computes it with the series' patches 0003
    and 0010 (design §10; kpn's ``box2`` under the ``vkdt-f16`` precision): three levels at
    once from a base level B, the 2x2, 4x4 and 8x8 means of B in float32, each stored
    (``store``); the third as stored is the base of the next three. At the edges each
    level is mirrored as :func:`down_box2` mirrors it (:func:`mirror_levels`); what
    differs from ``box2`` is only that the coarser levels are means of B in float32, not
    of the stored level before.

    ``[B,C,H,W] -> [[B,C,H,W], [B,C,H1,W1], ...]``
    """
    return _three_at_a_time(image, count, store, _block_mean)


def mip_pyramid(
    image: Tensor, count: int, down: str, store: Store | None = None, vkdt_order: bool = False
) -> list[Tensor]:
    """Mip levels M_0 = image, M_1, ... M_{count-1}.

    Args:
        image: ``[B,C,H,W]``.
        count: number of levels including level 0 (>= 1).
        down: ``"box2"`` | ``"binomial5"`` | ``"box2_vkdt"``.
        store: applied to every level from 1 on as it is made (vkdt's float16 image
            stores, :func:`kpn.model.network.stored_image`); each level is reduced from the
            stored one before it (``box2_vkdt``, and ``box2`` with ``vkdt_order``: each
            three from their stored base), as vkdt's ``sub.comp`` and ``mip.comp`` read the
            images the previous pass wrote. M_0 is ``image`` itself. None: nothing.
        vkdt_order: compute as vkdt's shaders do, for vkdt-f16: ``binomial5`` in
            ``sub.comp``'s order (:func:`down_binomial5_vkdt`), ``box2`` as the patched
            ``mip.comp`` (:func:`mips_box2_mipcomp`).

    Returns:
        list of ``count`` tensors ``[B,C,H_i,W_i]``.
    """
    if down == "box2_vkdt":
        return mips_box2_vkdt(image, count, store)
    if vkdt_order and down == "box2":
        return mips_box2_mipcomp(image, count, store)
    keep = store or _unchanged
    reduce = {"box2": down_box2, "binomial5": down_binomial5}[down]
    if vkdt_order and down == "binomial5":
        reduce = down_binomial5_vkdt
    mips = [image]
    for _ in range(count - 1):
        mips.append(keep(reduce(mips[-1])))
    return mips


def _unchanged(image: Tensor) -> Tensor:
    return image


def _expand_bspline_axis(padded: Tensor, out_len: int, dim: int) -> Tensor:
    """B-spline expansion along one axis of a coarse signal that carries a 1-texel border."""
    even = _correlate(padded, BSPLINE_EVEN, dim, 1)
    odd = _correlate(padded, BSPLINE_ODD, dim, 1)
    # even[k] lands on fine 2k and odd[k] on 2k+1
    interleaved = torch.stack((even, odd), dim=dim).flatten(dim - 1, dim)
    return interleaved.narrow(dim, 0, out_len)


def expand_bspline_bordered(coarse_bordered: Tensor, height: int, width: int) -> Tensor:
    """B-spline expansion of a coarse image that already has a 1-pixel border all round.

    fine(x,y) = sum over i,j in -1..1 of u_x[i] u_y[j] C(x//2+i, y//2+j), u = [5,10,1]/16
    for even and [1,10,5]/16 for odd coordinates; C(-1) and C(Wc) are the border.

    ``[B,C,Hc+2,Wc+2] -> [B,C,height,width]``
    """
    rows = _expand_bspline_axis(coarse_bordered, width, -1)
    return _expand_bspline_axis(rows, height, -2)


def up_bspline(coarse: Tensor, height: int, width: int) -> Tensor:
    """The 6x6 B-spline expansion (vkdt's ``up.comp``), mirrored at the coarse edge.

    ``[B,C,Hc,Wc] -> [B,C,height,width]`` with ``(Hc, Wc) = coarse_size(height, width)``.
    """
    return expand_bspline_bordered(pad_symmetric(coarse, 1, 1, 1, 1), height, width)


def bilinear_coords(fine_len: int, coarse_len: int, device: torch.device) -> Tensor:
    """Coarse texel coordinates that fine pixels 0..fine_len-1 sample. ``-> [fine_len]``"""
    # vkdt samples at uv = (x+1)/W: texel coordinate (x+1)*Wc/W - 0.5, which is x/2 for even W
    x = torch.arange(fine_len, device=device, dtype=torch.float64)
    return (x + 1) * coarse_len / fine_len - 0.5


def up_bilinear(coarse: Tensor, height: int, width: int) -> Tensor:
    """Bilinear expansion at uv = ((x+1)/W, (y+1)/H) (vkdt's ``NO_ALIAS``), mirrored.

    ``[B,C,Hc,Wc] -> [B,C,height,width]``
    """
    coarse_h, coarse_w = coarse.shape[-2:]
    rows = sample_linear_axis(coarse, bilinear_coords(width, coarse_w, coarse.device), -1)
    return sample_linear_axis(rows, bilinear_coords(height, coarse_h, coarse.device), -2)


def upsample(coarse: Tensor, height: int, width: int, up: str) -> Tensor:
    """Expand ``[B,C,Hc,Wc]`` to ``[B,C,height,width]`` with ``up`` = bspline | bilinear."""
    if up == "bspline":
        return up_bspline(coarse, height, width)
    if up == "bilinear":
        return up_bilinear(coarse, height, width)
    raise ValueError(f"unknown up filter {up!r}")


def details(mips: list[Tensor], up: str) -> list[Tensor]:
    """Detail coefficients D_i = M_i - up(M_{i+1}) for every level but the coarsest.

    ``[M_0..M_n] -> [D_0..D_{n-1}]``, each ``[B,C,H_i,W_i]``.
    """
    return [
        fine - upsample(coarse, fine.shape[-2], fine.shape[-1], up)
        for fine, coarse in itertools.pairwise(mips)
    ]


def smooth_box2_bspline(image: Tensor) -> Tensor:
    """up(down(I)) as the box2 / bspline pyramid makes it: :func:`down_box2`, then
    :func:`up_bspline`, the coarse image mirrored at its edge. With it a post_diff level
    whose kernels are the identity and whose alpha is 1 gives back its mip on any size;
    in the interior it equals :func:`smooth_post_diff`.

    ``[B,C,H,W] -> [B,C,H,W]``
    """
    height, width = image.shape[-2:]
    return up_bspline(down_box2(image), height, width)


def smooth_post_diff(image: Tensor) -> Tensor:
    """up(down(I)) of vkdt's POST_MLP_DIFF: 2x2 mean, then the B-spline expansion.

    vkdt fetches the 2x2 mean bilinearly at fine position 2c+1, so coarse texels past the
    border come from the *fine* image mirrored (not the coarse one mirrored): on odd sizes
    this differs from ``up_bspline(down_box2(I))``.

    ``[B,C,H,W] -> [B,C,H,W]``
    """
    height, width = image.shape[-2:]
    coarse_h, coarse_w = coarse_size(height, width)
    # coarse texels -1 .. Wc cover fine texels 2c and 2c+1, i.e. fine -2 .. 2*Wc+1
    fine = pad_symmetric(image, 2, 2 * coarse_w - width + 2, 2, 2 * coarse_h - height + 2)
    return expand_bspline_bordered(F.avg_pool2d(fine, 2), height, width)
