"""Images in and out of files, in numpy: float32 ``[H,W,3]`` linear RGB, top row first.

- PFM (``read_pfm``, ``write_pfm``): colour ``PF`` and grey ``Pf``, both byte orders. The
  format stores the bottom row first; vkdt does not: its ``o-pfm`` writes and its ``i-pfm``
  reads the top row first, and ``i-pfm`` ignores the scale's sign (it reads the host's
  little-endian floats whatever the header says). ``vkdt_rows=True`` reads and writes
  vkdt's row order, and writes o-pfm's exact header (padded so the data starts on a
  16-byte boundary), so that our files and vkdt's are the same bytes.
- PNG, JPEG, TIFF (``read_image``, ``write_image``): 8 and 16 bits are sRGB-encoded and
  decoded to linear on read, encoded on write; float TIFF is linear as it stands. PNG
  and JPEG go through imagecodecs, TIFF through tifffile (imageio's Pillow reader cuts
  16-bit colour PNG to 8 bits, and Pillow cannot write it). Embedded colour profiles
  and orientation tags are ignored: pixels come out as stored.
- Camera raw (``read_raw``) through rawpy (LibRaw), in three modes: ``half``,
  ``demosaic``, ``mosaic`` (see ``read_raw``).
- ``read_any`` picks one of the above by the file's extension.

Every user mistake (missing, unreadable, truncated or corrupt file, a shape or a bit depth
the format cannot hold) raises :class:`KpnError` with one line naming the file. Writes
are atomic (:mod:`kpn.io.atomic`).
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, Literal

import imagecodecs
import numpy as np
import rawpy
import tifffile

from kpn.errors import KpnError
from kpn.io.atomic import atomic_output, atomic_write_bytes

PFM_EXTENSIONS = frozenset({".pfm"})
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff"})
RAW_EXTENSIONS = frozenset(
    {
        ".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".raf",
        ".orf", ".rw2", ".rwl", ".pef", ".srw", ".3fr", ".fff", ".iiq", ".mos", ".mrw",
        ".x3f", ".erf", ".kdc", ".dcr",
    }
)  # fmt: skip
RawMode = Literal["half", "demosaic", "mosaic"]
RAW_MODES: tuple[RawMode, ...] = ("half", "demosaic", "mosaic")

PathLike = str | os.PathLike[str]


# --- sRGB ------------------------------------------------------------------------------
# IEC 61966-2-1. The two pieces of each curve meet at these points (to within 1e-8: the
# standard rounds the constants).
_ENCODED_KNEE = 0.04045
_LINEAR_KNEE = 0.0031308


def srgb_to_linear(encoded: np.ndarray) -> np.ndarray:
    """The sRGB decoding curve, elementwise on encoded values (1.0 = white).

    ``x / 12.92`` up to 0.04045, ``((x + 0.055) / 1.055) ** 2.4`` above; values below 0 or
    above 1 follow the nearer piece. Computed in float64; the result is float32 for
    float32 or float16 input, float64 otherwise. ``[...] -> [...]``
    """
    x = np.asarray(encoded, dtype=np.float64)
    curve = ((np.maximum(x, _ENCODED_KNEE) + 0.055) / 1.055) ** 2.4
    return np.where(x <= _ENCODED_KNEE, x / 12.92, curve).astype(_result_dtype(encoded))


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    """The sRGB encoding curve, elementwise; the inverse of :func:`srgb_to_linear`.

    ``12.92 * y`` up to 0.0031308, ``1.055 * y ** (1/2.4) - 0.055`` above. ``[...] -> [...]``
    """
    y = np.asarray(linear, dtype=np.float64)
    curve = 1.055 * np.maximum(y, _LINEAR_KNEE) ** (1 / 2.4) - 0.055
    return np.where(y <= _LINEAR_KNEE, 12.92 * y, curve).astype(_result_dtype(linear))


def _result_dtype(values: np.ndarray) -> type[np.floating]:
    dtype = getattr(values, "dtype", None)
    return np.float32 if dtype in (np.float32, np.float16) else np.float64


@lru_cache(maxsize=2)
def _decode_table(maximum: int) -> np.ndarray:
    """Linear value of every integer code 0..maximum: decoding by lookup is exact and fast."""
    table = srgb_to_linear(np.arange(maximum + 1, dtype=np.float64) / maximum).astype(np.float32)
    table.flags.writeable = False
    return table


# --- shared helpers --------------------------------------------------------------------
def _read_bytes(path: PathLike) -> bytes:
    with _reading(path):
        return Path(path).read_bytes()


def _check_readable(path: PathLike) -> None:
    """KpnError now, with the messages of ``_read_bytes``, for a file a library will open."""
    with _reading(path), open(path, "rb"):
        pass


@contextmanager
def _reading(path: PathLike) -> Iterator[None]:
    try:
        yield
    except FileNotFoundError:
        raise KpnError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise KpnError(f"{path}: is a directory, not a file") from None
    except OSError as err:
        raise KpnError(f"{path}: cannot read ({err.strerror or err})") from None


def _one_line(error: BaseException) -> str:
    """The first line of an exception's message (LibRaw's come as bytes)."""
    first = error.args[0] if len(error.args) == 1 else error
    text = first.decode("utf-8", "replace") if isinstance(first, bytes) else str(first)
    lines = text.strip().splitlines()
    return lines[0] if lines else type(error).__name__


def check_finite(image: np.ndarray, path: PathLike) -> None:
    """KpnError naming ``path`` and the first bad pixel if ``image`` holds NaN or Inf.

    ``image``: ``[H,W,3]`` or ``[H,W]``.
    """
    bad = ~np.isfinite(image)
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0][:2])
        count = int(bad.sum())
        raise KpnError(
            f"{path}: {count} NaN or Inf values (the first at row {row}, column {column})"
        )


def _as_image(image: np.ndarray, path: PathLike) -> np.ndarray:
    """A real-valued ``[H,W,3]`` or ``[H,W]`` array with H, W >= 1, else KpnError."""
    array = np.asarray(image)
    if array.dtype.kind not in "fiu":
        raise KpnError(f"{path}: image has dtype {array.dtype}, expected real numbers")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)) or 0 in array.shape:
        raise KpnError(f"{path}: image has shape {list(array.shape)}, expected [H,W,3] or [H,W]")
    return array


def _to_rgb(pixels: np.ndarray, path: PathLike) -> np.ndarray:
    """``[H,W]``, ``[H,W,1|2|3|4]`` (grey, grey+alpha, RGB, RGBA) -> ``[H,W,3]``, alpha dropped."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4):
        raise KpnError(f"{path}: decoded to shape {list(pixels.shape)}, not a grey or RGB image")
    if pixels.shape[2] in (1, 2):
        return np.repeat(pixels[:, :, :1], 3, axis=2)
    return pixels[:, :, :3]


