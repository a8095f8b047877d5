"""The images training tiles are cut from, chosen by ``data.source``: a fresh dead-leaves
image per tile (:mod:`kpn.data.deadleaves`), images read from files
(:mod:`kpn.data.folders`), or a mix of the two."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from kpn.config import TileOffset
from kpn.data.deadleaves import draw_scenes, render_scenes
from kpn.data.synthesis import draw_offset, uniforms
from kpn.model.features import luminance


@dataclass(frozen=True)
class ImagePair:
    """A reference ``[3,H,W]``, the real noisy image ``[3,H,W]`` (None: the reference is
    the input) and its profile ``[2]`` (None when not needed), float32."""

    reference: Tensor
    noisy: Tensor | None = None
    noise_ab: Tensor | None = None
    offset: TileOffset | None = None  # None: the source's


class DeadLeavesSource:
    """A fresh dead-leaves image per tile, exactly the tile's size."""

    # a dead-leaves image is already a random window of a stationary picture: a random
    # offset would only add mirrored seams
    offset: TileOffset = "inside"

    def images(self, generators: Sequence[torch.Generator], tile: int) -> list[ImagePair]:
        rendered = render_scenes(draw_scenes(tile, tile, generators), tile, tile)
        return [ImagePair(image) for image in rendered]


class FileSource:
    """Images read from files; each tile picks one, uniformly.

    ``candidates`` > 1 (clean references only): the tile is the most textured of that many
    tile-sized crops at random places in the picked image, so that a set of photos with
    soft backgrounds and skies does not teach mostly smoothing.
    """

    def __init__(self, pairs: Sequence[ImagePair], offset: TileOffset, candidates: int = 1) -> None:
        self.pairs = list(pairs)
        self.offset = offset
        self.candidates = candidates

    def images(self, generators: Sequence[torch.Generator], tile: int) -> list[ImagePair]:
        count = len(self.pairs)
        picks = [uniforms(1, g)[0] for g in generators]
        chosen = [self.pairs[min(int(count * u), count - 1)] for u in picks]
        if self.candidates == 1:
            return chosen
        return [
            textured_crop(pair, tile, self.candidates, g)
            for pair, g in zip(chosen, generators, strict=True)
        ]


def texture(crop: Tensor) -> float:
    """Mean absolute luminance gradient over the mean luminance: how much a crop ``[3,T,T]``
    shows, the same at every exposure."""
    lum = luminance(crop[None])[0]
    gradient = (lum[:, 1:] - lum[:, :-1]).abs().mean() + (lum[1:] - lum[:-1]).abs().mean()
    return float(gradient / (lum.mean().abs() + 1e-3))


def textured_crop(
    pair: ImagePair, tile: int, candidates: int, generator: torch.Generator
) -> ImagePair:
    """The most textured of ``candidates`` random tile-sized crops inside ``pair``'s image,
    as a pair of exactly the tile's size (synthesis then adds flips, exposure and noise)."""
    height, width = pair.reference.shape[-2:]
    u = uniforms(2 * candidates, generator)
    crops = []
    for k in range(candidates):
        top = draw_offset(height, tile, "inside", u[2 * k])
        left = draw_offset(width, tile, "inside", u[2 * k + 1])
        crops.append(pair.reference[:, top : top + tile, left : left + tile])
    return ImagePair(max(crops, key=texture), offset="inside")


class MixedSource:
    """Dead leaves for a fraction of the tiles, files for the rest, chosen per tile.

    Photographs teach texture that dead leaves lack; dead leaves keep the hard edges and
    flat areas a few dozen photos have too few of.
    """

    def __init__(self, files: FileSource, deadleaves_fraction: float) -> None:
        self.files = files
        self.fraction = deadleaves_fraction
        self.offset = files.offset

    def images(self, generators: Sequence[torch.Generator], tile: int) -> list[ImagePair]:
        leaves = [uniforms(1, g)[0] < self.fraction for g in generators]
        chosen = list(zip(generators, leaves, strict=True))
        drawn = DeadLeavesSource().images([g for g, x in chosen if x], tile) if any(leaves) else []
        read = self.files.images([g for g, x in chosen if not x], tile) if not all(leaves) else []
        drawn_pairs = iter(ImagePair(p.reference, offset=DeadLeavesSource.offset) for p in drawn)
        read_pairs = iter(read)
        return [next(drawn_pairs) if x else next(read_pairs) for x in leaves]


TileSource = DeadLeavesSource | FileSource | MixedSource
