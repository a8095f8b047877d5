"""Procedural colour dead-leaves images: the built-in training data, nothing on disk.

The dead-leaves model (Matheron; Lee, Mumford and Huang 2001) drops opaque discs on top of
each other; with radii distributed as r^-3 the image is scale invariant and has the
power-law spectrum, edge and occlusion statistics of natural images. Every leaf here also
carries a colour ramp and a smooth periodic texture, the image is shaded by a global
gradient and blurred a little as a lens would.

A leaf is visible in an h x w window with probability proportional to (w + 2r)(h + 2r),
so the leaves that touch the window have radius density r^-3 (w + 2r)(h + 2r): a mixture
of r^-3, r^-2 and r^-1 laws, each sampled exactly by its inverse distribution function.
Leaves are drawn front to back; each pixel shows the first leaf that covers it, and a
background leaf behind all of them fills what no leaf covers.

Rendering is batched and vectorised: every leaf writes its index into a square patch just
large enough for it (patch sizes in powers of two, the largest the whole window) and each
pixel keeps the smallest index (``scatter_reduce`` with ``amin``). Per-pixel arithmetic uses
only additions, multiplications and comparisons, which round the same whatever the tensor
layout, so an image is bit for bit the same whether rendered alone or inside a batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from kpn.io.images import srgb_to_linear

RADIUS_MIN = 1.0  # pixels; the r^-3 law holds down to the pixel scale
RADIUS_MAX = 1000.0  # pixels; larger than any training tile: big flat regions occur
UNCOVERED = 1e-3  # expected fraction of the window left to the background leaf
MAX_LEAVES = 200_000  # bounds memory for huge windows or tiny radii
RAMP = 0.5  # a leaf's colour changes by up to +-50% from its centre to its rim
WAVE_AMPLITUDE = 0.5  # texture contrast of a textured leaf: up to +-50%
WAVE_PERIOD = (3.0, 48.0)  # texture periods in pixels, log-uniform
TEXTURED = 0.5  # fraction of leaves with a periodic texture
SHADING = 0.5  # global illumination changes by up to +-50% across the window
BLUR_SIGMA = 1.0  # Gaussian blur sigma uniform in [0, this] pixels
BLUR_TAPS = 2  # blur kernel radius: 5 taps hold 99% of a sigma = 1 Gaussian
MIN_SIZE = BLUR_TAPS  # the blur mirror reaches BLUR_TAPS pixels past each edge


@dataclass(frozen=True)
class Scene:
    """Everything random about one dead-leaves image; leaves front to back, background last.

    ``centre [N,2]`` (x, y) pixels; ``radius [N]`` (inf for the background); ``colour [N,3]``
    linear RGB; ``slope [N,2]`` relative colour change per pixel in x and y; ``wave [N,3]``
    texture frequency (cycles per pixel in x and y) and phase (cycles); ``amplitude [N]``
    texture contrast; ``shading [2]`` relative illumination change across the window in x
    and y; ``blur [2*BLUR_TAPS+1]`` normalised Gaussian taps.
    """

    centre: Tensor
    radius: Tensor
    colour: Tensor
    slope: Tensor
    wave: Tensor
    amplitude: Tensor
    shading: Tensor
    blur: Tensor


def visible_radius_weights(
    height: int, width: int, radius_min: float, radius_max: float
) -> tuple[float, float, float]:
    """Masses of the r^-3, r^-2 and r^-1 terms of r^-3 (w + 2r)(h + 2r) on [rmin, rmax]."""
    cubic = height * width * (radius_min**-2 - radius_max**-2) / 2
    square = 2 * (height + width) * (1 / radius_min - 1 / radius_max)
    linear = 4 * math.log(radius_max / radius_min)
    return cubic, square, linear


def leaf_count(height: int, width: int, radius_min: float, radius_max: float) -> int:
    """Leaves needed so that on average only ``UNCOVERED`` of the window shows the background.

    A visible leaf covers a given interior pixel with probability
    E[pi r^2 / ((w + 2r)(h + 2r))] = pi ln(rmax/rmin) / Z, Z the total visible mass.
    """
    total = sum(visible_radius_weights(height, width, radius_min, radius_max))
    cover = min(math.pi * math.log(radius_max / radius_min) / total, 0.5)
    return min(MAX_LEAVES, max(1, math.ceil(math.log(UNCOVERED) / math.log1p(-cover))))


def inverse_radius_law(
    pick: Tensor, u: Tensor, height: int, width: int, radius_min: float, radius_max: float
) -> Tensor:
    """Radii of leaves that touch an h x w window, density r^-3 (w + 2r)(h + 2r).

    ``pick`` chooses the mixture term, ``u`` is the argument of that term's inverse
    distribution function; both uniform in [0, 1), float64, any shape. Returns float64.
    """
    weights = torch.tensor(visible_radius_weights(height, width, radius_min, radius_max))
    edges = torch.cumsum(weights / weights.sum(), 0, dtype=torch.float64)
    lo2, hi2 = radius_min**-2, radius_max**-2
    lo1, hi1 = 1 / radius_min, 1 / radius_max
    cubic = (lo2 - u * (lo2 - hi2)) ** -0.5
    square = 1 / (lo1 - u * (lo1 - hi1))
    linear = radius_min * (radius_max / radius_min) ** u
    radius = torch.where(pick < edges[0], cubic, torch.where(pick < edges[1], square, linear))
    return radius.clamp(radius_min, radius_max)


def unit_vectors(turns: Tensor) -> Tensor:
    """``[...] -> [...,2]``: (cos, sin) of the angle 2 pi turns."""
    angle = 2 * math.pi * turns
    return torch.stack([angle.cos(), angle.sin()], -1)


# uniform numbers drawn per leaf and per image, in this column order: first the places of
# all leaves, then the looks of the leaves in front of the first that covers the window
PLACE_DRAWS = ("pick", "radius", "x", "y")
LOOK_DRAWS = (
    "grey", "saturation", "red", "green", "blue", "ramp_angle", "ramp", "wave_angle",
    "period", "phase", "textured", "contrast",
)  # fmt: skip
IMAGE_DRAWS = ("shade_angle", "shading", "blur")


def draw_scenes(
    height: int,
    width: int,
    generators: Sequence[torch.Generator],
    radius_min: float = RADIUS_MIN,
    radius_max: float = RADIUS_MAX,
) -> list[Scene]:
    """Draw every random choice of h x w dead-leaves images, one per generator.

    Each generator gives the places of its leaves, then the looks of the visible ones and
    the image's shading and blur, so a scene depends only on its own generator. The
    arithmetic runs batched over the scenes; the functions that are not exactly rounded
    (pow, cos, exp) run in float64 before rounding to float32, so a scene comes out the
    same alone or in any batch.
    """
    count = leaf_count(height, width, radius_min, radius_max)
    # one row more than leaves: the fill leaf's, used when no leaf covers the window
    place = torch.empty(len(generators), count + 1, len(PLACE_DRAWS))
    for rows, g in zip(place, generators, strict=True):
        rows.uniform_(generator=g)
    pick, u, x, y = place.double().unbind(-1)
    radius = inverse_radius_law(pick, u, height, width, radius_min, radius_max)
    size = torch.tensor([width, height], dtype=torch.float64)
    # centre uniform in the window grown by the radius: every such leaf may touch it
    centre = -radius[..., None] + torch.stack([x, y], -1) * (size + 2 * radius[..., None])
    # the first leaf that covers the whole window hides every leaf behind it and becomes
    # the background; without one, a centred fill leaf covers what the others leave
    far = torch.maximum(centre.abs(), (size - 1 - centre).abs())
    covers = ((far * far).sum(-1) <= radius * radius)[:, :count]
    kept = torch.where(covers.any(1), covers.int().argmax(1) + 1, count + 1)
    fill = kept > count
    centre[fill, count] = size / 2
    radius[fill, count] = 0.5 * math.hypot(width, height)  # scales the fill leaf's ramp
    visible = torch.arange(count + 1) < kept[:, None]
    centre, scale = centre[visible], radius[visible]  # every scene's visible leaves joined
    sizes = kept.tolist()

    looks = [
        torch.rand(n, len(LOOK_DRAWS), generator=g) for n, g in zip(sizes, generators, strict=True)
    ]
    images = [torch.rand(len(IMAGE_DRAWS), generator=g) for g in generators]
    leaf = dict(zip(LOOK_DRAWS, torch.cat(looks).double().unbind(-1), strict=True))
    image = dict(zip(IMAGE_DRAWS, torch.stack(images).double().unbind(-1), strict=True))

    grey, saturation = leaf["grey"][:, None], leaf["saturation"][:, None]
    hue = torch.stack([leaf["red"], leaf["green"], leaf["blue"]], -1)
    colour = torch.from_numpy(srgb_to_linear((grey + saturation * (hue - grey)).numpy()))
    ramp = (RAMP * leaf["ramp"] / scale)[:, None] * unit_vectors(leaf["ramp_angle"])
    low_period, high_period = WAVE_PERIOD
    frequency = 1 / (low_period * (high_period / low_period) ** leaf["period"])
    wave = torch.cat(
        [frequency[:, None] * unit_vectors(leaf["wave_angle"]), leaf["phase"][:, None]], -1
    )
    amplitude = torch.where(leaf["textured"] < TEXTURED, WAVE_AMPLITUDE * leaf["contrast"], 0)
    shading = (SHADING * image["shading"])[:, None] * unit_vectors(image["shade_angle"])
    taps = torch.arange(-BLUR_TAPS, BLUR_TAPS + 1, dtype=torch.float64)
    sigma = (BLUR_SIGMA * image["blur"]).clamp(min=1e-3)[:, None]
    blur = torch.exp(-0.5 * (taps / sigma) ** 2)
    blur = blur / blur.sum(1, keepdim=True)

    last = torch.cumsum(kept, 0) - 1
    radius = scale.clone()
    radius[last] = math.inf  # the background covers everything behind the leaves
    per_leaf = [centre, radius, colour, ramp, wave, amplitude]
    split = [torch.split(values.float(), sizes) for values in per_leaf]
    return [
        Scene(*(values[b] for values in split), shading[b].float(), blur[b].float())
        for b in range(len(sizes))
    ]


def patch_sizes(height: int, width: int) -> list[int]:
    """Patch sides 2, 4, 8, ... below the window's larger side, then that side.

    A leaf whose pixels span at most ``side`` in x and y is splatted as a ``side`` square
    (clipped to the window): the work per leaf stays within 4x of its area.
    """
    sizes = []
    side = 2
    while side < max(height, width):
        sizes.append(side)
        side *= 2
    return [*sizes, max(height, width)]


def leaf_owners(scenes: Sequence[Scene], height: int, width: int) -> Tensor:
    """Index of the front-most covering leaf of every pixel, into the scenes' leaves joined.

    Returns ``[B,H,W]`` int64; pixel (x, y) (its centre at integer coordinates) is covered by
    a leaf when its distance to the centre is at most the radius.
    """
    counts = torch.tensor([len(s.radius) for s in scenes])
    firsts = torch.cumsum(counts, 0) - counts
    pixels = height * width
    owner = (firsts + counts - 1).repeat_interleave(pixels)  # the background leaves
    centre = torch.cat([s.centre[:-1] for s in scenes])
    radius = torch.cat([s.radius[:-1] for s in scenes])
    image = torch.arange(len(scenes)).repeat_interleave(counts - 1)
    index = torch.arange(len(radius)) + image  # skips each scene's background
    base = image * pixels  # flat index of each leaf's image
    sizes = patch_sizes(height, width)

    # the pixel centres a leaf may cover, clipped to the window: first and last per axis
    first = torch.ceil(centre - radius[:, None]).clamp(min=0)
    last = torch.minimum(
        torch.floor(centre + radius[:, None]), torch.tensor([width - 1, height - 1])
    )
    extent = (last - first + 1).long()
    size_class = torch.bucketize(extent.amax(1), torch.tensor(sizes[:-1]))
    size_class[(extent < 1).any(1)] = len(sizes)  # touches no pixel centre
    first = first.long()
    for which, side in enumerate(sizes):
        chosen = (size_class == which).nonzero().squeeze(1)
        if not len(chosen):
            continue
        c, r = centre[chosen], radius[chosen]
        side_x, side_y = min(side, width), min(side, height)
        x0 = first[chosen, 0].clamp(max=width - side_x)
        y0 = first[chosen, 1].clamp(max=height - side_y)
        dx = (x0[:, None] + torch.arange(side_x)).float() - c[:, :1]  # [n,side_x]
        dy = (y0[:, None] + torch.arange(side_y)).float() - c[:, 1:]  # [n,side_y]
        outside = (dx * dx)[:, None, :] + (dy * dy)[:, :, None] > (r * r)[:, None, None]
        patch = torch.arange(side_y)[:, None] * width + torch.arange(side_x)
        flat = (base[chosen] + y0 * width + x0)[:, None, None] + patch
        # pixels outside the leaf get an index past every leaf, so they never win; an
        # addition, as torch.where is several times slower on the CPU
        value = index[chosen, None, None] + outside * owner.numel()
        owner.scatter_reduce_(0, flat.reshape(-1), value.reshape(-1), "amin")
    return owner.view(len(scenes), height, width)


def triangle_wave(phase: Tensor) -> Tensor:
    """A smooth cosine-like wave in [-1, 1] of period 1, from + and * only (exact rounding)."""
    fraction = phase - torch.floor(phase)
    triangle = (4 * fraction - 2).abs() - 1
    return triangle * (1.5 - 0.5 * triangle * triangle)


def render_scenes(scenes: Sequence[Scene], height: int, width: int) -> Tensor:
    """Render dead-leaves scenes drawn for an h x w window.

    Returns ``[B,3,H,W]`` float32 linear RGB, B = ``len(scenes)``, values >= 0. Raises
    ValueError for a window below ``MIN_SIZE`` on a side.
    """
    if min(height, width) < MIN_SIZE:
        raise ValueError(f"dead leaves: size {height}x{width} is below {MIN_SIZE}x{MIN_SIZE}")
    owner = leaf_owners(scenes, height, width)
    table = torch.cat(
        [torch.cat([s.centre, s.colour, s.slope, s.wave, s.amplitude[:, None]], 1) for s in scenes]
    )
    gathered = table.T.contiguous().index_select(1, owner.view(-1)).view(-1, *owner.shape)
    cx, cy, red, green, blue, slope_x, slope_y, freq_x, freq_y, phase, amplitude = gathered
    x = torch.arange(width, dtype=torch.float32)
    y = torch.arange(height, dtype=torch.float32)[:, None]
    ramp = 1 + slope_x * (x - cx) + slope_y * (y - cy)
    texture = 1 + amplitude * triangle_wave(freq_x * x + freq_y * y + phase)
    shading = torch.stack([s.shading for s in scenes])[:, :, None, None]
    light = 1 + shading[:, 0] * (x / width - 0.5) + shading[:, 1] * (y / height - 0.5)
    image = torch.stack([red, green, blue], 1) * (ramp * texture * light)[:, None]
    return blur_separable(image, torch.stack([s.blur for s in scenes]))


def blur_separable(image: Tensor, taps: Tensor) -> Tensor:
    """Filter each image by its own symmetric taps in x then y, mirrored edges.

    ``[B,C,H,W], [B,K] -> [B,C,H,W]``, K odd and K // 2 <= min(H, W).
    """
    radius = taps.shape[1] // 2
    weights = [taps[:, k, None, None, None] for k in range(taps.shape[1])]

    def along(x: Tensor, dim: int) -> Tensor:
        length = x.shape[dim]
        # docs/design.md §0's mirror including the edge pixel, for the few pixels a tap reaches
        left = x.narrow(dim, 0, radius).flip(dim)
        right = x.narrow(dim, length - radius, radius).flip(dim)
        padded = torch.cat([left, x, right], dim)
        total = weights[0] * padded.narrow(dim, 0, length)
        for k in range(1, len(weights)):
            total += weights[k] * padded.narrow(dim, k, length)
        return total

    return along(along(image, -1), -2)
