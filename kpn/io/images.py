"""Images in and out of files, in numpy: float32 ``[H,W,3]`` linear RGB, top row first.

- sRGB (``srgb_to_linear``, ``linear_to_srgb``, ``encode_srgb``): IEC 61966-2-1's curves.
- PNG, JPEG, TIFF (``read_image``, ``write_image``): 8 and 16 bits are sRGB-encoded and
  decoded to linear on read, encoded on write; float TIFF is linear as it stands. PNG
  and JPEG go through imagecodecs, TIFF through tifffile (imageio's Pillow reader cuts
  16-bit colour PNG to 8 bits, and Pillow cannot write it). Embedded colour profiles
  and orientation tags are ignored: pixels come out as stored. ``read_image`` gives RGB
  (grey repeated, alpha dropped); ``read_image_planes`` keeps grey as ``[H,W]`` and the
  alpha plane aside as stored, which ``write_image(..., alpha=)`` writes back.
- ``read_any`` picks the reader by the file's extension: these, PFM (:mod:`kpn.io.pfm`)
  or camera raw (:mod:`kpn.io.raw`).

Every user mistake (missing, unreadable, truncated or corrupt file, a shape or a bit depth
the format cannot hold) raises :class:`~kpn.errors.KpnError` with one line naming the
file. Writes are atomic (:mod:`kpn.io.atomic`).
"""

from __future__ import annotations

from dataclasses import dataclass
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


def as_rgb(image: np.ndarray) -> np.ndarray:
    """A grey ``[H,W]`` image as three equal channels ``[H,W,3]``; ``[H,W,3]`` as it is."""
    return np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image


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
UNASSOCIATED_ALPHA = int(tifffile.EXTRASAMPLE.UNASSALPHA)  # PNG's kind; TIFF says its own


@dataclass(frozen=True)
class ImagePlanes:
    """An image file's colour, decoded, apart from its alpha, kept as stored.

    ``color``: float32 linear ``[H,W,3]``, or ``[H,W]`` for a grey file. ``alpha``: the
    alpha plane's stored samples ``[H,W]`` (uint8, uint16 or float32), untouched; None
    without one. ``alpha_kind``: TIFF's ExtraSamples value (0 unspecified, 1 associated,
    2 unassociated: PNG's). ``bits``: bits per stored sample, 8, 16 or 32 (float).
    """

    color: np.ndarray
    alpha: np.ndarray | None
    alpha_kind: int
    bits: int


