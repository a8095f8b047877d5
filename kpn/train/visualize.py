"""Pictures for TensorBoard: image crops, alpha maps, kernels drawn as stars, weight maps.

Every function returns a float image ``[3,H,W]`` in [0,1] (CHW, TensorBoard's default).
Each picture says what it shows: panels carry labels, and every colour scale has a legend
bar with its numbers, drawn in a small built-in 5x7 font (no imaging library needed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from kpn.metrics import srgb
from kpn.model.features import STAR15_RADIUS, kernel_taps

BACKGROUND = 0.2  # grey behind labels and legends: neither a map's black (0) nor white (1)
FRAME = 0.5  # grey line around maps and bars, so a black or white map keeps its edges
TEXT_SCALE = 2  # screen pixels per font pixel: 14-pixel capitals
PAD = 3  # pixels around text and between panels
LEGEND_HEIGHT = 10  # the colour bar's height
LEGEND_MIN_WIDTH = 128  # room for the numbers under a legend of a small map
LEGEND_GAP = 16  # pixels at least between the numbers under a legend
EXPOSURE_PERCENTILE = 0.995  # this quantile of the reference is shown as white
MIN_WHITE = 1e-4  # a black reference is not brightened without bound

# 5x7 capitals, digits and the punctuation of labels and numbers ("#" = ink)
_GLYPHS: dict[str, tuple[str, ...]] = {
    "A": (".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "B": ("####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."),
    "C": (".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."),
    "D": ("####.", "#...#", "#...#", "#...#", "#...#", "#...#", "####."),
    "E": ("#####", "#....", "#....", "####.", "#....", "#....", "#####"),
    "F": ("#####", "#....", "#....", "####.", "#....", "#....", "#...."),
    "G": (".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"),
    "H": ("#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "I": (".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "J": ("..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."),
    "K": ("#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"),
    "L": ("#....", "#....", "#....", "#....", "#....", "#....", "#####"),
    "M": ("#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"),
    "N": ("#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"),
    "O": (".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "P": ("####.", "#...#", "#...#", "####.", "#....", "#....", "#...."),
    "Q": (".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"),
    "R": ("####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"),
    "S": (".####", "#....", "#....", ".###.", "....#", "....#", "####."),
    "T": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    "U": ("#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "V": ("#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."),
    "W": ("#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."),
    "X": ("#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"),
    "Y": ("#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."),
    "Z": ("#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"),
    "0": (".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."),
    "1": ("..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "2": (".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"),
    "3": ("#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."),
    "4": ("...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."),
    "5": ("#####", "#....", "####.", "....#", "....#", "#...#", ".###."),
    "6": ("..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."),
    "7": ("#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."),
    "8": (".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."),
    "9": (".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."),
    " ": (".....", ".....", ".....", ".....", ".....", ".....", "....."),
    ".": (".....", ".....", ".....", ".....", ".....", ".##..", ".##.."),
    ",": (".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."),
    ":": (".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."),
    "-": (".....", ".....", ".....", "#####", ".....", ".....", "....."),
    "+": (".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."),
    "=": (".....", ".....", "#####", ".....", "#####", ".....", "....."),
    "/": (".....", "....#", "...#.", "..#..", ".#...", "#....", "....."),
    "(": ("...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."),
    ")": (".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."),
    "[": (".###.", ".#...", ".#...", ".#...", ".#...", ".#...", ".###."),
    "]": (".###.", "...#.", "...#.", "...#.", "...#.", "...#.", ".###."),
    "%": ("##...", "##..#", "...#.", "..#..", ".#...", "#..##", "...##"),
    "@": (".###.", "#...#", "#.###", "#.#.#", "#.###", "#....", ".###."),
    "_": (".....", ".....", ".....", ".....", ".....", ".....", "#####"),
    "|": ("..#..", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    "?": (".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#.."),
}
GLYPH_HEIGHT, GLYPH_WIDTH = 7, 5


# --- text and layout ---------------------------------------------------------------------
def text_mask(text: str) -> Tensor:
    """``text`` in the 5x7 font: capitals, one blank column between letters; a character
    the font lacks is drawn as ``?``. ``-> [7, 6*len-1]`` bool"""
    if not text:
        return torch.zeros(GLYPH_HEIGHT, 0, dtype=torch.bool)
    columns = []
    for char in text.upper():
        rows = _GLYPHS.get(char, _GLYPHS["?"])
        glyph = torch.tensor([[c == "#" for c in row] for row in rows], dtype=torch.bool)
        columns += [glyph, torch.zeros(GLYPH_HEIGHT, 1, dtype=torch.bool)]
    return torch.cat(columns[:-1], dim=1)


def text_width(text: str, scale: int = TEXT_SCALE) -> int:
    """Screen pixels ``text`` takes across."""
    return max(0, (GLYPH_WIDTH + 1) * len(text) - 1) * scale


def draw_text(
    image: Tensor, text: str, top: int, left: int, scale: int = TEXT_SCALE, ink: float = 1.0
) -> Tensor:
    """A copy of ``image`` ``[3,H,W]`` with ``text`` written at (top, left), cut at the
    edges. ``-> [3,H,W]``"""
    out = image.clone()
    mask = text_mask(text).repeat_interleave(scale, 0).repeat_interleave(scale, 1)
    height = max(0, min(mask.shape[0], out.shape[1] - top))
    width = max(0, min(mask.shape[1], out.shape[2] - left))
    region = out[:, top : top + height, left : left + width]
    region[:, mask[:height, :width]] = ink
    return out


def strip(height: int, width: int) -> Tensor:
    """An empty background area. ``-> [3,height,width]``"""
    return torch.full((3, height, width), BACKGROUND)


def label(text: str, width: int = 0, scale: int = TEXT_SCALE) -> Tensor:
    """``text`` in white on a background strip at least ``width`` wide.

    ``-> [3, 7*scale + 2*PAD, max(width, text + 2*PAD)]``
    """
    area = strip(GLYPH_HEIGHT * scale + 2 * PAD, max(width, text_width(text, scale) + 2 * PAD))
    return draw_text(area, text, PAD, PAD, scale)


def pad_to(image: Tensor, height: int, width: int) -> Tensor:
    """``image`` on a background area of at least this size, at its top left.

    ``[3,h,w] -> [3,max(h,height),max(w,width)]``
    """
    area = strip(max(image.shape[1], height), max(image.shape[2], width))
    area[:, : image.shape[1], : image.shape[2]] = image
    return area


def column(*parts: Tensor) -> Tensor:
    """Pictures stacked top to bottom, left-aligned. ``[3,h_i,w_i] -> [3,sum h,max w]``"""
    width = max(part.shape[2] for part in parts)
    return torch.cat([pad_to(part.float().cpu(), 0, width) for part in parts], dim=1)


def row(*parts: Tensor, gap: int = PAD) -> Tensor:
    """Pictures side by side, top-aligned, ``gap`` pixels apart.

    ``[3,h_i,w_i] -> [3,max h,sum w + gap*(n-1)]``
    """
    height = max(part.shape[1] for part in parts)
    pieces: list[Tensor] = []
    for part in parts:
        pieces += [pad_to(part.float().cpu(), height, 0), strip(height, gap)]
    return torch.cat(pieces[:-1], dim=2)


def frame(image: Tensor) -> Tensor:
    """A one-pixel grey line around ``image``. ``[3,H,W] -> [3,H+2,W+2]``"""
    framed = torch.full((3, image.shape[1] + 2, image.shape[2] + 2), FRAME)
    framed[:, 1:-1, 1:-1] = image
    return framed


def enlarge(image: Tensor, factor: int) -> Tensor:
    """Nearest-neighbour enlargement: every pixel a visible square. ``[C,H,W] -> [C,H*f,W*f]``"""
    return image.repeat_interleave(factor, dim=1).repeat_interleave(factor, dim=2)


def number(value: float) -> str:
    """A scale's value in few characters: 3 significant digits."""
    return f"{value:.3g}"


