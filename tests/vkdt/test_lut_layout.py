"""Tests for kpn.vkdt.lut_layout: where each matrix lies in a .lut file's float block
(docs/design.md §9), in any in_width and in the named layouts (kpn-t's, vkdt HEAD's)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from kpn.errors import KpnError
from kpn.model.reference import mlp_forward
from kpn.vkdt.lut import lut_bytes, read_lut, write_lut
from kpn.vkdt.lut_layout import named_layout

from conftest import assert_one_line_error
from vkdt_shared import dead_unit_matrices, floats_of, make_matrices

# --- offsets ---------------------------------------------------------------------------
# (W, in_features, in_width, float offset of W0, hidden 0..4, W_out), from design §9 by hand
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
    assert_one_line_error(err, path)
    with pytest.raises(KpnError, match="in_features 33") as err:
        lut.matrices(32, 33)
    assert_one_line_error(err, path)
    with pytest.raises(KpnError, match="multiple of 16"):
        lut.matrices(24, 24)


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
    assert_one_line_error(err, path)
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
