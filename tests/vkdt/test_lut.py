"""Tests for kpn.vkdt.lut: vkdt's .lut weights file (SPEC section 9)."""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import struct
import tomllib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from kpn.config import InferConfig, ModelConfig
from kpn.errors import KpnError
from kpn.model.mlp import mlp_forward
from kpn.vkdt.lut import (
    DATATYPE_F16,
    DATATYPE_F32,
    KPN_SECTION_HEAD,
    LUT_MAGIC,
    LUT_VERSION,
    LutTrailer,
    format_kpn_section,
    format_trailer,
    lut_bytes,
    named_layout,
    parse_trailer,
    read_lut,
    write_lut,
)

# kpn-t's text for its shipped config.h (6 hidden layers, WIDTH 64, APPLY_PLAIN,
# ALPHA_CONST, leaky relu, LOSS_SMAPE), as its init() formats it; o-lut adds one "\n".
VKDT_SHIPPED_TRAILER = (
    "lut contains weights for\n"
    "multi-level kernel predicting mlp with:\n"
    "6 hidden layers\n"
    "64 network width\n"
    "plain kernel weight activation\n"
    "const alpha blending activation\n"
    "leaky relu mlp activation\n"
    "SMAPE loss"
)
SHIPPED = LutTrailer(6, 64, "plain", "const", "leaky_relu", "smape")


def make_matrices(width: int, n_hidden: int, in_features: int, seed: int) -> list[np.ndarray]:
    """[W0 [W, in_features], hidden [W, W]..., W_out [16, W]], all exact in float16.

    Multiples of 1/64 below 16 in magnitude, never zero, so a value read back from the
    wrong place or a zero where a weight belongs cannot pass by accident.
    """
    rng = np.random.default_rng(seed)
    shapes = [(width, in_features)] + [(width, width)] * (n_hidden - 1) + [(16, width)]
    out = []
    for shape in shapes:
        values = rng.integers(1, 1000, size=shape) * rng.choice([-1, 1], size=shape)
        out.append((values / 64).astype(np.float32))
    return out


def floats_of(path: Path, dtype: str = "<f2") -> tuple[tuple[int, ...], np.ndarray]:
    """(header fields, float32 block) parsed here with numpy, independently of kpn.vkdt.lut."""
    raw = path.read_bytes()
    header = struct.unpack_from("<IHBBII", raw)
    wd, ht = header[4], header[5]
    return header, np.frombuffer(raw, dtype=dtype, count=wd * ht, offset=16).astype(np.float32)


def assert_one_line_naming(err: pytest.ExceptionInfo[KpnError], path: Path | str) -> None:
    message = str(err.value)
    assert str(path) in message
    assert "\n" not in message


@pytest.fixture
def shipped_file(tmp_path: Path) -> Path:
    """A file laid out as kpn-t writes it for its shipped config, trailer included."""
    path = tmp_path / "shipped.lut"
    write_lut(path, make_matrices(64, 6, 64, seed=0), in_width=64, trailer=VKDT_SHIPPED_TRAILER)
    return path


@pytest.fixture
def small_bytes() -> bytes:
    """A valid W=32, n_hidden=1 file without trailer, to corrupt."""
    return lut_bytes(make_matrices(32, 1, 32, seed=1), in_width=32, trailer=None)


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


# --- offsets ---------------------------------------------------------------------------
# (W, in_features, in_width, float offset of W0, hidden 0..4, W_out), from SPEC 9 by hand
OFFSETS = [
    (32, 32, 32, [0, 1024, 2048, 3072, 4096, 5120, 6144]),
    (64, 64, 64, [0, 4096, 8192, 12288, 16384, 20480, 24576]),
    (64, 32, 64, [0, 4096, 8192, 12288, 16384, 20480, 24576]),  # star15, kpn-t layout
    (64, 32, 32, [0, 2048, 6144, 10240, 14336, 18432, 22528]),  # star15, kpn layout
]


