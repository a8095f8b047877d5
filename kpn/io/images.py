"""Images in and out of files, in numpy: float32 ``[H,W,3]`` linear RGB, top row first.

- sRGB (``srgb_to_linear``, ``linear_to_srgb``, ``encode_srgb``): IEC 61966-2-1's curves.
- PNG, JPEG, TIFF (``read_image``, ``write_image``): 8 and 16 bits are sRGB-encoded and
  decoded to linear on read, encoded on write; float TIFF is linear as it stands. PNG
  and JPEG go through imagecodecs, TIFF through tifffile (imageio's Pillow reader cuts
  16-bit colour PNG to 8 bits, and Pillow cannot write it). Embedded colour profiles
  and orientation tags are ignored: pixels come out as stored.
- ``read_any`` picks the reader by the file's extension: these, PFM (:mod:`kpn.io.pfm`)
  or camera raw (:mod:`kpn.io.raw`).

Every user mistake (missing, unreadable, truncated or corrupt file, a shape or a bit depth
the format cannot hold) raises :class:`~kpn.errors.KpnError` with one line naming the
file. Writes are atomic (:mod:`kpn.io.atomic`).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile

from kpn.errors import KpnError, one_line, reading
from kpn.io.atomic import atomic_output, atomic_write_bytes
from kpn.io.pfm import PFM_EXTENSIONS, read_pfm
from kpn.io.raw import RAW_EXTENSIONS, RawMode, read_raw
from kpn.io.shared import PathLike, as_image, check_finite, check_readable

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff"})
READABLE_EXTENSIONS = PFM_EXTENSIONS | IMAGE_EXTENSIONS | RAW_EXTENSIONS  # read_any's


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


# --- PNG, JPEG, TIFF -------------------------------------------------------------------
def _to_rgb(pixels: np.ndarray, path: PathLike) -> np.ndarray:
    """``[H,W]``, ``[H,W,1|2|3|4]`` (grey, grey+alpha, RGB, RGBA) -> ``[H,W,3]``, alpha dropped."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4):
        raise KpnError(f"{path}: decoded to shape {list(pixels.shape)}, not a grey or RGB image")
    if pixels.shape[2] in (1, 2):
        return np.repeat(pixels[:, :, :1], 3, axis=2)
    return pixels[:, :, :3]


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
        with reading(path):
            data = Path(path).read_bytes()
        kind, decode = (
            ("PNG", imagecodecs.png_decode)
            if extension == ".png"
            else ("JPEG", imagecodecs.jpeg8_decode)
        )
        try:
            pixels = decode(data)
        except Exception as err:  # PngError, Jpeg8Error, and others for some corrupt data
            raise KpnError(f"{path}: cannot decode as {kind} ({one_line(err)})") from None
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
    check_readable(path)
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
        raise KpnError(f"{path}: cannot decode as TIFF ({one_line(err)})") from None
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
    array = as_image(image, path)
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
