"""kpn.io.images and kpn.io.atomic: PFM, PNG/JPEG/TIFF with sRGB, camera raw through rawpy, atomic writes."""

from __future__ import annotations

import os
import re
import shutil
import struct
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import tifffile

from kpn.errors import KpnError
from kpn.io import images as kio
from kpn.io.atomic import atomic_output, atomic_write_bytes
from kpn.io.images import (
    RawImage,
    camera_tags,
    linear_to_srgb,
    pfm_bytes,
    read_any,
    read_image,
    read_pfm,
    read_raw,
    srgb_to_linear,
    write_image,
    write_pfm,
)


def assert_one_line_naming(err: pytest.ExceptionInfo[KpnError], path: Path) -> None:
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: "), message


# --- PFM -------------------------------------------------------------------------------
# A 3 x 2 colour image: TOP is the top row, BOTTOM the bottom row (3 RGB pixels each).
TOP = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
BOTTOM = [0.5, -0.25, 2.0, 10.0, 11.0, 12.0, 0.125, 100.0, -3.0]
EXPECTED = np.array(
    [
        [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]],
        [[0.5, -0.25, 2.0], [10.0, 11.0, 12.0], [0.125, 100.0, -3.0]],
    ],
    dtype=np.float32,
)
# The format stores the bottom row first; the scale's sign gives the byte order.
PFM_LITTLE = b"PF\n3 2\n-1.0\n" + struct.pack("<18f", *BOTTOM, *TOP)
PFM_BIG = b"PF\n3 2\n1.0\n" + struct.pack(">18f", *BOTTOM, *TOP)
GREY_LITTLE = b"Pf\n3 2\n-1\n" + struct.pack("<6f", 4.0, 5.0, 6.0, 1.0, 2.0, 3.0)
GREY_BIG = b"Pf 3 2 2.5\n" + struct.pack(">6f", 4.0, 5.0, 6.0, 1.0, 2.0, 3.0)