# --- PFM -------------------------------------------------------------------------------
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
    with _reading(path), open(path, "rb") as file:
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


def pfm_bytes(image: np.ndarray, *, vkdt_rows: bool = False, where: PathLike = "pfm") -> bytes:
    """The bytes of a little-endian PFM holding ``image`` (``[H,W,3]`` -> PF, ``[H,W]`` -> Pf).

    ``vkdt_rows``: top row first, behind vkdt ``o-pfm``'s header ("-1.0" padded with
    zeros so that the data starts at a multiple of 16 bytes); otherwise the format's
    bottom-first rows behind a plain header. Values are stored as float32, NaN and Inf
    included. ``where`` names the destination in error messages.
    """
    array = _as_image(image, where)
    header = _pfm_header_text(array.shape[1], array.shape[0], array.ndim, vkdt_rows)
    return header + b"".join(chunk.tobytes() for chunk in _pfm_chunks(array, vkdt_rows))


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
    """Write ``image`` (``[H,W,3]`` or ``[H,W]``) as a PFM file, atomically, as
    :func:`pfm_bytes` lays it out, a chunk of rows at a time (no copy of the image)."""
    array = _as_image(image, path)
    with atomic_output(path) as temp, open(temp, "wb") as file:
        file.write(_pfm_header_text(array.shape[1], array.shape[0], array.ndim, vkdt_rows))
        for chunk in _pfm_chunks(array, vkdt_rows):
            file.write(chunk.data)


