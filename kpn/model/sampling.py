"""vkdt's texture addressing (docs/design.md §0): mirrored-repeat taps and bilinear sampling.

vkdt reads every image through a MIRRORED_REPEAT sampler. An integer tap past the edge
mirrors *including* the edge pixel (index -1 reads 0, W reads W-1): numpy's ``symmetric``
padding, not torch's ``reflect``. The pattern repeats with period 2W, so taps of any
distance are defined, which matters for tiny pyramid levels.
"""

from __future__ import annotations

import torch
from torch import Tensor


def mirror_index(index: Tensor, size: int) -> Tensor:
    """Map integer coordinates onto ``0..size-1`` the way MIRRORED_REPEAT does.

    Args:
        index: integer tensor of any shape, any values.
        size: length of the axis, >= 1.

    Returns:
        tensor like ``index`` with -1 -> 0, -2 -> 1, size -> size-1, size+1 -> size-2, ...
    """
    period = 2 * size
    folded = torch.remainder(index, period)
    return torch.where(folded < size, folded, period - 1 - folded)


def pad_symmetric(x: Tensor, left: int, right: int, top: int, bottom: int) -> Tensor:
    """Pad the last two axes by mirroring that includes the edge pixel.

    Args:
        x: ``[..., H, W]``.
        left, right, top, bottom: pixels to add on each side (>= 0, any size).

    Returns:
        ``[..., H + top + bottom, W + left + right]``.
    """
    height, width = x.shape[-2:]
    device = x.device
    if left or right:
        cols = mirror_index(torch.arange(-left, width + right, device=device), width)
        x = x.index_select(-1, cols)
    if top or bottom:
        rows = mirror_index(torch.arange(-top, height + bottom, device=device), height)
        x = x.index_select(-2, rows)
    return x


def linear_taps(coords: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Indices and weights of linear interpolation at texel coordinates, mirrored.

    Texel ``i`` has its centre at coordinate ``i`` (a normalised uv maps to ``uv*size - 0.5``).

    Args:
        coords: float ``[N]`` sample positions in texel coordinates.
        size: length of the sampled axis.

    Returns:
        (index0 ``[N]``, index1 ``[N]``, fraction ``[N]``): the sample is
        ``(1 - fraction) * v[index0] + fraction * v[index1]``.
    """
    base = torch.floor(coords)
    fraction = coords - base
    base = base.long()
    return mirror_index(base, size), mirror_index(base + 1, size), fraction


def sample_linear_axis(x: Tensor, coords: Tensor, dim: int) -> Tensor:
    """Sample ``x`` along one axis at texel coordinates, with mirrored-repeat addressing.

    Bilinear sampling on an axis-aligned grid is this applied to x and then to y.

    Args:
        x: ``[B, C, H, W]``.
        coords: float ``[N]`` positions along ``dim``.
        dim: -1 (x) or -2 (y).

    Returns:
        ``x`` with axis ``dim`` replaced by ``N`` samples.
    """
    index0, index1, fraction = linear_taps(coords, x.shape[dim])
    shape = [1] * x.dim()
    shape[dim] = -1
    fraction = fraction.to(x.dtype).view(shape)
    return torch.lerp(x.index_select(dim, index0), x.index_select(dim, index1), fraction)