@pytest.mark.parametrize(("width", "in_features", "in_width", "offsets"), OFFSETS)
def test_offsets(
    tmp_path: Path, width: int, in_features: int, in_width: int, offsets: list[int]
) -> None:
    mats = make_matrices(width, 6, in_features, seed=width + in_width)
    path = tmp_path / "w.lut"
    write_lut(path, mats, in_width=in_width)
    header, data = floats_of(path)
    assert header == (1234, 2, 1, 16, width, 7 * width)
    assert data.size == 7 * width * width
    used = np.zeros(data.size, dtype=bool)

    w0 = data[: width * in_width].reshape(width, in_width)
    np.testing.assert_array_equal(w0[:, :in_features], mats[0])
    used[: width * in_width] = True  # the padding columns belong to W0 and must be zero
    np.testing.assert_array_equal(w0[:, in_features:], 0.0)
    for mat, offset in zip(mats[1:], offsets[1:], strict=True):
        np.testing.assert_array_equal(data[offset : offset + mat.size].reshape(mat.shape), mat)
        used[offset : offset + mat.size] = True
    np.testing.assert_array_equal(data[~used], 0.0)

    back = read_lut(path).matrices(in_width, in_features)
    assert len(back) == len(mats)
    for got, want in zip(back, mats, strict=True):
        torch.testing.assert_close(torch.from_numpy(got), torch.from_numpy(want), rtol=0, atol=0)


def test_matrices_in_width_that_does_not_fit(tmp_path: Path) -> None:
    path = tmp_path / "w.lut"
    write_lut(path, make_matrices(32, 1, 32, seed=2), in_width=32)
    lut = read_lut(path)
    # 32*64 + 16*32 floats needed, the 2 x 32 x 32 block holds 2048
    with pytest.raises(KpnError, match="does not fit") as err:
        lut.matrices(64, 32)
    assert_one_line_naming(err, path)
    with pytest.raises(KpnError, match="in_features 33") as err:
        lut.matrices(32, 33)
    assert_one_line_naming(err, path)
    with pytest.raises(KpnError, match="multiple of 16"):
        lut.matrices(24, 24)


def test_read_fields_and_readonly_block(shipped_file: Path) -> None:
    lut = read_lut(shipped_file)
    assert (lut.width, lut.n_hidden, lut.dtype) == (64, 6, "f16")
    assert lut.data.shape == (7 * 64, 64)
    assert lut.data.dtype == np.float32
    assert not lut.data.flags.writeable
    assert lut.trailer == SHIPPED


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
        trailer = format_trailer(
            n_hidden=6,
            width=width,
            kernel_activation="softmax",
            alpha_activation="clamped",
            activation="relu",
            loss="cosh",
        )
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


# --- trailer ---------------------------------------------------------------------------
def test_reads_vkdt_shipped_trailer(tmp_path: Path) -> None:
    # built by hand as o-lut writes it: header, 64 x 448 f16, then "%s\n"
    header = struct.pack("<IHBBII", 1234, 2, 1, 16, 64, 448)
    block = np.zeros(64 * 448, dtype="<f2").tobytes()
    path = tmp_path / "vkdt.lut"
    path.write_bytes(header + block + (VKDT_SHIPPED_TRAILER + "\n").encode())
    assert read_lut(path).trailer == SHIPPED


def test_format_shipped_is_vkdt_text(shipped_file: Path) -> None:
    text = format_trailer(
        n_hidden=6,
        width=64,
        kernel_activation="plain",
        alpha_activation="const",
        activation="leaky_relu",
        loss="smape",
    )
    assert text == VKDT_SHIPPED_TRAILER
    assert shipped_file.read_bytes().endswith(b"\nSMAPE loss\n")
    assert shipped_file.read_bytes()[16 + 64 * 448 * 2 :] == (text + "\n").encode()


ALPHA_READ_BACK = {
    "const": "const",
    "plain": "plain",
    "clamped": "sigmoid_or_clamped",
    "sigmoid": "sigmoid_or_clamped",
}


@pytest.mark.parametrize(
    ("kernel", "alpha", "activation", "loss"),
    list(
        itertools.product(
            ["softmax", "plain"],
            ["const", "plain", "clamped", "sigmoid"],
            ["leaky_relu", "relu", "none"],
            ["l2", "smape", "cosh"],
        )
    ),
)
def test_trailer_round_trip(kernel: str, alpha: str, activation: str, loss: str) -> None:
    text = format_trailer(
        n_hidden=3,
        width=32,
        kernel_activation=kernel,
        alpha_activation=alpha,
        activation=activation,
        loss=loss,
    )
    parsed = parse_trailer(text, "x.lut")
    assert parsed == LutTrailer(3, 32, kernel, ALPHA_READ_BACK[alpha], activation, loss)
    assert parse_trailer(text + "\n", "x.lut") == parsed
    assert parsed.to_text() == text


