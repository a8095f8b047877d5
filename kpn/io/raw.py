"""Camera raw files through rawpy (LibRaw): ``read_raw`` in three modes (``half``,
``demosaic``, ``mosaic``), and ``camera_tags``, the maker, model and ISO a raw file's
TIFF/EXIF structures name.

Every user mistake (a missing or unreadable file, one LibRaw cannot read, a mode the
sensor cannot have) raises :class:`~kpn.errors.KpnError` with one line naming the file.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
import rawpy
import tifffile

from kpn.errors import KpnError, file_error, one_line, os_problem
from kpn.io.shared import PathLike, check_readable

RAW_EXTENSIONS = frozenset(
    {
        ".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".raf",
        ".orf", ".rw2", ".rwl", ".pef", ".srw", ".3fr", ".fff", ".iiq", ".mos", ".mrw",
        ".x3f", ".erf", ".kdc", ".dcr",
    }
)  # fmt: skip
RawMode = Literal["half", "demosaic", "mosaic"]
RAW_MODES: tuple[RawMode, ...] = ("half", "demosaic", "mosaic")


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
    - ``mosaic``: the normalised Bayer mosaic as docs/design.md §8's three-channel image (each
      sample written to all three channels), with no white balance. The first row and/or
      column is dropped where needed so that design §8's RGGB starts at (0, 0).

    ``half`` and ``mosaic`` need a 2x2 Bayer filter. Raises KpnError naming ``path`` for
    a file that is missing or that LibRaw cannot read as raw, or a mode it cannot have.
    """
    if mode not in RAW_MODES:
        raise KpnError(f"{path}: raw mode {mode!r} (expected one of {list(RAW_MODES)})")
    check_readable(path)
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
        reason = one_line(err)
        raise KpnError(f"{path}: not a camera raw file LibRaw can read ({reason})") from None
    except OSError as err:
        raise file_error(path, os_problem(err, "read")) from None
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
    """``[H,W]`` Bayer mosaic -> design §8's ``[H',W',3]``, cropped so that red is at (0, 0)."""
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