# --- PNG, JPEG, TIFF -------------------------------------------------------------------
def read_image(path: PathLike, *, require_finite: bool = False) -> np.ndarray:
    """Read a PNG, JPEG or TIFF as float32 linear RGB ``[H,W,3]``, top row first.

    8- and 16-bit samples are sRGB codes, decoded exactly (by table); float TIFF samples
    are taken as linear. Grey becomes three equal channels, alpha is dropped.
    ``require_finite``: refuse NaN and Inf (only float TIFF can hold them).
    """
    extension = Path(path).suffix.lower()
    if extension not in IMAGE_EXTENSIONS:
        raise KpnError(f"{path}: not a PNG, JPEG or TIFF name (extension {extension or 'none'!r})")
    if extension in (".tif", ".tiff"):
        pixels = _read_tiff(path)
    else:
        data = _read_bytes(path)
        kind, decode = (
            ("PNG", imagecodecs.png_decode)
            if extension == ".png"
            else ("JPEG", imagecodecs.jpeg8_decode)
        )
        try:
            pixels = decode(data)
        except Exception as err:  # PngError, Jpeg8Error, and others for some corrupt data
            raise KpnError(f"{path}: cannot decode as {kind} ({_one_line(err)})") from None
        if kind == "JPEG" and pixels.ndim == 3 and pixels.shape[2] == 4:
            raise KpnError(f"{path}: a CMYK JPEG, not an RGB image")
    rgb = _to_rgb(pixels, path)
    if rgb.dtype.kind == "u" and rgb.dtype.itemsize in (1, 2):  # either byte order
        return _decode_table(np.iinfo(rgb.dtype).max)[rgb]
    if rgb.dtype.kind == "f":
        image = np.array(rgb, dtype=np.float32, order="C")
        if require_finite:
            check_finite(image, path)
        return image
    raise KpnError(f"{path}: {rgb.dtype} samples (expected 8 or 16 bits unsigned, or float)")


_TIFF_PHOTOMETRIC_OK = (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.RGB)


def _read_tiff(path: PathLike) -> np.ndarray:
    """The first image of a TIFF as stored: ``[H,W]`` or ``[H,W,S]``."""
    _check_readable(path)
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            photometric = page.photometric
            if photometric == tifffile.PHOTOMETRIC.CFA:
                raise KpnError(f"{path}: holds a colour filter array (camera raw), not an image")
            if photometric not in _TIFF_PHOTOMETRIC_OK:
                raise KpnError(
                    f"{path}: TIFF photometric {photometric.name} (expected MINISBLACK or RGB)"
                )
            pixels, axes = page.asarray(), page.axes
    except KpnError:
        raise
    except Exception as err:  # tifffile and its codecs raise many types for corrupt files
        raise KpnError(f"{path}: cannot decode as TIFF ({_one_line(err)})") from None
    if axes == "SYX":  # planar configuration: one plane per sample
        return np.moveaxis(pixels, 0, -1)
    if axes not in ("YX", "YXS"):
        raise KpnError(f"{path}: TIFF image with axes {axes!r}, expected a single 2D image")
    return pixels


_WRITE_BITS = {
    ".png": (8, 16),
    ".jpg": (8,),
    ".jpeg": (8,),
    ".tif": (8, 16, 32),
    ".tiff": (8, 16, 32),
}
JPEG_QUALITY = 95


def encode_srgb(image: np.ndarray, bits: int) -> np.ndarray:
    """Linear values -> sRGB integer codes of ``bits`` (8 or 16), clipped to [0, 1] first.

    ``[...] -> [...]`` uint8 or uint16. Non-finite values have no code: the caller checks.
    """
    maximum = (1 << bits) - 1
    encoded = linear_to_srgb(np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0))
    return np.rint(encoded * maximum).astype(np.uint8 if bits == 8 else np.uint16)


def write_image(path: PathLike, image: np.ndarray, *, bits: int = 8) -> None:
    """Write linear ``image`` (``[H,W,3]`` or grey ``[H,W]``) as PNG, JPEG or TIFF, atomically.

    The format comes from the extension. ``bits`` 8 or 16: sRGB codes, values clipped to
    [0, 1] (PNG 8/16, JPEG 8 at quality 95, TIFF 8/16). ``bits`` 32: float32 linear, TIFF
    only, values as they are. Raises KpnError naming ``path`` for another extension or
    bit depth, a bad shape, or NaN/Inf where integer codes are asked for.
    """
    extension = Path(path).suffix.lower()
    if extension not in _WRITE_BITS:
        raise KpnError(
            f"{path}: cannot write images with extension {extension or 'none'!r} "
            f"(expected one of {sorted(_WRITE_BITS)}; PFM has write_pfm)"
        )
    if bits not in _WRITE_BITS[extension]:
        raise KpnError(
            f"{path}: {bits} bits per sample, {extension} holds {list(_WRITE_BITS[extension])}"
        )
    array = _as_image(image, path)
    if bits == 32:
        pixels = np.ascontiguousarray(array, dtype=np.float32)
    else:
        if not np.isfinite(array).all():
            raise KpnError(f"{path}: image has NaN or Inf, which {bits}-bit codes cannot hold")
        pixels = np.ascontiguousarray(encode_srgb(array, bits))  # codecs need C order
    if extension == ".png":
        atomic_write_bytes(path, imagecodecs.png_encode(pixels))
    elif extension in (".jpg", ".jpeg"):
        atomic_write_bytes(path, imagecodecs.jpeg8_encode(pixels, level=JPEG_QUALITY))
    else:
        photometric = "rgb" if pixels.ndim == 3 else "minisblack"
        with atomic_output(path) as temp:
            tifffile.imwrite(temp, pixels, photometric=photometric)