def test_clamped_alpha_formats_as_sigmoid() -> None:
    text = format_trailer(
        n_hidden=6,
        width=32,
        kernel_activation="softmax",
        alpha_activation="clamped",
        activation="none",
        loss="l2",
    )
    lines = text.split("\n")
    assert lines[5] == "sigmoid alpha blending activation"
    assert lines[2:5] == ["6 hidden layers", "32 network width", "softmax kernel weight activation"]
    assert lines[6:] == ["none mlp activation", "L2 loss"]


def test_older_vkdt_trailers_without_activation_or_loss() -> None:
    head = VKDT_SHIPPED_TRAILER.split("\n")
    # before 2024-01-18 kpn-t wrote 6 lines, before 2024-01-30 7
    six = "\n".join(head[:6]) + "\n\n"
    seven = "\n".join(head[:7]) + "\n"
    assert parse_trailer(six, "old.lut") == LutTrailer(6, 64, "plain", "const", None, None)
    expected = LutTrailer(6, 64, "plain", "const", "leaky_relu", None)
    assert parse_trailer(seven, "old.lut") == expected
    assert parse_trailer("\n".join(head[:7]), "x").to_text() == "\n".join(head[:7])


def test_old_kernel_sigmoid_is_kept() -> None:
    text = VKDT_SHIPPED_TRAILER.replace("plain kernel", "sigmoid kernel")
    assert parse_trailer(text, "x").kernel_activation == "sigmoid"


@pytest.mark.parametrize(
    ("bad_text", "fragment"),
    [
        ("hello world", "1 lines"),
        (VKDT_SHIPPED_TRAILER.replace("lut contains", "lut holds"), "line 1"),
        (VKDT_SHIPPED_TRAILER.replace("6 hidden", "six hidden"), "line 3"),
        (VKDT_SHIPPED_TRAILER.replace("6 hidden", "0 hidden"), "line 3"),
        (VKDT_SHIPPED_TRAILER.replace("64 network", "64 net"), "line 4"),
        (VKDT_SHIPPED_TRAILER.replace("plain kernel", "tanh kernel"), "line 5"),
        (VKDT_SHIPPED_TRAILER.replace("const alpha", "clamped alpha"), "line 6"),
        (VKDT_SHIPPED_TRAILER.replace("leaky relu", "leaky_relu"), "line 7"),
        (VKDT_SHIPPED_TRAILER.replace("SMAPE loss", "smape loss"), "line 8"),
        (VKDT_SHIPPED_TRAILER + "\nextra line", "9 lines"),
    ],
)
def test_parse_trailer_rejects(bad_text: str, fragment: str) -> None:
    with pytest.raises(KpnError, match=fragment) as err:
        parse_trailer(bad_text, "bad.lut")
    assert_one_line_naming(err, "bad.lut")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("kernel_activation", "sigmoid"),
        ("alpha_activation", "sigmoid_or_clamped"),
        ("activation", "leaky relu"),
        ("loss", "SMAPE"),
    ],
)
def test_format_trailer_rejects_unknown_names(name: str, value: str) -> None:
    config = {
        "kernel_activation": "plain",
        "alpha_activation": "const",
        "activation": "relu",
        "loss": "l2",
    }
    config[name] = value
    with pytest.raises(KpnError, match=name):
        format_trailer(n_hidden=6, width=32, **config)


def test_trailer_dataclass_validates() -> None:
    with pytest.raises(KpnError, match="alpha_activation"):
        LutTrailer(6, 64, "plain", "clamped", "relu", "l2")
    with pytest.raises(KpnError, match="loss"):
        LutTrailer(6, 64, "plain", "const", None, "l2")


# --- bad files -------------------------------------------------------------------------
def with_header(raw: bytes, **fields: int) -> bytes:
    names = ["magic", "version", "channels", "datatype", "wd", "ht"]
    values = dict(zip(names, struct.unpack_from("<IHBBII", raw), strict=True))
    values.update(fields)
    return struct.pack("<IHBBII", *(values[n] for n in names)) + raw[16:]


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
    assert_one_line_naming(err, path)