@pytest.mark.parametrize("data", [PFM_LITTLE, PFM_BIG], ids=["little", "big"])
def test_pfm_hand_written_colour(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "a.pfm"
    path.write_bytes(data)
    image = read_pfm(path)
    assert image.dtype == np.float32 and image.shape == (2, 3, 3)
    assert image.flags.c_contiguous and image.flags.writeable
    np.testing.assert_array_equal(image, EXPECTED)


@pytest.mark.parametrize("data", [GREY_LITTLE, GREY_BIG], ids=["little", "big"])
def test_pfm_hand_written_grey(tmp_path: Path, data: bytes) -> None:
    # GREY_BIG: header fields on one line and a scale of magnitude 2.5, both legal PFM.
    path = tmp_path / "g.pfm"
    path.write_bytes(data)
    np.testing.assert_array_equal(read_pfm(path), [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    np.testing.assert_array_equal(read_any(path), np.repeat(read_pfm(path)[:, :, None], 3, 2))


def test_pfm_vkdt_rows_read(tmp_path: Path) -> None:
    # vkdt stores the top row first: the same bytes read as vkdt's are upside down.
    path = tmp_path / "a.pfm"
    path.write_bytes(PFM_LITTLE)
    np.testing.assert_array_equal(read_pfm(path, vkdt_rows=True), EXPECTED[::-1])


def test_pfm_write_golden_bytes(tmp_path: Path) -> None:
    path = tmp_path / "a.pfm"
    write_pfm(path, EXPECTED)
    assert path.read_bytes() == PFM_LITTLE
    write_pfm(path, EXPECTED[:, :, 0])
    assert path.read_bytes() == b"Pf\n3 2\n-1.0\n" + struct.pack("<6f", 0.5, 10, 0.125, 1, 4, 7)


def test_pfm_write_vkdt_golden_bytes(tmp_path: Path) -> None:
    # vkdt's o-pfm: "PF\n3 2\n-1.0" is 11 bytes, padded with four '0' so the data starts at
    # byte 16, then the top row first.
    path = tmp_path / "v.pfm"
    write_pfm(path, EXPECTED, vkdt_rows=True)
    assert path.read_bytes() == b"PF\n3 2\n-1.00000\n" + struct.pack("<18f", *TOP, *BOTTOM)
    np.testing.assert_array_equal(read_pfm(path, vkdt_rows=True), EXPECTED)


@pytest.mark.parametrize("size", [(1, 1), (7, 5), (1000, 1), (123, 4567)])
def test_pfm_vkdt_header_aligns_data(size: tuple[int, int]) -> None:
    height, width = size
    data = pfm_bytes(np.zeros((height, width, 3), np.float32), vkdt_rows=True)
    header_length = len(data) - height * width * 12
    assert header_length % 16 == 0
    assert data[:header_length].startswith(f"PF\n{width} {height}\n-1.0".encode())


@pytest.mark.parametrize("vkdt_rows", [False, True])
@pytest.mark.parametrize("shape", [(5, 7, 3), (4, 9), (1, 1, 3), (6, 3, 1)])
def test_pfm_round_trip(tmp_path: Path, vkdt_rows: bool, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(1)
    image = (rng.standard_normal(shape) * 10.0 ** rng.integers(-30, 30, shape)).astype(np.float32)
    path = tmp_path / "r.pfm"
    write_pfm(path, image, vkdt_rows=vkdt_rows)
    back = read_pfm(path, vkdt_rows=vkdt_rows)
    np.testing.assert_array_equal(back, image[:, :, 0] if shape[-1] == 1 else image)


def test_pfm_non_finite_kept_or_refused(tmp_path: Path) -> None:
    image = np.ones((3, 4, 3), np.float32)
    image[1, 2, 0], image[2, 0, 1] = np.nan, np.inf
    path = tmp_path / "n.pfm"
    write_pfm(path, image)
    back = read_pfm(path)
    assert np.isnan(back[1, 2, 0]) and np.isposinf(back[2, 0, 1])
    with pytest.raises(
        KpnError, match=r"2 NaN or Inf values \(the first at row 1, column 2\)"
    ) as e:
        read_pfm(path, require_finite=True)
    assert_one_line_naming(e, path)
    with pytest.raises(KpnError, match="NaN or Inf"):
        read_any(path, require_finite=True)


HEADER = b"PF\n3 2\n-1.0\n"
DATA = struct.pack("<18f", *BOTTOM, *TOP)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "not a PFM file"),
        (b"P6\n3 2\n255\n" + bytes(18), "not a PFM file"),
        (b"PF\n3\n", "bad PFM header"),
        (b"PF3 2 -1.0\n" + DATA, "bad PFM header"),
        (b"PF\n3 x\n-1.0\n" + DATA, "size '3' x 'x' is not two integers"),
        (b"PF\n-3 2\n-1.0\n" + DATA, "is not two integers"),
        (b"PF\n0 2\n-1.0\n", "size 0 x 2 is empty"),
        (b"PF\n3 2\n0.0\n" + DATA, "bad PFM scale '0.0': must be negative"),
        (b"PF\n3 2\n-0\n" + DATA, "bad PFM scale '-0'"),
        (b"PF\n3 2\nnan\n" + DATA, "bad PFM scale 'nan'"),
        (b"PF\n3 2\nabc\n" + DATA, "bad PFM scale 'abc': not a number"),
        (HEADER + DATA[:60], "truncated: 60 of 72 data bytes"),
        (HEADER, "truncated: 0 of 72 data bytes"),
        (b"Pf\n3 2\n-1.0\n" + DATA, "48 bytes after the 24 data bytes of a 3 x 2 Pf image"),
        (HEADER + DATA + b"\n", "1 bytes after the 72 data bytes"),
    ],
)
def test_pfm_bad_input(tmp_path: Path, data: bytes, fragment: str) -> None:
    path = tmp_path / "bad.pfm"
    path.write_bytes(data)
    with pytest.raises(KpnError, match=re.escape(fragment)) as err:
        read_pfm(path)
    assert_one_line_naming(err, path)


def test_missing_and_directory(tmp_path: Path) -> None:
    for reader in (read_pfm, read_image, read_any, read_raw):
        for name in ("absent.pfm", "absent.png", "absent.dng"):
            path = tmp_path / name
            if reader is read_image and not name.endswith(".png"):
                continue
            if reader is read_pfm and not name.endswith(".pfm"):
                continue
            with pytest.raises(KpnError, match="no such file") as err:
                reader(path)
            assert_one_line_naming(err, path)
    folder = tmp_path / "folder.pfm"
    folder.mkdir()
    with pytest.raises(KpnError, match="is a directory") as err:
        read_any(folder)
    assert_one_line_naming(err, folder)


@pytest.mark.parametrize(
    ("image", "fragment"),
    [
        (np.zeros((2, 3, 4)), r"shape \[2, 3, 4\]"),
        (np.zeros((0, 3, 3)), r"shape \[0, 3, 3\]"),
        (np.zeros(5), r"shape \[5\]"),
        (np.array([["a"]]), "dtype <U1"),
    ],
)
def test_pfm_write_bad_image(tmp_path: Path, image: np.ndarray, fragment: str) -> None:
    path = tmp_path / "w.pfm"
    with pytest.raises(KpnError, match=fragment) as err:
        write_pfm(path, image)
    assert_one_line_naming(err, path)
    assert list(tmp_path.iterdir()) == []


# --- sRGB ------------------------------------------------------------------------------
def test_srgb_known_values() -> None:
    encoded = np.array([0.0, 0.04045, 0.5, 1.0, -0.02, 1.5])
    # ((0.5 + 0.055) / 1.055) ** 2.4 and ((1.5 + 0.055) / 1.055) ** 2.4, by hand
    expected = [0.0, 0.04045 / 12.92, 0.21404114048223255, 1.0, -0.02 / 12.92, 2.537155239391517]
    np.testing.assert_allclose(srgb_to_linear(encoded), expected, rtol=1e-12, atol=0)
    linear = np.array([0.0, 0.0031308, 0.18, 1.0, -0.01])
    expected = [0.0, 0.0031308 * 12.92, 0.46135612950044164, 1.0, -0.1292]
    np.testing.assert_allclose(linear_to_srgb(linear), expected, rtol=1e-12, atol=0)


def test_srgb_dtypes() -> None:
    assert srgb_to_linear(np.zeros(2, np.float32)).dtype == np.float32
    assert linear_to_srgb(np.zeros(2, np.float16)).dtype == np.float32
    assert srgb_to_linear(np.zeros(2)).dtype == np.float64
    assert linear_to_srgb(0.5).dtype == np.float64


def test_srgb_every_16_bit_code_round_trips() -> None:
    codes = np.arange(65536)
    linear = srgb_to_linear((codes / 65535).astype(np.float32))  # float32, as images are
    back = linear_to_srgb(linear) * 65535
    assert np.abs(back - codes).max() < 0.01  # far within 1/65535 of the encoded range
    np.testing.assert_array_equal(np.rint(back), codes)


# --- PNG, JPEG, TIFF -------------------------------------------------------------------
def all_codes_16() -> np.ndarray:
    """[256, 256, 3] uint16 holding every 16-bit code once per channel, shuffled."""
    rng = np.random.default_rng(3)
    return np.stack([rng.permutation(65536).reshape(256, 256) for _ in range(3)], 2).astype(
        np.uint16
    )


def write_codes(path: Path, codes: np.ndarray, **tiff_options: object) -> None:
    if path.suffix == ".png":
        path.write_bytes(imagecodecs.png_encode(codes))
    elif path.suffix == ".jpg":
        path.write_bytes(imagecodecs.jpeg8_encode(codes, level=100))
    else:
        tifffile.imwrite(path, codes, **tiff_options)  # type: ignore[arg-type]


def read_codes(path: Path) -> np.ndarray:
    if path.suffix == ".png":
        return imagecodecs.png_decode(path.read_bytes())
    return tifffile.imread(path)


@pytest.mark.parametrize("name", ["a.png", "a.tif", "a.TIFF", "big-endian.tif"])
def test_16_bit_file_round_trip(tmp_path: Path, name: str) -> None:
    codes = all_codes_16()
    source, copy = tmp_path / f"source{Path(name).suffix}", tmp_path / name
    write_codes(source, codes, **({"byteorder": ">"} if name.startswith("big") else {}))
    image = read_image(source)
    assert image.dtype == np.float32 and image.shape == (256, 256, 3)
    np.testing.assert_allclose(image, srgb_to_linear(codes / 65535), rtol=0, atol=1e-7)
    write_image(copy, image, bits=16)
    np.testing.assert_array_equal(read_codes(copy), codes)  # every code comes back exactly


def test_16_bit_linear_round_trip_error(tmp_path: Path) -> None:
    # Linear values in, 16-bit sRGB file, linear values out: the error is the half code of
    # rounding, 0.5/65535 in the encoded domain, times the decoding curve's slope in the
    # linear one (at most 2.4/1.055 = 2.275, at white): 1.14/65535.
    linear = np.linspace(0.0, 1.0, 3 * 200_000, dtype=np.float32).reshape(-1, 1000, 3)
    path = tmp_path / "l.png"
    write_image(path, linear, bits=16)
    back = read_image(path)
    encoded_error = np.abs(linear_to_srgb(back) - linear_to_srgb(linear)).max()
    assert encoded_error <= 0.5 / 65535 + 1e-7
    assert np.abs(back - linear).max() <= 1.14 / 65535
    assert np.abs(back - linear).max() > 0.5 / 65535  # the bound above is not slack


@pytest.mark.parametrize("name", ["a.png", "a.tif"])
def test_8_bit_file_round_trip(tmp_path: Path, name: str) -> None:
    codes = np.arange(256 * 3, dtype=np.uint16).reshape(16, 16, 3).astype(np.uint8)
    source, copy = tmp_path / f"source{Path(name).suffix}", tmp_path / name
    write_codes(source, codes)
    image = read_image(source)
    np.testing.assert_allclose(image, srgb_to_linear(codes / 255), rtol=0, atol=1e-7)
    # code 128 (flat index 128) is sRGB 0.50196: ((128/255 + 0.055) / 1.055) ** 2.4 by hand
    np.testing.assert_allclose(image[2, 10, 2], 0.2158605001138992, rtol=1e-6)
    write_image(copy, image, bits=8)
    np.testing.assert_array_equal(read_codes(copy), codes)


def test_jpeg_round_trip(tmp_path: Path) -> None:
    image = np.zeros((16, 24, 3), np.float32)
    image[...] = srgb_to_linear(np.array([0.8, 0.4, 0.2], np.float32))
    path = tmp_path / "a.jpg"
    write_image(path, image)
    back = read_image(path)
    # A flat colour survives JPEG within a code or two (colour conversion rounding).
    np.testing.assert_allclose(linear_to_srgb(back), linear_to_srgb(image), rtol=0, atol=3 / 255)
    assert read_image(tmp_path / "a.jpg").shape == (16, 24, 3)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("layout", ["grey", "grey+alpha", "rgba"])
def test_channels(tmp_path: Path, suffix: str, dtype: type, layout: str) -> None:
    rng = np.random.default_rng(4)
    top = np.iinfo(dtype).max
    grey = rng.integers(0, top + 1, (5, 6), dtype=dtype)
    rgb = rng.integers(0, top + 1, (5, 6, 3), dtype=dtype)
    alpha = np.full((5, 6, 1), top // 3, dtype=dtype)
    stored, expected = {
        "grey": (grey, np.repeat(grey[:, :, None], 3, 2)),
        "grey+alpha": (
            np.concatenate([grey[:, :, None], alpha], 2),
            np.repeat(grey[:, :, None], 3, 2),
        ),
        "rgba": (np.concatenate([rgb, alpha], 2), rgb),
    }[layout]
    path = tmp_path / f"c{suffix}"
    extra = {"photometric": "minisblack"} if layout != "rgba" else {"photometric": "rgb"}
    if layout == "grey+alpha":
        extra["extrasamples"] = [2]  # type: ignore[assignment]
    write_codes(path, stored, **extra)
    np.testing.assert_allclose(read_image(path), srgb_to_linear(expected / top), atol=1e-7)


def test_tiff_planar(tmp_path: Path) -> None:
    codes = np.arange(2 * 3 * 3, dtype=np.uint16).reshape(2, 3, 3) * 1000
    path = tmp_path / "p.tif"
    tifffile.imwrite(path, np.moveaxis(codes, -1, 0), photometric="rgb", planarconfig="separate")
    np.testing.assert_allclose(read_image(path), srgb_to_linear(codes / 65535), atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_tiff_is_linear(tmp_path: Path, dtype: type) -> None:
    image = np.array([[[0.25, -0.5, 2.0], [1.0, 0.0, 0.125]]], dtype=dtype)
    path = tmp_path / "f.tif"
    tifffile.imwrite(path, image, photometric="rgb")
    back = read_image(path)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, image.astype(np.float32))
    tifffile.imwrite(path, image, photometric="rgb", byteorder=">")
    np.testing.assert_array_equal(read_image(path), back)
    write_image(tmp_path / "g.tif", back, bits=32)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "g.tif"), back)


