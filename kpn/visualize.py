"""Pictures for TensorBoard: image crops, alpha maps, kernels drawn as stars, weight maps.

Every function returns a float image ``[3,H,W]`` in [0,1] (CHW, TensorBoard's default).
"""

from __future__ import annotations

import torch
from torch import Tensor

from kpn.features import STAR15_RADIUS, STAR15_TAPS

DISPLAY_GAMMA = 2.2  # a display curve for looking at linear images, not a colour transform


def display(image: Tensor) -> Tensor:
    """Linear RGB to something viewable: clip to [0,1], gamma 1/2.2. ``[...] -> [...]``"""
    return image.clamp(0.0, 1.0) ** (1.0 / DISPLAY_GAMMA)


def side_by_side(*images: Tensor) -> Tensor:
    """Images ``[3,H,W]`` next to each other with a 2-pixel white gap. ``-> [3,H,sum W]``"""
    gap = torch.ones(3, images[0].shape[1], 2, dtype=images[0].dtype, device=images[0].device)
    parts = []
    for image in images:
        parts += [display(image), gap]
    return torch.cat(parts[:-1], dim=2)


def signed_colors(values: Tensor) -> Tensor:
    """Signed values to colour: positive red, negative blue, 0 white, scaled by max |v|.

    ``[H,W] -> [3,H,W]``
    """
    scale = values.abs().max().clamp(min=1e-12)
    v = (values / scale).clamp(-1.0, 1.0)
    positive, negative = v.clamp(min=0), (-v).clamp(min=0)
    return torch.stack((1 - negative, 1 - positive - negative, 1 - positive), dim=0)


def enlarge(image: Tensor, factor: int) -> Tensor:
    """Nearest-neighbour enlargement. ``[C,H,W] -> [C,H*f,W*f]``"""
    return image.repeat_interleave(factor, dim=1).repeat_interleave(factor, dim=2)


def kernel_stars(tap_weights: Tensor, count: int = 4, cell: int = 8) -> Tensor:
    """The 15-tap kernels of a grid of ``count x count`` pixels, each drawn as its star.

    Args:
        tap_weights: ``[15,H,W]`` normalised kernel weights of one image (SPEC 4).
        count: pixels per side of the sample grid, spread evenly over the image.
        cell: screen pixels per tap.

    Returns:
        ``[3, count*(5*cell+2), count*(5*cell+2)]``, weights in signed colours.
    """
    height, width = tap_weights.shape[-2:]
    size = 2 * STAR15_RADIUS + 1
    stars = []
    for y in torch.linspace(0, height - 1, count).round().long().tolist():
        row = []
        for x in torch.linspace(0, width - 1, count).round().long().tolist():
            star = torch.zeros(size, size, dtype=tap_weights.dtype, device=tap_weights.device)
            for k, (dx, dy) in enumerate(STAR15_TAPS):
                star[STAR15_RADIUS + dy, STAR15_RADIUS + dx] = tap_weights[k, y, x]
            framed = torch.ones(3, size * cell + 2, size * cell + 2, dtype=star.dtype)
            framed[:, 1:-1, 1:-1] = enlarge(signed_colors(star), cell)
            row.append(framed)
        stars.append(torch.cat(row, dim=2))
    return torch.cat(stars, dim=1)


def matrix_map(matrix: Tensor, cell: int = 4) -> Tensor:
    """A weight matrix (or its gradient) as a signed heat map. ``[out,in] -> [3,out*c,in*c]``"""
    return enlarge(signed_colors(matrix.detach().float().cpu()), cell)