def test_blank_trailer_is_none(tmp_path: Path, small_bytes: bytes) -> None:
    path = tmp_path / "w.lut"
    for tail in (b"", b"\n"):
        path.write_bytes(small_bytes + tail)
        assert read_lut(path).trailer is None


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.lut"
    with pytest.raises(KpnError, match="no such file") as err:
        read_lut(path)
    assert_one_line_naming(err, path)


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
        assert_one_line_naming(err, path)
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
    assert_one_line_naming(err, path)
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
    assert "\n" not in str(err.value)


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
    assert_one_line_naming(err, path)
    assert list(tmp_path.iterdir()) == []


def test_write_below_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    path = tmp_path / "file" / "w.lut"
    with pytest.raises(KpnError, match="cannot write") as err:
        write_lut(path, make_matrices(32, 1, 32, seed=9), in_width=32)
    assert_one_line_naming(err, path)
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
        assert_one_line_naming(err, path)
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
    assert_one_line_naming(err, path)
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
    assert_one_line_naming(err, shipped_file)
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


# --- kpn's section -----------------------------------------------------------------------
def tiny_model(**changes: object) -> ModelConfig:
    """W 32, one hidden layer, vkdt's star15 (32 inputs): fits make_matrices(32, 1, 32)."""
    return dataclasses.replace(
        ModelConfig(width=32, n_hidden=1, features="star15", blend="add", mlp_input="detail"),
        **changes,
    )


TINY_TRAILER = format_trailer(
    n_hidden=1,
    width=32,
    kernel_activation="softmax",
    alpha_activation="sigmoid",
    activation="leaky_relu",
    loss="smape",
)


def test_section_round_trip_and_vkdt_text_unchanged(tmp_path: Path) -> None:
    """The section restores model and infer exactly; what precedes it is byte for byte the
    file without it, and kpn-t's text still parses with the plain trailer parser."""
    mats = make_matrices(32, 1, 32, seed=3)
    model, infer = tiny_model(precision="vkdt-f16", levels=6), InferConfig(tile=96, levels=5)
    plain = lut_bytes(mats, in_width=32, trailer=TINY_TRAILER)
    with_section = lut_bytes(mats, in_width=32, trailer=TINY_TRAILER, model=model, infer=infer)
    assert with_section == plain + format_kpn_section(model, infer).encode()
    path = tmp_path / "w.lut"
    write_lut(path, mats, in_width=32, trailer=TINY_TRAILER, model=model, infer=infer)
    assert path.read_bytes() == with_section
    lut = read_lut(path)
    assert (lut.model, lut.infer) == (model, infer)
    # the old path: everything before kpn's head line is kpn-t's text, as parse_trailer reads it
    text = with_section[16 + 2 * 32 * 32 * 2 :].decode()
    vkdt_text, head, _ = text.partition(f"\n{KPN_SECTION_HEAD}\n")
    assert head and vkdt_text == TINY_TRAILER
    assert parse_trailer(vkdt_text, "w.lut") == lut.trailer == parse_trailer(TINY_TRAILER, "t")
    # the section is the head line and TOML with every key of [model] and [infer]
    section = tomllib.loads(format_kpn_section(model, infer).partition("\n")[2])
    assert section == {
        "model": dataclasses.asdict(model),
        "infer": dataclasses.asdict(infer),
    }
    for got, want in zip(lut.matrices(32, 32), mats, strict=True):
        np.testing.assert_array_equal(got, want)


def test_section_without_trailer_and_default_infer(tmp_path: Path) -> None:
    path = tmp_path / "w.lut"
    write_lut(path, make_matrices(32, 1, 32, seed=4), in_width=32, model=tiny_model())
    lut = read_lut(path)
    assert (lut.trailer, lut.model, lut.infer) == (None, tiny_model(), InferConfig())


def test_files_without_section_have_no_model(shipped_file: Path) -> None:
    lut = read_lut(shipped_file)
    assert (lut.model, lut.infer) == (None, None)