# --- camera raw ------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class RawImage:
    """A camera raw file read by :func:`read_raw`.

    ``image``: float32 ``[H,W,3]``, see ``read_raw`` for each mode. ``cfa``: the colour
    letters of the sensor's repeating filter tile, row by row from the top-left visible
    pixel ("RGGB"; 36 letters for X-Trans; "" for sensors without a mosaic). ``black`` and
    ``white``: the levels of each letter of ``cfa`` in raw units (one entry when there is
    no mosaic). ``maker``, ``model`` (as the file's TIFF/EXIF tags spell them) and ``iso``
    are None where the file does not say.
    """

    image: np.ndarray
    maker: str | None
    model: str | None
    iso: int | None
    black: tuple[float, ...]
    white: tuple[float, ...]
    cfa: str


def read_raw(path: PathLike, mode: RawMode = "demosaic") -> RawImage:
    """Read a camera raw file with rawpy (LibRaw).

    Modes, all linear, in the sensor's orientation (the file's rotation tag is ignored so
    that the three modes agree pixel for pixel), not clipped:

    - ``half``: each 2x2 Bayer block -> one pixel (R, mean of the two G, B), each sample
      normalised as ``(v - black) / (white - black)`` of its colour. ``[H//2, W//2, 3]``.
    - ``demosaic``: LibRaw's AHD demosaic, 16-bit linear output (gamma (1, 1), no
      automatic brightness, no data-dependent white-level adjustment, highlights clipped),
      scaled by black and white level and the camera's white balance multipliers
      (normalised by LibRaw so the smallest is 1), in the camera's own RGB: no colour
      matrix, so the noise of each channel stays its own. ``[H, W, 3]``.
    - ``mosaic``: the normalised Bayer mosaic as SPEC 8's three-channel mosaic image (each
      sample written to all three channels), with no white balance. The first row and/or
      column is dropped where needed so that SPEC 8's RGGB starts at (0, 0).

    ``half`` and ``mosaic`` need a 2x2 Bayer filter. Raises KpnError naming ``path`` for
    a file that is missing or that LibRaw cannot read as raw, or a mode it cannot have.
    """
    if mode not in RAW_MODES:
        raise KpnError(f"{path}: raw mode {mode!r} (expected one of {list(RAW_MODES)})")
    _check_readable(path)
    try:
        with rawpy.imread(os.fspath(path)) as raw:
            iso = float(raw.other.iso_speed)
            if raw.raw_type != rawpy.RawType.Flat:
                if mode != "demosaic":
                    raise KpnError(f"{path}: no colour filter mosaic: raw mode {mode!r} needs one")
                levels = np.asarray(raw.black_level_per_channel[:1], dtype=np.float64)
                black, white, cfa = (float(levels[0]),), (float(raw.white_level),), ""
                image = _demosaic(raw)
            else:
                black, white, cfa, normalised = _normalised_mosaic(raw)
                if mode == "demosaic":
                    image = _demosaic(raw)
                elif mode == "half":
                    image = _half(normalised, cfa, path)
                else:
                    image = _mosaic(normalised, cfa, path)
    except KpnError:
        raise
    except (rawpy.LibRawError, rawpy.NotSupportedError) as err:
        reason = _one_line(err)
        raise KpnError(f"{path}: not a camera raw file LibRaw can read ({reason})") from None
    except OSError as err:
        raise KpnError(f"{path}: cannot read ({err.strerror or err})") from None
    maker, model, tag_iso = camera_tags(path)
    return RawImage(
        image=image,
        maker=maker,
        model=model,
        iso=round(iso) if iso > 0 else tag_iso,
        black=black,
        white=white,
        cfa=cfa,
    )


