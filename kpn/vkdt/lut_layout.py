"""Where each matrix of the MLP lies in a ``.lut`` file's float block (docs/design.md §9).

The block is ``(n_hidden+1)*W x W`` floats; the matrices lie in it back to back::

    W0      [W, in_width]   at 0
    hidden k [W, W]         at W*in_width + k*W*W            (k = 0 .. n_hidden-2)
    W_out   [16, W]         at W*in_width + (n_hidden-1)*W*W
    rest of the block       zeros when we write, ignored when we read

``in_width`` is not stored in the file: it is a convention of the program that reads it
(kpn-t uses W, vkdt's ``kpn`` inference module always 32), so every function that needs
the layout takes it as an argument. Two layouts have names (:data:`LAYOUTS`):

- ``"kpn-t"``: what vkdt's kpn-t writes and reads, in_width = W. kpn writes this.
- ``"head"``: what vkdt HEAD's ``kpn`` inference module reads (``kpn/main.c`` passes
  in_width 32; ``inf-impl.glsl`` starts hidden layer k at ``WIDTH*in_width + k*W*W``):
  the first matrix W x W at 0 (``threadblock_layer`` always multiplies W x W, row k of
  W0 at float k*W), every later matrix from float 32*W on. For W = 32 it is the kpn-t
  layout; for W > 32 the first hidden matrix begins inside W0, on its row 32, so only
  a network whose first layer's units 32.. feed nothing can be written this way
  (:func:`head_layout_conflict`; ``model.vkdt_head_layout`` trains one).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kpn.config import VKDT_INFERENCE_IN_WIDTH
from kpn.errors import KpnError

# Named layouts (module docstring): kpn-t's (in_width W) and vkdt HEAD's kpn module's (32).
LAYOUTS = ("kpn-t", "head")
# vkdt's matrix loads work on 16x16 tiles, and W_out has 16 rows.
TILE = 16
N_OUT = 16

Offsets = list[tuple[int, int, int]]  # (offset, rows, cols) in floats, one per matrix


def matrix_offsets(
    width: int, n_hidden: int, in_width: int, first_cols: int | None = None
) -> Offsets:
    """(offset, rows, cols) in floats of W0, every hidden matrix and W_out (design §9).

    W0 has ``first_cols`` columns (default ``in_width``); the later matrices start at
    ``W*in_width``. vkdt's shaders read W0 W wide whatever in_width is (``first_cols = W``).
    """
    first = width * in_width
    hidden = [(first + k * width * width, width, width) for k in range(n_hidden - 1)]
    w_out = (first + (n_hidden - 1) * width * width, N_OUT, width)
    return [(0, width, in_width if first_cols is None else first_cols), *hidden, w_out]


def layout_in_width(width: int, layout: str) -> int:
    """The in_width a named layout starts the later matrices with: W (kpn-t) or 32 (head)."""
    return width if layout == "kpn-t" else VKDT_INFERENCE_IN_WIDTH


def named_layout(width: int, n_hidden: int, layout: str) -> Offsets:
    """(offset, rows, cols) of every matrix in a named layout (:data:`LAYOUTS`): W0 W x W
    at 0, the later matrices from ``W * in_width`` (in_width W for kpn-t, 32 for head).

    Hand-checked for W 64, 6 hidden layers: kpn-t 0, 4096, 8192, ..., W_out at 24576;
    head 0, 2048, 6144, ..., W_out at 22528 (hidden 0 begins at W0's row 32).
    """
    check_layout_name(layout, "layout")
    return matrix_offsets(width, n_hidden, layout_in_width(width, layout), first_cols=width)


def check_layout_name(layout: str, where: str) -> None:
    """KpnError, naming ``where``, unless ``layout`` is one of :data:`LAYOUTS`."""
    if layout not in LAYOUTS:
        raise KpnError(f"{where}: unknown layout {layout!r} (expected one of {list(LAYOUTS)})")


def check_layout_fits(
    width: int, n_hidden: int, in_width: int, where: str, first_cols: int | None = None
) -> None:
    """KpnError unless ``in_width`` is a usable layout for a W x (n_hidden+1)W block."""
    if isinstance(in_width, bool) or not isinstance(in_width, int):
        raise KpnError(f"{where}: in_width must be an integer, got {in_width!r}")
    if in_width < TILE or in_width % TILE:
        raise KpnError(f"{where}: in_width {in_width} is not a positive multiple of {TILE}")
    block = (n_hidden + 1) * width * width
    ends = [o + r * c for o, r, c in matrix_offsets(width, n_hidden, in_width, first_cols)]
    if max(ends) > block:
        raise KpnError(
            f"{where}: in_width {in_width} does not fit W={width}, n_hidden={n_hidden}: "
            f"the matrices need {max(ends)} floats, the block holds {block}"
        )


def head_layout_conflict(matrices: Sequence[np.ndarray]) -> str | None:
    """Why ``matrices`` (``[W0, next, ..., W_out]`` as stored, W0 W x W) are not the
    network that vkdt HEAD's kpn module reads from a ``"head"`` layout file: one line, or
    None when they are.

    There the matrix after W0 starts at float 32*W, which is W0's row 32, so W0's rows
    32.. are read as the floats of the later matrices. The network is the same when a row
    is read back unchanged, or when the first layer's unit of that row feeds nothing
    (its column of the next matrix is 0).
    """
    first = matrices[0]
    width = first.shape[0]
    if width <= VKDT_INFERENCE_IN_WIDTH:
        return None
    region = first.reshape(-1).copy()  # what the head layout reads as W0
    offsets = named_layout(width, len(matrices) - 1, "head")
    for matrix, (offset, _, _) in zip(matrices[1:], offsets[1:], strict=True):
        flat = matrix.reshape(-1)
        end = min(offset + flat.size, region.size)
        if offset < end:
            region[offset:end] = flat[: end - offset]
    read = region.reshape(width, width)
    following = matrices[1]
    for row in range(VKDT_INFERENCE_IN_WIDTH, width):
        if np.array_equal(first[row], read[row]) or not following[:, row].any():
            continue
        return (
            f"vkdt HEAD's kpn module reads the W = {width} file's later matrices from float "
            f"{offsets[1][0]}, W0's row {VKDT_INFERENCE_IN_WIDTH} (in_width 32, kpn/main.c): "
            f"unit {row} of the first layer feeds the next layer (column {row} of "
            f"{matrix_name(1, len(matrices))} is not 0), so no file in that layout holds "
            "this network; train it with model.vkdt_head_layout = true (docs/vkdt.md, "
            "defect 6)"
        )
    return None


def matrix_name(index: int, count: int) -> str:
    """How messages name matrix ``index`` of ``count``: W0, hidden k or W_out."""
    if index == 0:
        return "W0"
    return "W_out" if index == count - 1 else f"hidden {index - 1}"