SECTION_HEAD = f"{KPN_SECTION_HEAD}\n"
BAD_SECTIONS = [
    ("not toml", SECTION_HEAD + "[model\n", "invalid TOML"),
    ("unknown table", SECTION_HEAD + "[model]\nwidth = 32\nn_hidden = 1\n[train]\n", "'train'"),
    ("no model", SECTION_HEAD + "[infer]\nlevels = 2\n", "no [model]"),
    ("unknown key", SECTION_HEAD + "[model]\nwidth = 32\nn_hidden = 1\nfoo = 1\n", "model.foo"),
    ("bad value", SECTION_HEAD + '[model]\nwidth = 32\nn_hidden = 1\ndown = "x"\n', "model.down"),
    ("shape", SECTION_HEAD + "[model]\nwidth = 32\nn_hidden = 2\n", "2 hidden layers of width 32"),
]


@pytest.mark.parametrize(
    ("section", "fragment"), [c[1:] for c in BAD_SECTIONS], ids=[c[0] for c in BAD_SECTIONS]
)
def test_bad_sections(tmp_path: Path, small_bytes: bytes, section: str, fragment: str) -> None:
    path = tmp_path / "bad.lut"
    path.write_bytes(small_bytes + (TINY_TRAILER + "\n" + section).encode())
    with pytest.raises(KpnError) as err:
        read_lut(path)
    assert fragment in str(err.value)
    assert_one_line_naming(err, path)


def test_section_contradicting_trailer(tmp_path: Path, small_bytes: bytes) -> None:
    section = format_kpn_section(tiny_model(kernel_activation="plain"), InferConfig())
    path = tmp_path / "bad.lut"
    path.write_bytes(small_bytes + (TINY_TRAILER + "\n" + section).encode())
    with pytest.raises(KpnError, match=re.escape("kernel_activation = 'softmax'")) as err:
        read_lut(path)
    assert_one_line_naming(err, path)
    # vkdt's "sigmoid" alpha agrees with clamped
    clamped = format_kpn_section(tiny_model(alpha_activation="clamped"), InferConfig())
    path.write_bytes(small_bytes + (TINY_TRAILER + "\n" + clamped).encode())
    assert read_lut(path).model == tiny_model(alpha_activation="clamped")


@pytest.mark.parametrize(
    ("model", "fragment"),
    [
        (tiny_model(n_hidden=2), "2 hidden layers of width 32"),
        (tiny_model(activation="relu"), "model.activation = 'leaky_relu'"),
        (tiny_model(features="patch8x8", width=64), "1 hidden layers of width 64"),
    ],
)
def test_write_refuses_section_that_does_not_fit(model: ModelConfig, fragment: str) -> None:
    mats = make_matrices(32, 1, 32, seed=1)
    with pytest.raises(KpnError, match=re.escape(fragment)):
        lut_bytes(mats, in_width=32, trailer=TINY_TRAILER, model=model)
    with pytest.raises(KpnError, match="W0 has 16 columns"):
        lut_bytes([mats[0][:, :16], mats[1]], in_width=32, trailer=None, model=tiny_model())
    # kpn's own input (32 channels too) is written: kpn reads it back, vkdt cannot run it
    lut_bytes(mats, in_width=32, trailer=TINY_TRAILER, model=tiny_model(features="star15_snr"))


# --- vkdt HEAD's inference layout ------------------------------------------------------
# (layout, float offset of W0, hidden 0..4, W_out) for W 64, 6 hidden layers, by hand:
# kpn-t: hidden k at 64*64 + k*4096; head: kpn/main.c's in_width 32, hidden k at 64*32 + k*4096
NAMED_OFFSETS = {
    "kpn-t": [0, 4096, 8192, 12288, 16384, 20480, 24576],
    "head": [0, 2048, 6144, 10240, 14336, 18432, 22528],
}


@pytest.mark.parametrize("layout", list(NAMED_OFFSETS))
def test_named_layout_offsets(layout: str) -> None:
    offsets = named_layout(64, 6, layout)
    assert [offset for offset, _, _ in offsets] == NAMED_OFFSETS[layout]
    assert [(rows, cols) for _, rows, cols in offsets] == [(64, 64)] * 6 + [(16, 64)]
    # W 32: both are kpn-t's layout
    assert named_layout(32, 6, "head") == named_layout(32, 6, "kpn-t")
    with pytest.raises(KpnError, match="unknown layout 'kpn'"):
        named_layout(64, 6, "kpn")


