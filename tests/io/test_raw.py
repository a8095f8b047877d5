"""kpn.io.raw: camera raw files through rawpy in three modes, camera tags; read_any on raw."""

from __future__ import annotations

import re
import shutil
import struct
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import tifffile

from kpn.errors import KpnError
from kpn.io import raw as kraw
from kpn.io.images import read_any, write_image
from kpn.io.raw import RawImage, camera_tags, read_raw

from conftest import assert_one_line_error

# --- camera raw ------------------------------------------------------------------------
# A 24 x 32 DNG (LibRaw refuses sensors under 22 pixels a side). Black 1024 and white 5120
# make every normalised value k/4096, exact in float32. Pixels by their place in the 2x2
# tile at (0, 0): 0.5 / 0.25 / 0.125 / 1.0; the block at rows 2-3, columns 4-5 differs,
# and one pixel lies below black.
BLACK, WHITE = 1024, 5120
CFA_CODES = {"R": 0, "G": 1, "B": 2}


def dng_values() -> np.ndarray:
    values = np.tile(np.array([[2048, 1024], [512, 4096]]), (12, 16)) + BLACK
    values[2:4, 4:6] = np.array([[100, 300], [500, 50]]) + BLACK
    values[5, 7] = 1000  # 24 below black
    return values.astype(np.uint16)