def _normalised_mosaic(
    raw: rawpy.RawPy,
) -> tuple[tuple[float, ...], tuple[float, ...], str, np.ndarray]:
    """(black, white, cfa, ``[H,W]`` float32 (v - black) / (white - black) per colour)."""
    letters = raw.color_desc.decode("ascii")
    colours = raw.raw_colors_visible  # [H,W] index into letters
    tile_h, tile_w = raw.raw_pattern.shape
    tile = colours[:tile_h, :tile_w]
    cfa = "".join(letters[c] for c in tile.ravel())
    black_of = np.asarray(raw.black_level_per_channel, dtype=np.float64)
    per_channel_white = raw.camera_white_level_per_channel
    white_of = np.asarray(
        per_channel_white if per_channel_white is not None else [raw.white_level] * 4,
        dtype=np.float64,
    )
    scale_of = 1.0 / (white_of - black_of)
    values = raw.raw_image_visible.astype(np.float32)
    normalised = (values - black_of.astype(np.float32)[colours]) * scale_of.astype(np.float32)[
        colours
    ]
    black = tuple(float(black_of[c]) for c in tile.ravel())
    white = tuple(float(white_of[c]) for c in tile.ravel())
    return black, white, cfa, normalised


def _bayer_offsets(cfa: str, path: PathLike) -> dict[str, list[tuple[int, int]]]:
    """(row, column) in the 2x2 tile of R, of both G and of B; KpnError unless Bayer."""
    if len(cfa) != 4 or sorted(cfa) != ["B", "G", "G", "R"]:
        raise KpnError(f"{path}: colour filter {cfa!r} is not a 2x2 Bayer pattern (RGGB etc.)")
    offsets: dict[str, list[tuple[int, int]]] = {"R": [], "G": [], "B": []}
    for index, letter in enumerate(cfa):
        offsets[letter].append(divmod(index, 2))
    return offsets


def _half(normalised: np.ndarray, cfa: str, path: PathLike) -> np.ndarray:
    """``[H,W]`` Bayer mosaic -> ``[H//2, W//2, 3]``: R, mean of both G, B of each block."""
    offsets = _bayer_offsets(cfa, path)
    height, width = normalised.shape[0] // 2 * 2, normalised.shape[1] // 2 * 2
    if height == 0 or width == 0:
        raise KpnError(f"{path}: {normalised.shape[1]} x {normalised.shape[0]} has no 2x2 block")

    def plane(dy: int, dx: int) -> np.ndarray:
        return normalised[dy:height:2, dx:width:2]

    (r,), (g1, g2), (b,) = offsets["R"], offsets["G"], offsets["B"]
    green = 0.5 * (plane(*g1) + plane(*g2))
    return np.ascontiguousarray(np.stack((plane(*r), green, plane(*b)), axis=2))


def _mosaic(normalised: np.ndarray, cfa: str, path: PathLike) -> np.ndarray:
    """``[H,W]`` Bayer mosaic -> SPEC 8's ``[H',W',3]``, cropped so that red is at (0, 0)."""
    ((dy, dx),) = _bayer_offsets(cfa, path)["R"]
    cropped = normalised[dy:, dx:]
    if 0 in cropped.shape:
        raise KpnError(f"{path}: too small for a mosaic image")
    return np.repeat(cropped[:, :, None], 3, axis=2)


def _demosaic(raw: rawpy.RawPy) -> np.ndarray:
    rgb = raw.postprocess(
        demosaic_algorithm=rawpy.DemosaicAlgorithm.AHD,
        use_camera_wb=True,
        output_color=rawpy.ColorSpace.raw,
        output_bps=16,
        gamma=(1, 1),
        no_auto_bright=True,
        adjust_maximum_thr=0.0,  # LibRaw would otherwise lower the white level to the data's max
        highlight_mode=rawpy.HighlightMode.Clip,
        user_flip=0,
    )
    return (rgb.astype(np.float32) / np.float32(65535.0)).astype(np.float32)