# --- colour scales -----------------------------------------------------------------------
def signed_colors(values: Tensor, vmax: float | None = None) -> Tensor:
    """Signed values to diverging colours: -vmax blue, 0 white, +vmax red, clipped beyond.

    ``vmax``: the scale, shared by pictures that are to be compared; default max |v|.
    ``[H,W] -> [3,H,W]``
    """
    values = values.detach().float().cpu()
    scale = shared_scale([values]) if vmax is None else vmax
    v = (values / max(scale, 1e-12)).nan_to_num(0.0).clamp(-1.0, 1.0)
    positive, negative = v.clamp(min=0), (-v).clamp(min=0)
    return torch.stack((1 - negative, 1 - positive - negative, 1 - positive), dim=0)


def shared_scale(tensors: Iterable[Tensor]) -> float:
    """The largest finite |value| over all ``tensors`` (0 when there is none): one
    symmetric colour scale for pictures that are to be compared."""
    scale = 0.0
    for tensor in tensors:
        values = tensor.detach().abs()
        values = values[torch.isfinite(values)]
        if values.numel():
            scale = max(scale, values.max().item())
    return scale


def legend(colours: Callable[[Tensor], Tensor], width: int, texts: tuple[str, str, str]) -> Tensor:
    """A colour bar with its values written below: left end, middle, right end.

    ``colours`` maps positions ``[W]`` in [0, 1] (left to right) to ``[3,W]``. The bar is
    at least ``width`` wide, and wide enough that the numbers stand apart.
    ``-> [3, LEGEND_HEIGHT + 2 + 7*TEXT_SCALE + 2*PAD, W]``
    """
    left, middle, right = texts
    words = sum(text_width(text) for text in texts) + 2 * LEGEND_GAP
    width = max(width, LEGEND_MIN_WIDTH, words)
    ramp = colours(torch.linspace(0.0, 1.0, width - 2))
    bar = frame(ramp[:, None, :].expand(3, LEGEND_HEIGHT, width - 2))
    area = label("", width)
    area = draw_text(area, left, PAD, 0)
    area = draw_text(area, middle, PAD, (width - text_width(middle)) // 2)
    area = draw_text(area, right, PAD, width - text_width(right))
    return column(bar, area)


def grey_legend(width: int) -> Tensor:
    """The fixed scale of grey maps: 0 black to 1 white. ``-> [3,h,>=width]``"""
    return legend(lambda t: t.expand(3, -1), width, ("0", "0.5", "1"))


def diverging_legend(vmax: float, width: int) -> Tensor:
    """The scale of :func:`signed_colors`: -vmax blue, 0 white, +vmax red. ``-> [3,h,>=width]``"""

    def colours(t: Tensor) -> Tensor:
        return signed_colors(2 * t[None, :] - 1, 1.0)[:, 0, :]

    return legend(colours, width, (f"-{number(vmax)}", "0", f"+{number(vmax)}"))


# --- the pictures ------------------------------------------------------------------------
def exposure(reference: Tensor, percentile: float = EXPOSURE_PERCENTILE) -> float:
    """The gain that shows the reference's ``percentile`` (of each pixel's brightest
    channel) as white, so highlights are not clipped and dark tiles are not black.

    ``[3,H,W] -> float``
    """
    brightest = reference.detach().float().amax(dim=0).flatten().nan_to_num(0.0)
    return 1.0 / max(torch.quantile(brightest, percentile).item(), MIN_WHITE)


def centre_crop(image: Tensor, size: int) -> Tensor:
    """The middle ``size x size`` of an image (all of a smaller one).

    ``[C,H,W] -> [C,min(H,size),min(W,size)]``
    """
    height, width = image.shape[-2:]
    top, left = max(0, (height - size) // 2), max(0, (width - size) // 2)
    return image[..., top : top + size, left : left + size]


def comparison(
    noisy: Tensor,
    denoised: Tensor,
    reference: Tensor,
    crop: int = 128,
    zoom: int = 2,
) -> Tensor:
    """Noisy | denoised | reference, labelled: the same centre crop of each, enlarged
    ``zoom`` times (nearest, so noise stays pixel-sharp), all three at the exposure that
    shows the reference's 99.5th percentile as white, then sRGB-encoded; a caption says
    the gain.

    ``[3,H,W] x 3 -> [3, h, >= 3*min(H,crop)*zoom + 2*PAD]``
    """
    crops = [centre_crop(image.detach().float().cpu(), crop) for image in (noisy, denoised)]
    crops.append(centre_crop(reference.detach().float().cpu(), crop))
    gain = exposure(crops[-1])
    panels = [
        column(label(name), enlarge(srgb(gain * image), zoom))
        for name, image in zip(("noisy", "denoised", "reference"), crops, strict=True)
    ]
    caption = label(f"exposure x{number(gain)} (reference 99.5% = white), {zoom}:1")
    return column(row(*panels), caption)


def alpha_map(alpha: Tensor, title: str = "alpha", size: int = 128) -> Tensor:
    """One level's blend weights in grey on the fixed scale 0 black .. 1 white, enlarged
    (nearest) to about ``size`` pixels, framed, with the legend bar and the mean: a
    constant map reads as its value, not as an empty picture.

    ``[h,w] -> [3, H, W]``
    """
    values = alpha.detach().float().cpu().clamp(0.0, 1.0)
    zoom = max(1, size // max(values.shape))
    grey = frame(enlarge(values.expand(3, -1, -1), zoom))
    heading = label(f"{title}: mean {values.mean().item():.2f}")
    return column(heading, grey, grey_legend(grey.shape[2]))


def kernel_stars(
    tap_weights: Tensor, count: int = 4, cell: int = 8, title: str = "kernel taps"
) -> Tensor:
    """The star kernels (15 or 21 taps) of a grid of ``count x count`` pixels, each drawn
    as its star, on one diverging colour scale (the largest |weight| drawn) shown by a
    legend.

    Args:
        tap_weights: ``[T,H,W]`` normalised kernel weights of one image (docs/design.md §4).
        count: pixels per side of the sample grid, spread evenly over the image.
        cell: screen pixels per tap.
        title: the heading.

    Returns:
        ``[3, H', W']``: heading, ``count x count`` stars of ``5*cell+2`` pixels, legend.
    """
    tap_weights = tap_weights.detach().float().cpu()
    height, width = tap_weights.shape[-2:]
    size = 2 * STAR15_RADIUS + 1
    ys = torch.linspace(0, height - 1, count).round().long()
    xs = torch.linspace(0, width - 1, count).round().long()
    vmax = shared_scale([tap_weights[:, ys][:, :, xs]])
    stars = []
    for y in ys.tolist():
        line = []
        for x in xs.tolist():
            star = torch.zeros(size, size)
            for k, (dx, dy) in enumerate(kernel_taps(tap_weights.shape[0])):
                star[STAR15_RADIUS + dy, STAR15_RADIUS + dx] = tap_weights[k, y, x]
            line.append(frame(enlarge(signed_colors(star, vmax), cell)))
        stars.append(torch.cat(line, dim=2))
    grid = torch.cat(stars, dim=1)
    return column(label(title), grid, diverging_legend(vmax, grid.shape[2]))


def matrix_map(matrix: Tensor, vmax: float | None = None, cell: int = 4, title: str = "") -> Tensor:
    """A weight matrix (or its gradient) as a heat map in diverging colours, with a legend
    that states the scale.

    ``vmax``: the colour scale, by default this matrix's largest |value|, so that its
    extremes reach the colour map's ends whatever its magnitude (a :func:`shared_scale`
    draws a matrix far smaller than the others white). ``[out,in] -> [3, H, W]``
    """
    values = matrix.detach().float().cpu()
    scale = shared_scale([values]) if vmax is None else vmax
    heat = frame(enlarge(signed_colors(values, scale), cell))
    heading = f"{title} [{values.shape[0]} x {values.shape[1]}]".strip()
    return column(label(heading), heat, diverging_legend(scale, heat.shape[2]))