def hand_made_f32(width: int, n_hidden: int) -> bytes:
    """A ssbo-f32 file whose float i holds i + 1: every float has its own value."""
    header = struct.pack("<IHBBII", 1234, 2, 1, 17, width, (n_hidden + 1) * width)
    count = (n_hidden + 1) * width * width
    return header + (np.arange(count, dtype="<f4") + 1).tobytes()


def test_head_layout_reads_a_hand_made_file(tmp_path: Path) -> None:
    """W 64, 2 hidden layers (12288 floats, float i = i + 1). vkdt HEAD's kpn module reads
    W0 as floats 0..4095 (row r at 64r), hidden 0 from float 2048, W_out from 2048 + 4096
    = 6144; kpn-t reads hidden 0 from 4096 and W_out from 8192."""
    path = tmp_path / "hand.lut"
    path.write_bytes(hand_made_f32(64, 2))
    lut = read_lut(path)
    assert lut.layout == "kpn-t"  # a file without kpn's section
    w0, hidden, w_out = lut.network(64, "head")
    np.testing.assert_array_equal(w0, np.arange(1, 4097).reshape(64, 64))
    np.testing.assert_array_equal(hidden, np.arange(2049, 6145).reshape(64, 64))
    np.testing.assert_array_equal(w_out, np.arange(6145, 7169).reshape(16, 64))
    assert w0[32, 0] == hidden[0, 0] == 2049  # the overlap: W0's row 32 is hidden 0's row 0
    w0, hidden, w_out = lut.network(64, "kpn-t")
    np.testing.assert_array_equal(hidden, np.arange(4097, 8193).reshape(64, 64))
    np.testing.assert_array_equal(w_out, np.arange(8193, 9217).reshape(16, 64))
    assert [m.tolist() for m in lut.network(64)] == [m.tolist() for m in lut.network(64, "kpn-t")]
    # star15 (32 inputs) in vkdt's W 64 build: W0's first 32 columns of the same rows
    np.testing.assert_array_equal(
        lut.network(32, "head")[0], np.arange(1, 4097).reshape(64, 64)[:, :32]
    )


def dead_unit_matrices(width: int = 64) -> list[np.ndarray]:
    """W 64, 2 hidden layers, first-layer units 32.. unused (hidden 0's columns 32.. are 0)."""
    w0, hidden, w_out = make_matrices(width, 2, width, seed=11)
    hidden[:, 32:] = 0.0
    return [w0, hidden, w_out]


def test_head_layout_writes_dead_units(tmp_path: Path) -> None:
    """The file holds W0's rows 0..31 at floats 0..2047, hidden 0 from 2048, W_out from
    6144; W0's rows 32.. are not in the file (hidden 0 lies there), and read back they are
    hidden 0's rows 0..31: the same network, as the units they feed are unused."""
    mats = dead_unit_matrices()
    path = tmp_path / "head.lut"
    write_lut(path, mats, layout="head", dtype="f32")
    _, data = floats_of(path, "<f4")
    np.testing.assert_array_equal(data[:2048], mats[0][:32].reshape(-1))
    np.testing.assert_array_equal(data[2048:6144], mats[1].reshape(-1))
    np.testing.assert_array_equal(data[6144:7168], mats[2].reshape(-1))
    np.testing.assert_array_equal(data[7168:], 0.0)
    w0, hidden, w_out = read_lut(path).network(64, "head")
    np.testing.assert_array_equal(w0[:32], mats[0][:32])
    np.testing.assert_array_equal(w0[32:], mats[1][:32])
    np.testing.assert_array_equal(hidden, mats[1])
    np.testing.assert_array_equal(w_out, mats[2])
    x = torch.from_numpy(np.random.default_rng(3).standard_normal((50, 64)).astype(np.float32))
    written = mlp_forward(x, [torch.from_numpy(m) for m in mats], "leaky_relu")
    read = mlp_forward(x, [torch.from_numpy(m) for m in (w0, hidden, w_out)], "leaky_relu")
    torch.testing.assert_close(read, written, rtol=0.0, atol=0.0)
    # written again from what was read: the same bytes
    assert lut_bytes([w0, hidden, w_out], layout="head", dtype="f32", trailer=None) == (
        path.read_bytes()
    )