def _channels(pixels: np.ndarray, path: PathLike) -> np.ndarray:
    """``[H,W]`` or ``[H,W,1|2|3|4]`` (grey, grey+alpha, RGB, RGBA) -> ``[H,W,S]``."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4):
        raise KpnError(f"{path}: decoded to shape {list(pixels.shape)}, not a grey or RGB image")
    return pixels


def _to_rgb(pixels: np.ndarray) -> np.ndarray:
    """``[H,W,1|2|3|4]`` -> ``[H,W,3]``: grey repeated, alpha dropped."""
    if pixels.shape[2] in (1, 2):
        return np.repeat(pixels[:, :, :1], 3, axis=2)
    return pixels[:, :, :3]


def _decode(codes: np.ndarray, path: PathLike, require_finite: bool) -> np.ndarray:
    """Stored samples -> float32 linear, same shape: 8 and 16 bits by sRGB table, float as
    it is (``require_finite``: NaN and Inf refused)."""
    if codes.dtype.kind == "u" and codes.dtype.itemsize in (1, 2):  # either byte order
        return _decode_table(np.iinfo(codes.dtype).max)[codes]
    if codes.dtype.kind == "f":
        image = np.array(codes, dtype=np.float32, order="C")
        if require_finite:
            check_finite(image, path)
        return image
    raise KpnError(f"{path}: {codes.dtype} samples (expected 8 or 16 bits unsigned, or float)")


def _read_stored(path: PathLike) -> tuple[np.ndarray, int]:
    """A PNG, JPEG or TIFF's samples as stored, ``[H,W,S]`` (S 1 to 4), and its alpha's
    kind (TIFF's ExtraSamples value; PNG's alpha is unassociated)."""
    extension = Path(path).suffix.lower()
    if extension not in IMAGE_EXTENSIONS:
        raise KpnError(f"{path}: not a PNG, JPEG or TIFF name (extension {extension or 'none'!r})")
    if extension in (".tif", ".tiff"):
        pixels, alpha_kind = _read_tiff(path)
        return _channels(pixels, path), alpha_kind
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
    return _channels(pixels, path), UNASSOCIATED_ALPHA


def read_image(path: PathLike, *, require_finite: bool = False) -> np.ndarray:
    """Read a PNG, JPEG or TIFF as float32 linear RGB ``[H,W,3]``, top row first.

    8- and 16-bit samples are sRGB codes, decoded exactly (by table); float TIFF samples
    are taken as linear. Grey becomes three equal channels, alpha is dropped
    (:func:`read_image_planes` keeps both). ``require_finite``: refuse NaN and Inf (only
    float TIFF can hold them).
    """
    return _decode(_to_rgb(_read_stored(path)[0]), path, require_finite)


def read_image_planes(path: PathLike, *, require_finite: bool = False) -> ImagePlanes:
    """Read a PNG, JPEG or TIFF as it is: grey stays ``[H,W]``, alpha is kept aside as
    stored (:class:`ImagePlanes`); colour is decoded as :func:`read_image` decodes it."""
    pixels, alpha_kind = _read_stored(path)
    color_count = 1 if pixels.shape[2] in (1, 2) else 3
    color = _decode(pixels[:, :, :color_count], path, require_finite)
    alpha = pixels[:, :, color_count].copy() if pixels.shape[2] > color_count else None
    bits = 32 if pixels.dtype.kind == "f" else 8 * pixels.dtype.itemsize
    return ImagePlanes(color[:, :, 0] if color_count == 1 else color, alpha, alpha_kind, bits)


_TIFF_PHOTOMETRIC_OK = (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.RGB)


def _read_tiff(path: PathLike) -> tuple[np.ndarray, int]:
    """The first image of a TIFF as stored, ``[H,W]`` or ``[H,W,S]``, and the kind of its
    first extra sample (unassociated alpha when it has none)."""
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
            alpha_kind = int(page.extrasamples[0]) if page.extrasamples else UNASSOCIATED_ALPHA
    except KpnError:
        raise
    except Exception as err:  # tifffile and its codecs raise many types for corrupt files
        raise KpnError(f"{path}: cannot decode as TIFF ({one_line(err)})") from None
    if axes == "SYX":  # planar configuration: one plane per sample
        return np.moveaxis(pixels, 0, -1), alpha_kind
    if axes not in ("YX", "YXS"):
        raise KpnError(f"{path}: TIFF image with axes {axes!r}, expected a single 2D image")
    return pixels, alpha_kind


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


def alpha_samples(alpha: np.ndarray, bits: int) -> np.ndarray:
    """An alpha plane's stored samples as ``bits`` (8, 16 or 32 for float32) stores them:
    the same array when they already are. Alpha is linear coverage, no sRGB curve: integer
    codes rescale by their maxima (8 -> 16 bits exactly, x 257), floats are clipped to
    [0, 1] for codes. ``[H,W] -> [H,W]``
    """
    dtype = np.dtype(np.float32 if bits == 32 else np.uint8 if bits == 8 else np.uint16)
    if alpha.dtype == dtype:
        return alpha
    values = alpha.astype(np.float64)
    if alpha.dtype.kind == "u":
        values /= np.iinfo(alpha.dtype).max
    if dtype.kind == "f":
        return values.astype(np.float32)
    return np.rint(np.clip(values, 0.0, 1.0) * np.iinfo(dtype).max).astype(dtype)


def with_alpha(samples: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """Colour samples ``[H,W]`` or ``[H,W,3]`` and an alpha plane of the same type
    (:func:`alpha_samples`) -> ``[H,W,2|4]``; ``samples`` itself without alpha."""
    if alpha is None:
        return samples
    color = samples[:, :, None] if samples.ndim == 2 else samples
    return np.concatenate([color, alpha[:, :, None]], axis=2)


def write_samples(
    path: PathLike, samples: np.ndarray, *, alpha_kind: int = UNASSOCIATED_ALPHA
) -> None:
    """Write stored samples (sRGB codes or float32) as the PNG, JPEG or TIFF ``path``
    names, atomically: ``[H,W]`` grey, ``[H,W,2]`` grey + alpha, ``[H,W,3]`` RGB,
    ``[H,W,4]`` RGBA; ``alpha_kind``: TIFF's ExtraSamples value for the alpha.

    JPEG holds no alpha: KpnError naming ``path``.
    """
    extension = Path(path).suffix.lower()
    pixels = np.ascontiguousarray(samples)  # codecs need C order
    has_alpha = pixels.ndim == 3 and pixels.shape[2] in (2, 4)
    if extension == ".png":
        atomic_write_bytes(path, imagecodecs.png_encode(pixels))
    elif extension in (".jpg", ".jpeg"):
        if has_alpha:
            raise KpnError(f"{path}: JPEG holds no alpha channel (write PNG or TIFF)")
        atomic_write_bytes(path, imagecodecs.jpeg8_encode(pixels, level=JPEG_QUALITY))
    else:
        color = pixels.shape[2] - has_alpha if pixels.ndim == 3 else 1
        options = {"extrasamples": [alpha_kind]} if has_alpha else {}
        with atomic_output(path) as temp:
            tifffile.imwrite(
                temp, pixels, photometric="rgb" if color == 3 else "minisblack", **options
            )


def write_image(
    path: PathLike,
    image: np.ndarray,
    *,
    bits: int = 8,
    alpha: np.ndarray | None = None,
    alpha_kind: int = UNASSOCIATED_ALPHA,
) -> None:
    """Write linear ``image`` (``[H,W,3]`` or grey ``[H,W]``) as PNG, JPEG or TIFF, atomically.

    The format comes from the extension. ``bits`` 8 or 16: sRGB codes, values clipped to
    [0, 1] (PNG 8/16, JPEG 8 at quality 95, TIFF 8/16). ``bits`` 32: float32 linear, TIFF
    only, values as they are. ``alpha``: an ``[H,W]`` alpha plane written after the
    colour, unchanged in samples of ``bits`` (:func:`alpha_samples`; PNG and TIFF).
    Raises KpnError naming ``path`` for another extension or bit depth, a bad shape, or
    NaN/Inf where integer codes are asked for.
    """
    check_writable(path, bits)
    array = as_image(image, path)
    if bits == 32:
        pixels = np.asarray(array, dtype=np.float32)
    else:
        if not np.isfinite(array).all():
            raise KpnError(f"{path}: image has NaN or Inf, which {bits}-bit codes cannot hold")
        pixels = encode_srgb(array, bits)
    if alpha is not None:
        if alpha.shape != array.shape[:2]:
            raise KpnError(
                f"{path}: alpha plane {list(alpha.shape)} for an image {list(array.shape[:2])}"
            )
        pixels = with_alpha(pixels, alpha_samples(alpha, bits))
    write_samples(path, pixels, alpha_kind=alpha_kind)


def check_writable(path: PathLike, bits: int) -> None:
    """KpnError naming ``path`` unless :func:`write_image` writes its extension in ``bits``."""
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
        return as_rgb(read_pfm(path, require_finite=require_finite))
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
