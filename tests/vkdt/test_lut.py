"""Tests for kpn.vkdt.lut: vkdt's .lut weights file (docs/design.md §9).

The header and the float block, read and written; where each matrix lies in the block is
test_lut_layout.py's, the text after it (kpn-t's trailer, kpn's section) test_lut_text.py's.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from kpn.errors import KpnError
from kpn.vkdt.lut import (
    DATATYPE_F16,
    DATATYPE_F32,
    LUT_MAGIC,
    LUT_VERSION,
    lut_bytes,
    read_lut,
    write_lut,
)

from conftest import assert_one_line_error
from vkdt_shared import (
    SHIPPED,
    VKDT_SHIPPED_TRAILER,
    floats_of,
    make_matrices,
    small_lut_bytes,
    trailer_text,
    with_header,
)


@pytest.fixture
def shipped_file(tmp_path: Path) -> Path:
    """A file laid out as kpn-t writes it for its shipped config, trailer included."""
    path = tmp_path / "shipped.lut"
    write_lut(path, make_matrices(64, 6, 64, seed=0), in_width=64, trailer=VKDT_SHIPPED_TRAILER)
    return path


@pytest.fixture
def small_bytes() -> bytes:
    """vkdt_shared.small_lut_bytes: a valid W=32, n_hidden=1 file without trailer."""
    return small_lut_bytes()


# --- golden bytes ----------------------------------------------------------------------
def test_golden_bytes_w16(tmp_path: Path) -> None:
    w0 = np.arange(256, dtype=np.float32).reshape(16, 16) * 0.25  # 0, .25, .5, ... 63.75
    w_out = 1.0 - np.arange(256, dtype=np.float32).reshape(16, 16) / 256  # 1, 255/256, ...
    path = tmp_path / "golden.lut"
    write_lut(path, [w0, w_out], in_width=16)
    raw = path.read_bytes()
    # magic 1234 (0x04d2), version 2 (u16), channels 1, datatype 16 = ssbo f16, wd 16, ht 32
    assert raw[:16] == bytes.fromhex("d2040000 0200 01 10 10000000 20000000")
    # 16 x 32 block: W0 fills the first 16 x 16, W_out the second; no tail, no trailer
    assert len(raw) == 16 + 512 * 2
    # f16 0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75
    assert raw[16:32] == bytes.fromhex("0000 0034 0038 003a 003c 003d 003e 003f")
    # W0[15, 15] = 63.75 ends the first block
    assert raw[16 + 255 * 2 : 16 + 256 * 2] == bytes.fromhex("f853")
    # W_out at float 16 * in_width = 256: f16 1.0, 255/256, 254/256; last 1/256
    assert raw[528:534] == bytes.fromhex("003c f83b f03b")
    assert raw[-2:] == bytes.fromhex("001c")


def test_golden_bytes_f32_header_and_values(tmp_path: Path) -> None:
    path = tmp_path / "golden32.lut"
    write_lut(path, [np.ones((16, 16)), np.full((16, 16), -2.0)], in_width=16, dtype="f32")
    raw = path.read_bytes()
    assert raw[:16] == bytes.fromhex("d2040000 0200 01 11 10000000 20000000")
    assert len(raw) == 16 + 512 * 4
    assert raw[16:20] == bytes.fromhex("0000803f")  # f32 1.0
    assert raw[16 + 256 * 4 : 16 + 257 * 4] == bytes.fromhex("000000c0")  # f32 -2.0


def test_zero_tail_w32(tmp_path: Path) -> None:
    path = tmp_path / "tail.lut"
    write_lut(path, [np.ones((32, 32)), np.full((16, 32), 2.0)], in_width=32)
    header, data = floats_of(path)
    assert header == (1234, 2, 1, 16, 32, 64)
    # W0: floats 0..1023; W_out: 1024..1535; the rest of the 2048 is the zero tail
    np.testing.assert_array_equal(data[:1024], 1.0)
    np.testing.assert_array_equal(data[1024:1536], 2.0)
    np.testing.assert_array_equal(data[1536:], 0.0)


# --- reading ---------------------------------------------------------------------------
def test_read_fields_and_readonly_block(shipped_file: Path) -> None:
    lut = read_lut(shipped_file)
    assert (lut.width, lut.n_hidden, lut.dtype) == (64, 6, "f16")
    assert lut.data.shape == (7 * 64, 64)
    assert lut.data.dtype == np.float32
    assert not lut.data.flags.writeable
    assert lut.trailer == SHIPPED


def test_format_shipped_is_vkdt_text(shipped_file: Path) -> None:
    text = trailer_text(6, 64, "plain", "const", "leaky_relu", "smape")
    assert text == VKDT_SHIPPED_TRAILER
    assert shipped_file.read_bytes().endswith(b"\nSMAPE loss\n")
    assert shipped_file.read_bytes()[16 + 64 * 448 * 2 :] == (text + "\n").encode()


def test_files_without_section_have_no_model(shipped_file: Path) -> None:
    lut = read_lut(shipped_file)
    assert (lut.model, lut.infer) == (None, None)


def test_read_ignores_tail_values(tmp_path: Path) -> None:
    # vkdt-trained files hold random initial values past W_out: they must not matter
    mats = make_matrices(32, 1, 32, seed=3)
    raw = bytearray(lut_bytes(mats, in_width=32, trailer=None))
    tail_start = 16 + (1024 + 512) * 2
    raw[tail_start:] = np.full(512, 7.5, dtype="<f2").tobytes()
    path = tmp_path / "vkdt.lut"
    path.write_bytes(bytes(raw))
    for got, want in zip(read_lut(path).matrices(32, 32), mats, strict=True):
        np.testing.assert_array_equal(got, want)


def test_f16_rounding_matches_torch_half(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    mats = [rng.normal(size=s).astype(np.float32) for s in [(32, 32), (32, 32), (16, 32)]]
    path = tmp_path / "w.lut"
    write_lut(path, mats, in_width=32)
    for got, want in zip(read_lut(path).matrices(32, 32), mats, strict=True):
        expected = torch.from_numpy(want).half().float()
        torch.testing.assert_close(torch.from_numpy(got), expected, rtol=0, atol=0)


def test_torch_inputs_match_numpy() -> None:
    torch.manual_seed(0)
    layers = [torch.nn.Linear(32, 32, bias=False), torch.nn.Linear(32, 16, bias=False)]
    weights = [layer.weight for layer in layers]  # requires_grad tensors
    as_numpy = [w.detach().numpy().copy() for w in weights]
    expected = lut_bytes(as_numpy, in_width=32, trailer=None)
    assert lut_bytes(weights, in_width=32, trailer=None) == expected
    # non-contiguous views hold the same matrices
    transposed = [w.detach().T.contiguous().T for w in weights]
    assert not transposed[0].is_contiguous()
    assert lut_bytes(transposed, in_width=32, trailer=None) == expected
    assert lut_bytes([a.T.copy().T for a in as_numpy], in_width=32, trailer=None) == expected


# --- round trip ------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["f16", "f32"])
@pytest.mark.parametrize("with_trailer", [False, True])
@pytest.mark.parametrize(
    ("width", "in_features", "in_width"), [(32, 32, 32), (64, 32, 32), (64, 32, 64)]
)
def test_write_read_write_identical(
    tmp_path: Path, dtype: str, with_trailer: bool, width: int, in_features: int, in_width: int
) -> None:
    rng = np.random.default_rng(5)
    shapes = [(width, in_features)] + [(width, width)] * 5 + [(16, width)]
    mats = [rng.normal(size=s) for s in shapes]
    trailer = None
    if with_trailer:
        trailer = trailer_text(6, width, "softmax", "clamped", "relu", "cosh")
    first, second = tmp_path / "a.lut", tmp_path / "b.lut"
    write_lut(first, mats, in_width=in_width, dtype=dtype, trailer=trailer)
    lut = read_lut(first)
    assert lut.dtype == dtype
    again = lut.trailer.to_text() if lut.trailer is not None else None
    assert again == trailer
    rewritten = lut.matrices(in_width, in_features)
    write_lut(second, rewritten, in_width=in_width, dtype=dtype, trailer=again)
    assert second.read_bytes() == first.read_bytes()
    assert lut_bytes(mats, in_width=in_width, dtype=dtype, trailer=trailer) == first.read_bytes()


# --- bad files -------------------------------------------------------------------------
BAD_FILES = [
    ("short header", lambda raw: raw[:10], "shorter than the 16-byte header"),
    ("empty", lambda raw: b"", "0 bytes"),
    ("wrong magic", lambda raw: with_header(raw, magic=4321), "wrong magic 4321 (expected 1234)"),
    ("wrong version", lambda raw: with_header(raw, version=1), "wrong version 1"),
    ("three channels", lambda raw: with_header(raw, channels=3), "3 channels"),
    ("image f16 datatype", lambda raw: with_header(raw, datatype=0), "datatype 0"),
    ("ui8 datatype", lambda raw: with_header(raw, datatype=18), "datatype 18"),
    ("ht not a multiple", lambda raw: with_header(raw, ht=40), "32 x 40"),
    ("zero width", lambda raw: with_header(raw, wd=0), "0 x 64"),
    ("width not multiple of 16", lambda raw: with_header(raw, wd=8, ht=16), "width 8"),
    ("no hidden layer", lambda raw: with_header(raw, ht=32), "0 hidden layers"),
    ("truncated data", lambda raw: raw[:-2], "truncated"),
    ("f32 claimed", lambda raw: with_header(raw, datatype=17), "truncated"),
    ("non-utf8 trailer", lambda raw: raw + b"\xff\xfe\x00", "not UTF-8"),
    ("garbage trailer", lambda raw: raw + b"hello\n", "trailer has 1 lines"),
    (
        "trailer contradicts header",
        lambda raw: raw + (VKDT_SHIPPED_TRAILER + "\n").encode(),
        "trailer says 6 hidden layers of width 64",
    ),
]


@pytest.mark.parametrize(
    ("corrupt", "fragment"),
    [case[1:] for case in BAD_FILES],
    ids=[case[0] for case in BAD_FILES],
)
def test_bad_files(
    tmp_path: Path, small_bytes: bytes, corrupt: Callable[[bytes], bytes], fragment: str
) -> None:
    path = tmp_path / "bad.lut"
    path.write_bytes(corrupt(small_bytes))
    with pytest.raises(KpnError) as err:
        read_lut(path)
    assert fragment in str(err.value)
    assert_one_line_error(err, path)


def test_blank_trailer_is_none(tmp_path: Path, small_bytes: bytes) -> None:
    path = tmp_path / "w.lut"
    for tail in (b"", b"\n"):
        path.write_bytes(small_bytes + tail)
        assert read_lut(path).trailer is None


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.lut"
    with pytest.raises(KpnError, match="no such file") as err:
        read_lut(path)
    assert_one_line_error(err, path)


# --- bad weights -----------------------------------------------------------------------
def test_constants() -> None:
    assert (LUT_MAGIC, LUT_VERSION, DATATYPE_F16, DATATYPE_F32) == (1234, 2, 16, 17)


@pytest.mark.parametrize(
    ("index", "value", "name"),
    [(2, float("nan"), "hidden 1"), (0, float("inf"), "W0"), (-1, float("-inf"), "W_out")],
)
def test_non_finite_refused(tmp_path: Path, index: int, value: float, name: str) -> None:
    mats = make_matrices(32, 3, 32, seed=6)
    mats[index][3, 4] = value
    path = tmp_path / "w.lut"
    for dtype in ("f16", "f32"):
        with pytest.raises(KpnError, match=f"{name} contains NaN or Inf") as err:
            write_lut(path, mats, in_width=32, dtype=dtype)
        assert_one_line_error(err, path)
    assert list(tmp_path.iterdir()) == []


def test_f16_range(tmp_path: Path) -> None:
    mats = make_matrices(32, 3, 32, seed=7)
    mats[2][0, 0] = 65504.0  # the largest f16
    mats[2][0, 1] = -65519.0  # rounds to -65504
    lut_bytes(mats, in_width=32, trailer=None)
    mats[2][0, 2] = 65520.0  # rounds to inf
    path = tmp_path / "w.lut"
    with pytest.raises(KpnError, match="hidden 1 has values beyond the f16 range") as err:
        write_lut(path, mats, in_width=32)
    assert_one_line_error(err, path)
    assert not path.exists()
    write_lut(path, mats, in_width=32, dtype="f32")  # f32 holds it
    np.testing.assert_array_equal(read_lut(path).matrices(32, 32)[2][0, :3], [65504, -65519, 65520])


@pytest.mark.parametrize(
    ("shapes", "in_width", "fragment"),
    [
        ([(32, 33), (32, 32), (16, 32)], 32, "W0 has shape [32, 33]"),
        ([(32, 32), (32, 31), (16, 32)], 32, "hidden 0 has shape [32, 31]"),
        ([(32, 32), (32, 32), (15, 32)], 32, "W_out has shape [15, 32]"),
        ([(24, 24), (16, 24)], 16, "W=24"),
        ([(32, 32), (16, 32)], 64, "does not fit"),
        ([(32, 32), (16, 32)], 40, "multiple of 16"),
        ([(32, 32)], 32, "1 matrices"),
        ([(32, 32, 1), (16, 32)], 32, "3 dimensions"),
    ],
)
def test_bad_shapes(shapes: list[tuple[int, ...]], in_width: int, fragment: str) -> None:
    mats = [np.ones(shape) for shape in shapes]
    with pytest.raises(KpnError, match=fragment.replace("[", r"\[")) as err:
        lut_bytes(mats, in_width=in_width, trailer=None)
    assert_one_line_error(err)


def test_bad_dtype_and_trailer() -> None:
    mats = make_matrices(32, 1, 32, seed=8)
    with pytest.raises(KpnError, match="dtype 'bf16'"):
        lut_bytes(mats, in_width=32, dtype="bf16", trailer=None)
    with pytest.raises(KpnError, match="trailer says 6 hidden layers of width 64"):
        lut_bytes(mats, in_width=32, trailer=VKDT_SHIPPED_TRAILER)
    with pytest.raises(KpnError, match="trailer has 1 lines"):
        lut_bytes(mats, in_width=32, trailer="my weights")


# --- atomic writes ---------------------------------------------------------------------
def test_write_into_missing_directory(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "w.lut"
    with pytest.raises(KpnError, match="cannot write") as err:
        write_lut(path, make_matrices(32, 1, 32, seed=9), in_width=32)
    assert_one_line_error(err, path)
    assert list(tmp_path.iterdir()) == []


def test_write_below_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    path = tmp_path / "file" / "w.lut"
    with pytest.raises(KpnError, match="cannot write") as err:
        write_lut(path, make_matrices(32, 1, 32, seed=9), in_width=32)
    assert_one_line_error(err, path)
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores modes")
def test_write_into_read_only_directory(tmp_path: Path) -> None:
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o555)
    try:
        path = directory / "w.lut"
        with pytest.raises(KpnError, match="cannot write") as err:
            write_lut(path, make_matrices(32, 1, 32, seed=9), in_width=32)
        assert_one_line_error(err, path)
        assert list(directory.iterdir()) == []
    finally:
        directory.chmod(0o755)


def test_write_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # what a read-only directory does to os.open, also when the tests run as root
    def refuse(*args: object, **kwargs: object) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", refuse)
    path = tmp_path / "w.lut"
    with pytest.raises(KpnError, match="Permission denied") as err:
        write_lut(path, make_matrices(32, 1, 32, seed=9), in_width=32)
    assert_one_line_error(err, path)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_failed_write_keeps_existing_file(
    shipped_file: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    before = shipped_file.read_bytes()

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, fail)
    with pytest.raises(KpnError, match="No space left on device") as err:
        write_lut(shipped_file, make_matrices(32, 1, 32, seed=10), in_width=32)
    monkeypatch.undo()
    assert_one_line_error(err, shipped_file)
    assert shipped_file.read_bytes() == before
    assert list(shipped_file.parent.iterdir()) == [shipped_file]


def test_refused_weights_keep_existing_file(shipped_file: Path) -> None:
    before = shipped_file.read_bytes()
    mats = make_matrices(64, 6, 64, seed=11)
    mats[3][0, 0] = float("nan")
    with pytest.raises(KpnError):
        write_lut(shipped_file, mats, in_width=64)
    assert shipped_file.read_bytes() == before
    assert list(shipped_file.parent.iterdir()) == [shipped_file]


def test_overwrite_replaces_and_leaves_no_temporary(shipped_file: Path) -> None:
    mats = make_matrices(32, 1, 32, seed=12)
    write_lut(shipped_file, mats, in_width=32)
    assert shipped_file.read_bytes() == lut_bytes(mats, in_width=32, trailer=None)
    assert list(shipped_file.parent.iterdir()) == [shipped_file]
    umask = os.umask(0)
    os.umask(umask)
    assert shipped_file.stat().st_mode & 0o777 == 0o666 & ~umask