def test_head_layout_writes_a_tied_network() -> None:
    """W0's rows 32.. equal to hidden 0's rows 0..31 are held by the file as they are."""
    mats = make_matrices(64, 2, 64, seed=12)
    mats[0][32:] = mats[1][:32]
    data = np.frombuffer(lut_bytes(mats, layout="head", trailer=None), "<f2", offset=16)
    np.testing.assert_array_equal(data[:4096].astype(np.float32), mats[0].reshape(-1))


def test_head_layout_refuses_a_live_unit(tmp_path: Path) -> None:
    mats = dead_unit_matrices()
    mats[1][5, 40] = 0.5  # unit 40 of the first layer feeds hidden unit 5
    path = tmp_path / "head.lut"
    with pytest.raises(KpnError) as err:
        write_lut(path, mats, layout="head")
    assert "unit 40" in str(err.value) and "model.vkdt_head_layout = true" in str(err.value)
    assert "float 2048" in str(err.value)
    assert_one_line_naming(err, path)
    assert not path.exists()
    # kpn-t's layout holds it
    write_lut(path, mats, layout="kpn-t")
    np.testing.assert_array_equal(read_lut(path).network(64)[1], mats[1])


def test_head_layout_with_one_hidden_layer() -> None:
    """n_hidden 1: W_out (16 rows) follows W0 at 2048 and covers W0's rows 32..47 only;
    rows 48..63 keep W0's own values, so only units 32..47 must be unused by W_out."""
    w0, w_out = make_matrices(64, 1, 64, seed=13)
    w_out[:, 32:48] = 0.0
    raw = lut_bytes([w0, w_out], layout="head", dtype="f32", trailer=None)
    data = np.frombuffer(raw, "<f4", offset=16)
    np.testing.assert_array_equal(data[2048:3072], w_out.reshape(-1))
    np.testing.assert_array_equal(data[3072:4096], w0[48:].reshape(-1))
    w_out[0, 40] = 1.0
    with pytest.raises(KpnError, match="unit 40"):
        lut_bytes([w0, w_out], layout="head", trailer=None)


def test_head_layout_in_kpn_section(tmp_path: Path) -> None:
    """kpn's section records the head layout ([lut] layout = "head"), read_lut reads it,
    and network() then reads the file that way by default."""
    model = dataclasses.replace(
        tiny_model(), width=64, n_hidden=2, features="patch8x8", vkdt_head_layout=True
    )
    mats = dead_unit_matrices()
    path = tmp_path / "head.lut"
    write_lut(path, mats, layout="head", model=model)
    section = format_kpn_section(model, InferConfig(), "head")
    assert section.endswith('[lut]\nlayout = "head"\n')
    assert path.read_bytes().endswith(section.encode())
    lut = read_lut(path)
    assert (lut.layout, lut.model) == ("head", model)
    np.testing.assert_array_equal(lut.network(64)[1], mats[1])
    assert not np.array_equal(lut.network(64, "kpn-t")[1], mats[1])
    # kpn-t's layout writes no [lut] table, and reads back as kpn-t
    write_lut(path, mats, layout="kpn-t", model=model)
    assert b"[lut]" not in path.read_bytes() and read_lut(path).layout == "kpn-t"
    star15 = dataclasses.replace(model, features="star15")
    with pytest.raises(KpnError, match="named layout"):
        lut_bytes([mats[0][:, :32], *mats[1:]], in_width=32, trailer=None, model=star15)
    with pytest.raises(KpnError, match="give in_width or a named layout"):
        lut_bytes(mats, in_width=64, layout="head", trailer=None)


@pytest.mark.parametrize(
    ("table", "fragment"),
    [('[lut]\nlayout = "kpn"\n', "layout = one of"), ("[lut]\nother = 1\n", "layout = one of")],
)
def test_bad_layout_table(tmp_path: Path, small_bytes: bytes, table: str, fragment: str) -> None:
    path = tmp_path / "bad.lut"
    section = format_kpn_section(tiny_model(), InferConfig()) + table
    path.write_bytes(small_bytes + (TINY_TRAILER + "\n" + section).encode())
    with pytest.raises(KpnError, match=fragment) as err:
        read_lut(path)
    assert_one_line_naming(err, path)