# --- camera tags -----------------------------------------------------------------------
# Most raw formats are TIFF inside or embed TIFF structures (CR3's CMT boxes, RAF's JPEG
# EXIF), some with their own magic number (ORF "IIRO"/"IIRS", RW2 "IIU\0"). LibRaw knows
# the camera but rawpy does not expose it, so the tags are read from those structures.
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"IIRO", b"IIRS", b"IIU\x00")
_TAG_SCAN_BYTES = 1 << 20
_TAG_SCAN_CANDIDATES = 16
_MAKE, _MODEL, _ISO = 271, 272, 34855


def camera_tags(path: PathLike) -> tuple[str | None, str | None, int | None]:
    """(maker, model, ISO) from the TIFF/EXIF structures in a file's first MiB.

    The first structure that names a value wins for that value (IFD0, then its EXIF
    IFD for the ISO). A value the file does not hold is None; so are all three for a
    file that cannot be read.
    """
    try:
        with open(path, "rb") as file:
            head = file.read(_TAG_SCAN_BYTES)
    except OSError:
        return None, None, None
    found: dict[int, str | int] = {}
    for offset in _tiff_offsets(head):
        for code, value in _ifd0_camera_tags(head, offset).items():
            found.setdefault(code, value)
        if len(found) == 3:
            break
    maker, model, iso = found.get(_MAKE), found.get(_MODEL), found.get(_ISO)
    return (
        maker if isinstance(maker, str) else None,
        model if isinstance(model, str) else None,
        iso if isinstance(iso, int) else None,
    )


def _tiff_offsets(head: bytes) -> list[int]:
    offsets: list[int] = []
    for magic in _TIFF_MAGICS:
        start = head.find(magic)
        while start >= 0 and len(offsets) < 4 * _TAG_SCAN_CANDIDATES:
            offsets.append(start)
            start = head.find(magic, start + 1)
    return sorted(offsets)[:_TAG_SCAN_CANDIDATES]


@contextmanager
def _quiet_tifffile() -> Iterator[None]:
    # Probing byte strings that merely look like TIFF headers makes tifffile log warnings.
    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _ifd0_camera_tags(head: bytes, offset: int) -> dict[int, str | int]:
    """Make, Model, ISO of the TIFF structure at ``offset`` (standard magic patched in)."""
    data = bytearray(head[offset:])
    data[2:4] = b"*\x00" if data[:2] == b"II" else b"\x00*"
    tags: dict[int, str | int] = {}
    try:
        with _quiet_tifffile(), tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
            page_tags = tif.pages.first.tags
            for code in (_MAKE, _MODEL):
                value = page_tags.valueof(code)
                if isinstance(value, str) and value.strip(" \x00"):
                    tags[code] = value.strip(" \x00")
            exif = page_tags.valueof(34665)  # ExifTag: tifffile reads the EXIF IFD as a dict
            iso = page_tags.valueof(_ISO)
            if iso is None and isinstance(exif, dict):
                iso = exif.get("ISOSpeedRatings", exif.get("PhotographicSensitivity"))
            if isinstance(iso, tuple | list) and iso:
                iso = iso[0]
            if isinstance(iso, int | np.integer) and iso > 0:
                tags[_ISO] = int(iso)
    except Exception:  # random bytes that only look like a TIFF header: not a structure
        return {}
    return tags


# --- any -------------------------------------------------------------------------------
def read_any(
    path: PathLike, *, raw_mode: RawMode = "demosaic", require_finite: bool = False
) -> np.ndarray:
    """Read any supported file as float32 linear RGB ``[H,W,3]``, by its extension.

    ``.pfm`` (the format's row order; a grey ``Pf`` becomes three equal channels),
    ``.png``/``.jpg``/``.jpeg``/``.tif``/``.tiff``, or a camera raw extension
    (:data:`RAW_EXTENSIONS`, read in ``raw_mode``). ``require_finite``: refuse NaN and
    Inf. Raises KpnError naming ``path`` for an unknown extension or an unreadable file.
    """
    extension = Path(path).suffix.lower()
    if extension in PFM_EXTENSIONS:
        image = read_pfm(path, require_finite=require_finite)
        return np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image
    if extension in IMAGE_EXTENSIONS:
        return read_image(path, require_finite=require_finite)
    if extension in RAW_EXTENSIONS:
        image = read_raw(path, raw_mode).image
        if require_finite:
            check_finite(image, path)
        return image
    raise KpnError(
        f"{path}: unknown image type {extension or '(no extension)'!r}: expected .pfm, "
        f"{', '.join(sorted(IMAGE_EXTENSIONS))} or a camera raw such as .dng"
    )
