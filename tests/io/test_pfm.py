"""kpn.io.pfm: PFM files, both row orders and byte orders, and bad headers and data."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import pytest

from kpn.errors import KpnError
from kpn.io import pfm as kpfm
from kpn.io.images import read_any
from kpn.io.pfm import read_pfm, write_pfm

from conftest import assert_one_line_error

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


def pfm_layout(image: np.ndarray, vkdt_rows: bool) -> bytes:
    """The plain layout of a little-endian PFM file, the whole image at once: the header
    (vkdt's padded so the data starts at a multiple of 16 bytes), then the rows, top first
    for vkdt and bottom first for the format."""
    magic = b"PF" if image.ndim == 3 else b"Pf"
    header = magic + f"\n{image.shape[1]} {image.shape[0]}\n-1.0".encode()
    header += b"0" * (-(len(header) + 1) % 16) * vkdt_rows + b"\n"
    rows = image if vkdt_rows else image[::-1]
    return header + np.ascontiguousarray(rows, dtype="<f4").tobytes()


@pytest.mark.parametrize("size", [(1, 1), (7, 5), (1000, 1), (123, 4567)])
def test_pfm_vkdt_header_aligns_data(tmp_path: Path, size: tuple[int, int]) -> None:
    height, width = size
    path = tmp_path / "v.pfm"
    write_pfm(path, np.zeros((height, width, 3), np.float32), vkdt_rows=True)
    data = path.read_bytes()
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
    assert_one_line_error(e, starts=f"{path}: ")
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
    assert_one_line_error(err, starts=f"{path}: ")


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
    assert_one_line_error(err, starts=f"{path}: ")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("vkdt_rows", [False, True])
@pytest.mark.parametrize("shape", [(7, 5, 3), (7, 5)])
def test_pfm_in_chunks_of_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vkdt_rows: bool, shape: tuple[int, ...]
) -> None:
    """Rows go through memory a few at a time (chunks of 2 and 3 rows here, the last one
    short), and the file is byte for byte the whole image's plain layout."""
    image = np.random.default_rng(3).normal(size=shape).astype(np.float32)
    row_bytes = image[0].nbytes
    for rows in (2, 3):
        monkeypatch.setattr(kpfm, "PFM_CHUNK_BYTES", rows * row_bytes)
        path = tmp_path / f"chunked-{rows}.pfm"
        write_pfm(path, image, vkdt_rows=vkdt_rows)
        assert path.read_bytes() == pfm_layout(image, vkdt_rows)
        np.testing.assert_array_equal(read_pfm(path, vkdt_rows=vkdt_rows), image)
    big_endian = tmp_path / "big-endian.pfm"
    magic = b"PF" if image.ndim == 3 else b"Pf"
    data = np.ascontiguousarray(image[::-1], dtype=">f4").tobytes()
    big_endian.write_bytes(magic + b"\n5 7\n1.0\n" + data)
    np.testing.assert_array_equal(read_pfm(big_endian), image)