def test_float_tiff_non_finite(tmp_path: Path) -> None:
    image = np.zeros((3, 4, 3), np.float32)
    image[2, 3, 1] = np.nan
    path = tmp_path / "f.tif"
    tifffile.imwrite(path, image, photometric="rgb")
    assert np.isnan(read_image(path)[2, 3, 1])
    with pytest.raises(KpnError, match=r"1 NaN or Inf values \(the first at row 2, column 3\)"):
        read_image(path, require_finite=True)


def test_write_clips_and_grey(tmp_path: Path) -> None:
    image = np.array([[[-0.5, 0.5, 7.0]]], np.float32)
    path = tmp_path / "c.png"
    write_image(path, image, bits=16)
    # 0.5 encodes to 0.735357, code 48191.6 -> 48192
    np.testing.assert_array_equal(read_codes(path), [[[0, 48192, 65535]]])
    write_image(tmp_path / "g.png", np.full((2, 2), 0.5, np.float32))
    assert read_codes(tmp_path / "g.png").shape == (2, 2)


def cmyk_jpeg() -> bytes:
    return imagecodecs.jpeg8_encode(
        np.full((8, 8, 4), 100, np.uint8), colorspace="CMYK", outcolorspace="CMYK"
    )


@pytest.mark.parametrize(
    ("name", "data", "fragment"),
    [
        ("bad.png", b"\x89PNG\r\n\x1a\n" + bytes(30), "cannot decode as PNG"),
        ("bad.jpg", b"\xff\xd8\xff" + bytes(30), "cannot decode as JPEG"),
        ("bad.tif", b"II*\x00" + bytes(4), "cannot decode as TIFF"),
        ("text.tiff", b"hello", "cannot decode as TIFF"),
        ("cmyk.jpg", None, "a CMYK JPEG"),
    ],
)
def test_read_image_corrupt(tmp_path: Path, name: str, data: bytes | None, fragment: str) -> None:
    path = tmp_path / name
    path.write_bytes(cmyk_jpeg() if data is None else data)
    with pytest.raises(KpnError, match=fragment) as err:
        read_image(path)
    assert_one_line_naming(err, path)


