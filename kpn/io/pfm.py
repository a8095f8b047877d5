"""PFM files (``read_pfm``, ``write_pfm``): colour ``PF`` and grey ``Pf``, both byte
orders, float32 ``[H,W,3]`` / ``[H,W]`` arrays, top row first.

The format stores the bottom row first; vkdt does not: its ``o-pfm`` writes and its
``i-pfm`` reads the top row first, and ``i-pfm`` ignores the scale's sign (it reads the
host's little-endian floats whatever the header says). ``vkdt_rows=True`` reads and writes
vkdt's row order, and writes o-pfm's exact header (padded so the data starts on a 16-byte
boundary), so that our files and vkdt's are the same bytes.

Every bad file raises :class:`~kpn.errors.KpnError` with one line naming it; writes are
atomic (:mod:`kpn.io.atomic`).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from kpn.errors import KpnError, reading
from kpn.io.atomic import atomic_output
from kpn.io.shared import PathLike, as_image, check_finite

PFM_EXTENSIONS = frozenset({".pfm"})

# Magic, width, height, scale, then exactly one whitespace byte before the data.
_PFM_HEADER = re.compile(rb"(P[Ff])\s+(\S+)\s+(\S+)\s+(\S+)\s")
_PFM_HEADER_LIMIT = 1024  # vkdt's padded header is < 32 bytes; anything this long is not PFM


def read_pfm(
    path: PathLike, *, vkdt_rows: bool = False, require_finite: bool = False
) -> np.ndarray:
    """Read a PFM file: ``PF`` -> float32 ``[H,W,3]``, ``Pf`` -> float32 ``[H,W]``, top row first.

    The scale's sign gives the byte order (negative: little-endian); its magnitude is
    ignored, as every common reader does. ``vkdt_rows``: the file stores the top row
    first, as vkdt writes it (the format itself stores the bottom row first).
    ``require_finite``: refuse NaN and Inf values. Raises KpnError naming ``path`` for a
    bad header, a zero or non-numeric scale, or data that is short or too long.
    """
    with reading(path), open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        raw = file.read(_PFM_HEADER_LIMIT)
        image, dtype, offset = _pfm_header(path, raw, size)
        file.seek(offset)
        _read_rows(file, image, dtype, top_first=vkdt_rows)
    if require_finite:
        check_finite(image, path)
    return image


def _pfm_header(path: PathLike, raw: bytes, size: int) -> tuple[np.ndarray, np.dtype, int]:
    """The (empty) image a PFM file holds, its data's dtype, and where its data starts;
    KpnError for what read_pfm refuses. ``raw``: the file's first bytes."""
    match = _PFM_HEADER.match(raw)
    if not raw.startswith((b"PF", b"Pf")):
        raise KpnError(f"{path}: not a PFM file (starts with {raw[:8]!r}, expected 'PF' or 'Pf')")
    if match is None:
        raise KpnError(f"{path}: bad PFM header: expected 'PF' or 'Pf', width, height, scale")
    magic, width_text, height_text, scale_text = match.groups()
    if not (width_text.isdigit() and height_text.isdigit()):
        raise KpnError(
            f"{path}: bad PFM header: size {_text(width_text)} x {_text(height_text)} "
            "is not two integers"
        )
    width, height = int(width_text), int(height_text)
    if width == 0 or height == 0:
        raise KpnError(f"{path}: bad PFM header: size {width} x {height} is empty")
    try:
        scale = float(scale_text)
    except ValueError:
        raise KpnError(f"{path}: bad PFM scale {_text(scale_text)}: not a number") from None
    if scale == 0 or not math.isfinite(scale):
        raise KpnError(
            f"{path}: bad PFM scale {_text(scale_text)}: must be negative (little-endian) "
            "or positive (big-endian)"
        )
    channels = 3 if magic == b"PF" else 1
    expected = width * height * channels * 4
    found = size - match.end()
    if found < expected:
        raise KpnError(f"{path}: truncated: {found} of {expected} data bytes")
    if found > expected:
        raise KpnError(
            f"{path}: {found - expected} bytes after the {expected} data bytes of a "
            f"{width} x {height} {magic.decode()} image"
        )
    dtype = np.dtype("<f4" if scale < 0 else ">f4")
    shape = (height, width, 3) if channels == 3 else (height, width)
    return np.empty(shape, dtype=np.float32), dtype, match.end()


PFM_CHUNK_BYTES = 1 << 24  # rows are read and written in chunks of this, not the whole image


def _read_rows(file: BinaryIO, image: np.ndarray, dtype: np.dtype, *, top_first: bool) -> None:
    """Fill ``image`` from ``file``'s rows (bottom row first unless ``top_first``), a chunk
    of rows at a time: memory beyond the image stays at one chunk."""
    height = image.shape[0]
    row_bytes = image[0].nbytes
    step = max(1, PFM_CHUNK_BYTES // row_bytes)
    for start in range(0, height, step):  # rows of the file, in file order
        count = min(step, height - start)
        chunk = np.frombuffer(file.read(count * row_bytes), dtype=dtype)
        chunk = chunk.reshape(count, *image.shape[1:])
        if top_first:
            image[start : start + count] = chunk
        else:
            image[height - start - count : height - start] = chunk[::-1]


def _text(token: bytes) -> str:
    return repr(token.decode("latin-1"))


def _pfm_chunks(array: np.ndarray, vkdt_rows: bool) -> Iterator[np.ndarray]:
    """``array``'s rows in a PFM file's order (bottom first unless ``vkdt_rows``) as
    little-endian float32, ``PFM_CHUNK_BYTES`` at a time."""
    rows = array if vkdt_rows else array[::-1]
    step = max(1, PFM_CHUNK_BYTES // max(1, array[0].nbytes))
    for start in range(0, rows.shape[0], step):
        with np.errstate(over="ignore"):  # beyond float32 becomes Inf, as any float32 store
            yield np.ascontiguousarray(rows[start : start + step], dtype="<f4")


def _pfm_header_text(width: int, height: int, ndim: int, vkdt_rows: bool) -> bytes:
    magic = "PF" if ndim == 3 else "Pf"
    if vkdt_rows:
        header = f"{magic}\n{width} {height}\n-1.0"
        header += "0" * (-(len(header) + 1) % 16) + "\n"
    else:
        header = f"{magic}\n{width} {height}\n-1.0\n"
    return header.encode("ascii")


def write_pfm(path: PathLike, image: np.ndarray, *, vkdt_rows: bool = False) -> None:
    """Write ``image`` (``[H,W,3]`` or ``[H,W]``) as a little-endian PFM file, atomically,
    a chunk of rows at a time (no copy of the image).

    ``vkdt_rows``: top row first, behind vkdt ``o-pfm``'s header ("-1.0" padded with
    zeros so that the data starts at a multiple of 16 bytes); otherwise the format's
    bottom-first rows behind a plain header. Values are stored as float32, NaN and Inf
    included.
    """
    array = as_image(image, path)
    with atomic_output(path) as temp, open(temp, "wb") as file:
        file.write(_pfm_header_text(array.shape[1], array.shape[0], array.ndim, vkdt_rows))
        for chunk in _pfm_chunks(array, vkdt_rows):
            file.write(chunk.data)
