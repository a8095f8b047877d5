"""kpn.io.images: sRGB, PNG/JPEG/TIFF in and out; the words for missing files."""

from __future__ import annotations

from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import tifffile

from kpn.errors import KpnError
from kpn.io.images import (
    alpha_samples,
    linear_to_srgb,
    read_any,
    read_image,
    read_image_planes,
    srgb_to_linear,
    write_image,
)
from kpn.io.pfm import read_pfm
from kpn.io.raw import read_raw

from conftest import assert_one_line_error


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
            assert_one_line_error(err, starts=f"{path}: ")
    folder = tmp_path / "folder.pfm"
    folder.mkdir()
    with pytest.raises(KpnError, match="is a directory") as err:
        read_any(folder)
    assert_one_line_error(err, starts=f"{folder}: ")


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
    assert_one_line_error(err, starts=f"{path}: ")


def test_read_image_truncated_png(tmp_path: Path) -> None:
    path = tmp_path / "t.png"
    write_image(path, np.random.default_rng(5).random((64, 64, 3)), bits=16)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(KpnError, match="cannot decode as PNG") as err:
        read_image(path)
    assert_one_line_error(err, starts=f"{path}: ")


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
    assert_one_line_error(err, starts=f"{path}: ")


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
    assert_one_line_error(err, starts=f"{path}: ")
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
    assert_one_line_error(err, starts=f"{path}: ")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.tif"]


# --- grey and alpha kept apart (read_image_planes, write_image's alpha) -----------------
@pytest.mark.parametrize("name", ["a.png", "a.tif"])
@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("samples", [1, 2, 3, 4])  # grey, grey+alpha, RGB, RGBA
def test_planes_round_trip(tmp_path: Path, name: str, bits: int, samples: int) -> None:
    """Colour decodes as read_image decodes it, alpha comes back as stored, and writing
    both gives the same file's samples again."""
    dtype = np.uint8 if bits == 8 else np.uint16
    codes = np.random.default_rng(samples).integers(0, np.iinfo(dtype).max + 1, (5, 7, samples))
    codes = codes.astype(dtype)
    stored = codes[:, :, 0] if samples == 1 else codes
    source = tmp_path / f"source{Path(name).suffix}"
    extra = {"extrasamples": ["unassalpha"]} if samples in (2, 4) else {}
    photometric = "rgb" if samples >= 3 else "minisblack"
    write_codes(source, stored, photometric=photometric, **extra)
    planes = read_image_planes(source)
    color = 1 if samples <= 2 else 3
    decoded = srgb_to_linear(codes[:, :, :color] / np.iinfo(dtype).max)
    assert planes.bits == bits and planes.alpha_kind == 2  # unassociated
    assert planes.color.shape == ((5, 7) if color == 1 else (5, 7, 3))
    np.testing.assert_allclose(np.atleast_3d(planes.color), decoded, rtol=0, atol=1e-7)
    if samples in (2, 4):
        assert planes.alpha is not None and planes.alpha.dtype == dtype
        np.testing.assert_array_equal(planes.alpha, codes[:, :, -1])
    else:
        assert planes.alpha is None
    # read_image: the same colour, grey repeated, alpha dropped
    rgb = np.atleast_3d(planes.color)[:, :, [0, 0, 0] if color == 1 else [0, 1, 2]]
    np.testing.assert_array_equal(read_image(source), rgb)
    copy = tmp_path / name
    write_image(copy, planes.color, bits=bits, alpha=planes.alpha)
    np.testing.assert_array_equal(read_codes(copy), stored)


def test_tiff_alpha_kind_and_float_alpha(tmp_path: Path) -> None:
    pixels = np.random.default_rng(2).random((4, 6, 4)).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", pixels, photometric="rgb", extrasamples=["assocalpha"])
    planes = read_image_planes(tmp_path / "f.tif")
    assert (planes.bits, planes.alpha_kind) == (32, 1)
    np.testing.assert_array_equal(planes.alpha, pixels[:, :, 3])
    write_image(tmp_path / "g.tif", planes.color, bits=32, alpha=planes.alpha, alpha_kind=1)
    with tifffile.TiffFile(tmp_path / "g.tif") as tif:
        assert tif.pages.first.extrasamples == (1,)
        np.testing.assert_array_equal(tif.pages.first.asarray(), pixels)


def test_alpha_samples_between_depths() -> None:
    codes8 = np.array([[0, 1, 128, 255]], np.uint8)
    assert alpha_samples(codes8, 8) is codes8  # already so: the same array
    np.testing.assert_array_equal(alpha_samples(codes8, 16), codes8.astype(np.uint16) * 257)
    np.testing.assert_array_equal(alpha_samples(codes8.astype(np.uint16) * 257, 8), codes8)
    floats = np.array([[-0.5, 0.0, 0.5, 1.0, 2.0]], np.float32)
    np.testing.assert_array_equal(alpha_samples(floats, 8), [[0, 0, 128, 255, 255]])
    np.testing.assert_array_equal(alpha_samples(floats, 32), floats)
    np.testing.assert_allclose(alpha_samples(codes8, 32), [[0, 1 / 255, 128 / 255, 1]])


@pytest.mark.parametrize(
    ("name", "alpha", "fragment"),
    [
        ("a.jpg", np.zeros((2, 2), np.uint8), "JPEG holds no alpha channel"),
        ("a.png", np.zeros((3, 2), np.uint8), r"alpha plane \[3, 2\] for an image \[2, 2\]"),
    ],
)
def test_write_image_bad_alpha(tmp_path: Path, name: str, alpha: np.ndarray, fragment: str) -> None:
    path = tmp_path / name
    with pytest.raises(KpnError, match=fragment) as err:
        write_image(path, np.zeros((2, 2, 3)), alpha=alpha)
    assert_one_line_error(err, starts=f"{path}: ")
    assert list(tmp_path.iterdir()) == []