def test_read_image_truncated_png(tmp_path: Path) -> None:
    path = tmp_path / "t.png"
    write_image(path, np.random.default_rng(5).random((64, 64, 3)), bits=16)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(KpnError, match="cannot decode as PNG") as err:
        read_image(path)
    assert_one_line_naming(err, path)


@pytest.mark.parametrize(
    ("pixels", "options", "fragment"),
    [
        (np.zeros((4, 4), np.uint32), {}, "uint32 samples"),
        (np.zeros((4, 4), np.int16), {}, "int16 samples"),
        (np.zeros((4, 16, 16), np.uint8),
         {"photometric": "minisblack", "volumetric": True, "tile": (4, 16, 16)}, "axes 'ZYX'"),
        (np.zeros((4, 4), np.uint8), {"photometric": "palette", "colormap": np.zeros((3, 256))},
         "photometric PALETTE"),
        (np.zeros((4, 4), np.uint16), {"photometric": 32803}, "colour filter array"),
    ],
)  # fmt: skip
def test_read_tiff_unsupported(
    tmp_path: Path, pixels: np.ndarray, options: dict[str, object], fragment: str
) -> None:
    path = tmp_path / "u.tif"
    tifffile.imwrite(path, pixels, **options)  # type: ignore[arg-type]
    with pytest.raises(KpnError, match=fragment) as err:
        read_image(path)
    assert_one_line_naming(err, path)