def write_dng(path: Path, cfa: str = "RGGB", values: np.ndarray | None = None) -> Path:
    pixels = dng_values() if values is None else values
    tags = [
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (50707, "B", 4, (1, 1, 0, 0), True),  # DNGBackwardVersion
        (50708, "s", 0, "Kpn Test Camera", True),  # UniqueCameraModel
        (271, "s", 0, "KpnMaker", True),  # Make
        (272, "s", 0, "KpnModel X-1", True),  # Model
        (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
        (33422, "B", 4, tuple(CFA_CODES[c] for c in cfa), True),  # CFAPattern
        (50710, "B", 3, (0, 1, 2), True),  # CFAPlaneColor
        (50711, "H", 1, 1, True),  # CFALayout: rectangular
        (50713, "H", 2, (1, 1), True),  # BlackLevelRepeatDim
        (50714, "H", 1, BLACK, True),  # BlackLevel
        (50717, "H", 1, WHITE, True),  # WhiteLevel
        (50721, "2i", 9, (1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1), True),
        (50778, "H", 1, 21, True),  # CalibrationIlluminant1: D65
        (50728, "2I", 3, (1, 1, 1, 1, 1, 1), True),  # AsShotNeutral: white balance 1
        (34855, "H", 1, 800, True),  # ISOSpeedRatings
    ]
    tifffile.imwrite(path, pixels, photometric=32803, extratags=tags, subfiletype=0)
    return path


@pytest.fixture(scope="module")
def dng(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dng(tmp_path_factory.mktemp("raw") / "camera.dng")


def test_raw_metadata(dng: Path) -> None:
    raw = read_raw(dng, "half")
    assert isinstance(raw, RawImage)
    assert (raw.maker, raw.model, raw.iso) == ("KpnMaker", "KpnModel X-1", 800)
    assert raw.cfa == "RGGB"
    assert raw.black == (1024.0,) * 4 and raw.white == (5120.0,) * 4


def test_raw_half(dng: Path) -> None:
    image = read_raw(dng, "half").image
    assert image.dtype == np.float32 and image.shape == (12, 16, 3)
    # R = 2048/4096, G = (1024 + 512)/2/4096, B = 4096/4096
    np.testing.assert_array_equal(image[0, 0], [0.5, 0.1875, 1.0])
    # block (1, 2): R 100, G (300 + 500)/2, B 50, over 4096
    np.testing.assert_array_equal(image[1, 2], [0.0244140625, 0.09765625, 0.01220703125])
    # block (2, 3) holds the pixel 24 below black at (5, 7), its B: not clipped
    np.testing.assert_array_equal(image[2, 3], [0.5, 0.1875, -0.005859375])


def test_raw_mosaic(dng: Path) -> None:
    image = read_raw(dng, "mosaic").image
    assert image.dtype == np.float32 and image.shape == (24, 32, 3)
    np.testing.assert_array_equal(image[..., 0], image[..., 1])
    np.testing.assert_array_equal(image[..., 0], image[..., 2])
    np.testing.assert_array_equal(image[:2, :2, 0], [[0.5, 0.25], [0.125, 1.0]])
    np.testing.assert_array_equal(
        image[2:4, 4:6, 0], [[100 / 4096, 300 / 4096], [500 / 4096, 50 / 4096]]
    )
    assert image[5, 7, 0] == -24 / 4096
    np.testing.assert_array_equal(image[..., 0], (dng_values().astype(np.float32) - BLACK) / 4096)


def test_raw_demosaic_agrees_with_mosaic(dng: Path) -> None:
    image = read_raw(dng, "demosaic").image
    mosaic = read_raw(dng, "mosaic").image[..., 0]
    assert image.dtype == np.float32 and image.shape == (24, 32, 3)
    assert image.min() >= 0 and image.max() <= 1
    # Each pixel's own colour keeps its measured value; LibRaw truncates to 16 bits.
    native = np.tile(np.array([[0, 1], [1, 2]]), (12, 16))
    measured = np.take_along_axis(image, native[:, :, None], 2)[..., 0]
    inside = mosaic >= 0
    assert np.abs(measured - mosaic)[inside].max() <= 1 / 65535 + 1e-7
    assert measured[5, 7] == 0  # below black: clipped by LibRaw


@pytest.mark.parametrize(
    ("cfa", "red_at"), [("RGGB", (0, 0)), ("BGGR", (1, 1)), ("GRBG", (0, 1)), ("GBRG", (1, 0))]
)
def test_raw_cfa_patterns(tmp_path: Path, cfa: str, red_at: tuple[int, int]) -> None:
    values = np.tile(np.arange(4, dtype=np.uint16).reshape(2, 2) * 1000 + 1024 + 96, (12, 16))
    path = write_dng(tmp_path / f"{cfa}.dng", cfa, values)
    normalised = (values.astype(np.float64) - BLACK) / 4096
    half = read_raw(path, "half")
    assert half.cfa == cfa
    letter_at = {letter: divmod(i, 2) for i, letter in reversed(list(enumerate(cfa)))}
    greens = [divmod(i, 2) for i, letter in enumerate(cfa) if letter == "G"]
    expected = [
        normalised[letter_at["R"]],
        (normalised[greens[0]] + normalised[greens[1]]) / 2,
        normalised[letter_at["B"]],
    ]
    np.testing.assert_allclose(half.image[3, 5], expected, rtol=1e-7)
    mosaic = read_raw(path, "mosaic").image
    dy, dx = red_at
    assert mosaic.shape == (24 - dy, 32 - dx, 3)
    # docs/design.md §8's RGGB at (0, 0): (x+y) odd green, else y odd blue, else red
    np.testing.assert_allclose(mosaic[0, 0, 0], normalised[red_at], rtol=1e-7)
    np.testing.assert_allclose(mosaic[1, 1, 0], normalised[letter_at["B"]], rtol=1e-7)
    np.testing.assert_allclose(mosaic[0, 1, 0], normalised[dy, 1 - dx], rtol=1e-7)


def test_read_any_dispatch(dng: Path, tmp_path: Path) -> None:
    np.testing.assert_array_equal(read_any(dng, raw_mode="half"), read_raw(dng, "half").image)
    np.testing.assert_array_equal(read_any(dng), read_raw(dng, "demosaic").image)
    upper = tmp_path / "CAMERA.DNG"
    shutil.copy(dng, upper)
    assert read_any(upper, raw_mode="mosaic").shape == (24, 32, 3)
    png = tmp_path / "I.PNG"
    write_image(png, np.full((2, 3, 3), 0.25), bits=16)
    assert read_any(png).shape == (2, 3, 3)


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("photo.dng", "png", "not a camera raw file LibRaw can read (Unsupported file format"),
        ("photo.nef", "text", "not a camera raw file"),
        ("rgb.dng", "tiff", "not a camera raw file"),
        ("image.bmp", "text", "unknown image type '.bmp'"),
        ("noext", "text", "unknown image type '(no extension)'"),
    ],
)
def test_read_any_bad(tmp_path: Path, name: str, content: str, fragment: str) -> None:
    path = tmp_path / name
    if content == "png":
        path.write_bytes(imagecodecs.png_encode(np.zeros((32, 32, 3), np.uint8)))
    elif content == "tiff":
        tifffile.imwrite(path, np.zeros((32, 32, 3), np.uint16), photometric="rgb")
    else:
        path.write_text("not an image at all\n" * 10)
    with pytest.raises(KpnError, match=re.escape(fragment)) as err:
        read_any(path)
    assert_one_line_error(err, starts=f"{path}: ")


