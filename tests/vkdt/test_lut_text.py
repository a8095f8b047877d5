"""Tests for kpn.vkdt.lut_text: the text after a .lut file's weights (docs/design.md §9),
kpn-t's trailer and kpn's own section, as formatted, parsed and read back from files."""

from __future__ import annotations

import dataclasses
import itertools
import re
import struct
import tomllib
from pathlib import Path

import numpy as np
import pytest

from kpn.config import InferConfig, ModelConfig
from kpn.errors import KpnError
from kpn.vkdt.lut import lut_bytes, read_lut, write_lut
from kpn.vkdt.lut_text import (
    KPN_SECTION_HEAD,
    LutTrailer,
    format_kpn_section,
    format_trailer,
    parse_trailer,
)

from conftest import assert_one_line_error
from vkdt_shared import (
    SHIPPED,
    VKDT_SHIPPED_TRAILER,
    dead_unit_matrices,
    make_matrices,
    small_lut_bytes,
    trailer_text,
)


@pytest.fixture
def small_bytes() -> bytes:
    """vkdt_shared.small_lut_bytes: a valid W=32, n_hidden=1 file without trailer."""
    return small_lut_bytes()


# --- trailer ---------------------------------------------------------------------------
def test_reads_vkdt_shipped_trailer(tmp_path: Path) -> None:
    # built by hand as o-lut writes it: header, 64 x 448 f16, then "%s\n"
    header = struct.pack("<IHBBII", 1234, 2, 1, 16, 64, 448)
    block = np.zeros(64 * 448, dtype="<f2").tobytes()
    path = tmp_path / "vkdt.lut"
    path.write_bytes(header + block + (VKDT_SHIPPED_TRAILER + "\n").encode())
    assert read_lut(path).trailer == SHIPPED


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
    text = trailer_text(3, 32, kernel, alpha, activation, loss)
    parsed = parse_trailer(text, "x.lut")
    assert parsed == LutTrailer(3, 32, kernel, ALPHA_READ_BACK[alpha], activation, loss)
    assert parse_trailer(text + "\n", "x.lut") == parsed
    assert parsed.to_text() == text


def test_clamped_alpha_formats_as_sigmoid() -> None:
    text = trailer_text(6, 32, "softmax", "clamped", "none", "l2")
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
    assert_one_line_error(err, "bad.lut")


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


# --- kpn's section -----------------------------------------------------------------------
def tiny_model(**changes: object) -> ModelConfig:
    """W 32, one hidden layer, vkdt's star15 (32 inputs): fits make_matrices(32, 1, 32)."""
    return dataclasses.replace(
        ModelConfig(width=32, n_hidden=1, features="star15", blend="add", mlp_input="detail"),
        **changes,
    )


TINY_TRAILER = trailer_text(1, 32, "softmax", "sigmoid", "leaky_relu", "smape")


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
    assert_one_line_error(err, path)


def test_section_contradicting_trailer(tmp_path: Path, small_bytes: bytes) -> None:
    section = format_kpn_section(tiny_model(kernel_activation="plain"), InferConfig())
    path = tmp_path / "bad.lut"
    path.write_bytes(small_bytes + (TINY_TRAILER + "\n" + section).encode())
    with pytest.raises(KpnError, match=re.escape("kernel_activation = 'softmax'")) as err:
        read_lut(path)
    assert_one_line_error(err, path)
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


# --- the layout in kpn's section ----------------------------------------------------
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
    assert_one_line_error(err, path)