@pytest.mark.parametrize(
    ("name", "bits", "image", "fragment"),
    [
        ("a.bmp", 8, np.zeros((2, 2, 3)), "cannot write images with extension '.bmp'"),
        ("a", 8, np.zeros((2, 2, 3)), "extension 'none'"),
        ("a.pfm", 32, np.zeros((2, 2, 3)), "PFM has write_pfm"),
        ("a.jpg", 16, np.zeros((2, 2, 3)), r"16 bits per sample, .jpg holds \[8\]"),
        ("a.png", 32, np.zeros((2, 2, 3)), r"32 bits per sample, .png holds \[8, 16\]"),
        ("a.tif", 12, np.zeros((2, 2, 3)), "12 bits per sample"),
        ("a.png", 8, np.full((2, 2, 3), np.nan), "NaN or Inf, which 8-bit codes cannot hold"),
        ("a.tif", 16, np.full((2, 2, 3), np.inf), "NaN or Inf"),
        ("a.png", 8, np.zeros((2, 2, 2)), r"shape \[2, 2, 2\]"),
    ],
)
def test_write_image_bad(
    tmp_path: Path, name: str, bits: int, image: np.ndarray, fragment: str
) -> None:
    path = tmp_path / name
    with pytest.raises(KpnError, match=fragment) as err:
        write_image(path, image, bits=bits)
    assert_one_line_naming(err, path)
    assert list(tmp_path.iterdir()) == []