def test_read_raw_bad_mode(dng: Path) -> None:
    with pytest.raises(KpnError, match=r"raw mode 'quarter' \(expected one of") as err:
        read_raw(dng, "quarter")  # type: ignore[arg-type]
    assert_one_line_error(err, starts=f"{dng}: ")


def test_camera_tags_from_embedded_tiff(tmp_path: Path) -> None:
    # An RW2-like file: junk, then a TIFF structure with Panasonic's magic "IIU\0".
    buffer = tmp_path / "inner.tif"
    tifffile.imwrite(
        buffer,
        np.zeros((2, 2), np.uint8),
        extratags=[(271, "s", 0, "Panasonic", True), (272, "s", 0, "DC-S5M2", True),
                   (34855, "H", 1, 6400, True)],
    )  # fmt: skip
    inner = bytearray(buffer.read_bytes())
    inner[2:4] = b"U\x00"
    path = tmp_path / "p.rw2"
    path.write_bytes(b"\x00junk II*" + bytes(100) + bytes(inner))
    assert camera_tags(path) == ("Panasonic", "DC-S5M2", 6400)
    assert camera_tags(tmp_path / "absent.rw2") == (None, None, None)


def exif_tiff(make: str, model: str, iso: int) -> bytes:
    """A hand-made little-endian TIFF: IFD0 (Make, Model, ExifIFD) and an EXIF IFD (ISO)."""
    strings = make.encode() + b"\x00" + model.encode() + b"\x00"
    ifd0_at, entries = 8, 3
    exif_at = ifd0_at + 2 + entries * 12 + 4
    strings_at = exif_at + 2 + 12 + 4
    ifd0 = struct.pack("<H", entries)
    ifd0 += struct.pack("<HHII", 271, 2, len(make) + 1, strings_at)
    ifd0 += struct.pack("<HHII", 272, 2, len(model) + 1, strings_at + len(make) + 1)
    ifd0 += struct.pack("<HHII", 34665, 4, 1, exif_at) + struct.pack("<I", 0)
    exif = struct.pack("<H", 1) + struct.pack("<HHIHH", 34855, 3, 1, iso, 0) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", ifd0_at) + ifd0 + exif + strings


def test_camera_tags_exif_ifd(tmp_path: Path) -> None:
    path = tmp_path / "c.cr3"
    path.write_bytes(b"....ftypcrx " + bytes(50) + exif_tiff("Canon", "Canon EOS R5", 12800))
    assert camera_tags(path) == ("Canon", "Canon EOS R5", 12800)


def test_module_exposes_extensions() -> None:
    assert {".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf", ".rw2", ".pef", ".srw"} <= (
        kraw.RAW_EXTENSIONS
    )


def test_raw_without_mosaic(tmp_path: Path) -> None:
    # A linear DNG (PhotometricInterpretation 34892): three samples per pixel, no CFA.
    tags = [
        (50706, "B", 4, (1, 4, 0, 0), True),
        (50707, "B", 4, (1, 1, 0, 0), True),
        (50708, "s", 0, "Kpn Linear", True),
        (50714, "H", 1, BLACK, True),
        (50717, "H", 1, WHITE, True),
        (50721, "2i", 9, (1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1), True),
        (50778, "H", 1, 21, True),
        (50728, "2I", 3, (1, 1, 1, 1, 1, 1), True),
    ]
    path = tmp_path / "linear.dng"
    pixels = np.full((24, 32, 3), BLACK + 2048, np.uint16)
    tifffile.imwrite(path, pixels, photometric=34892, extratags=tags, subfiletype=0)
    raw = read_raw(path)
    assert (raw.cfa, raw.black, raw.white) == ("", (1024.0,), (5120.0,))
    assert (raw.maker, raw.model, raw.iso) == (None, None, None)
    # 2048 of 4096 above black, truncated to 16 bits by LibRaw: 32767 / 65535
    np.testing.assert_allclose(raw.image, 0.5, rtol=0, atol=1 / 65535)
    for mode in ("half", "mosaic"):
        with pytest.raises(KpnError, match=f"no colour filter mosaic: raw mode '{mode}'") as err:
            read_raw(path, mode)  # type: ignore[arg-type]
        assert_one_line_error(err, starts=f"{path}: ")