def test_write_image_failure_keeps_existing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keep.tif"
    write_image(path, np.full((4, 4, 3), 0.5), bits=16)
    before = path.read_bytes()

    def half_write(target: Path, *args: object, **kwargs: object) -> None:
        Path(target).write_bytes(b"II*\x00 half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tifffile, "imwrite", half_write)
    with pytest.raises(KpnError, match=r"cannot write \(No space left on device\)") as err:
        write_image(path, np.zeros((4, 4, 3)), bits=16)
    assert_one_line_naming(err, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.tif"]


# --- atomic output ---------------------------------------------------------------------
def test_atomic_output_success_and_names(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    with atomic_output(path) as temp:
        assert temp.parent == tmp_path and temp.name.startswith(".x.png.")
        assert temp.suffix == ".png" and temp.exists() and not path.exists()
        temp.write_bytes(b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_atomic_output_body_failure(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    atomic_write_bytes(path, b"old")
    with pytest.raises(ZeroDivisionError), atomic_output(path) as temp:
        temp.write_bytes(b"half")
        _ = 1 / 0
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_atomic_output_os_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    path = tmp_path / "x.bin"
    atomic_write_bytes(path, b"old")

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, failing, fail)
    with pytest.raises(KpnError, match=r"cannot write \(Input/output error\)") as err:
        atomic_write_bytes(path, b"new")
    monkeypatch.undo()
    assert_one_line_naming(err, path)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_atomic_output_unwritable_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    for path in (tmp_path / "nope" / "a.bin", tmp_path / "file" / "a.bin"):
        with pytest.raises(KpnError, match="cannot write") as err:
            atomic_write_bytes(path, b"data")
        assert_one_line_naming(err, path)
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


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
    # SPEC 8's RGGB at (0, 0): (x+y) odd green, else y odd blue, else red
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
    assert_one_line_naming(err, path)


def test_read_raw_bad_mode(dng: Path) -> None:
    with pytest.raises(KpnError, match=r"raw mode 'quarter' \(expected one of") as err:
        read_raw(dng, "quarter")  # type: ignore[arg-type]
    assert_one_line_naming(err, dng)


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
        kio.RAW_EXTENSIONS
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
        assert_one_line_naming(err, path)


@pytest.mark.parametrize("vkdt_rows", [False, True])
@pytest.mark.parametrize("shape", [(7, 5, 3), (7, 5)])
def test_pfm_in_chunks_of_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vkdt_rows: bool, shape: tuple[int, ...]
) -> None:
    """Rows go through memory a few at a time (chunks of 2 and 3 rows here, the last one
    short), and the file is byte for byte the one pfm_bytes lays out."""
    image = np.random.default_rng(3).normal(size=shape).astype(np.float32)
    row_bytes = image[0].nbytes
    for rows in (2, 3):
        monkeypatch.setattr(kio, "PFM_CHUNK_BYTES", rows * row_bytes)
        path = tmp_path / f"chunked-{rows}.pfm"
        write_pfm(path, image, vkdt_rows=vkdt_rows)
        assert path.read_bytes() == pfm_bytes(image, vkdt_rows=vkdt_rows)
        np.testing.assert_array_equal(read_pfm(path, vkdt_rows=vkdt_rows), image)
    big_endian = tmp_path / "big-endian.pfm"
    magic = b"PF" if image.ndim == 3 else b"Pf"
    data = np.ascontiguousarray(image[::-1], dtype=">f4").tobytes()
    big_endian.write_bytes(magic + b"\n5 7\n1.0\n" + data)
    np.testing.assert_array_equal(read_pfm(big_endian), image)
