"""Tests for ``python -m kpn import`` (kpn.vkdt.cli; docs/design.md §9, §10).

Files laid out as vkdt's kpn-t and o-lut write them (built with struct and numpy,
independently of kpn.vkdt.lut), export/import/export round trips, files that say their
model (kpn's section) or their layout, and every bad input of issue 7: one line on stderr,
exit code 2, nothing written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kpn.config import config_to_toml, load_config
from kpn.io.checkpoint import load_checkpoint
from kpn.model.mlp import load_weights
from kpn.model.network import KPN
from kpn.vkdt.export import lut_payload
from kpn.vkdt.lut_text import format_kpn_section

from conftest import assert_error_line, assert_one_line_error
from vkdt_shared import (
    CONFIGS,
    DESIGN,
    VKDT_SHIPPED_TRAILER,
    full_trailer,
    head_preset,
    listing,
    old_trailer,
    run,
    save_model,
    tiny_config,
    tiny_matrices,
    vkdt_lut,
    with_header,
)


# --- round trips -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("preset", "dtype", "with_config"),
    [
        ("design", "f16", True),
        ("design", "f32", True),
        ("vkdt-head", "f16", False),
        ("vkdt-head-w32", "f16", False),
        ("vkdt-head-w32", "f32", True),
        ("vkdt-2024-02", "f16", True),
    ],
)
def test_export_import_export_is_byte_identical(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    preset: str,
    dtype: str,
    with_config: bool,
) -> None:
    config_path = CONFIGS / f"{preset}.toml"
    config = load_config(config_path)
    first, second = tmp_path / "first.lut", tmp_path / "second.lut"
    save_model(tmp_path / "trained.pt", config)
    assert run(capsys, "export", tmp_path / "trained.pt", "-o", first, "--dtype", dtype)[0] == 0
    extra = ["--config", config_path] if with_config else []
    code, _, err = run(capsys, "import", first, "-o", tmp_path / "imported.pt", *extra)
    assert code == 0, err
    assert run(capsys, "export", tmp_path / "imported.pt", "-o", second, "--dtype", dtype)[0] == 0
    assert first.read_bytes() == second.read_bytes()

    state = load_checkpoint(tmp_path / "imported.pt")
    assert (state.step, state.skipped_steps, state.samples_seen) == (0, 0, 0)
    if with_config:
        assert state.config == config
    else:  # the file's kpn section: the model and its [infer], the trailer's loss
        assert (state.config.model, state.config.infer) == (config.model, config.infer)
        assert state.config.train.loss == config.train.loss


# --- files as vkdt writes them -----------------------------------------------------------
def test_import_vkdt_shipped_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """kpn-t's shipped build (W 64): preset vkdt-head; weights kept, the random tail not."""
    raw = vkdt_lut(64, 6, VKDT_SHIPPED_TRAILER)
    (tmp_path / "mlp-w.lut").write_bytes(raw)
    # the file does not say its model: refused until the user says it
    before = listing(tmp_path)
    code, _, err = run(capsys, "import", tmp_path / "mlp-w.lut", "-o", tmp_path / "w.pt")
    assert code == 2
    assert_error_line(err, "mlp-w.lut", "no kpn section", "--config", "--preset vkdt-head")
    assert listing(tmp_path) == before
    code, out, err = run(
        capsys, "import", tmp_path / "mlp-w.lut", "--preset", "vkdt-head", "-o", tmp_path / "w.pt"
    )
    assert (code, err) == (0, "")
    assert "vkdt-head.toml" in out
    state = load_checkpoint(tmp_path / "w.pt")
    assert state.config == load_config(CONFIGS / "vkdt-head.toml")
    block = np.frombuffer(raw, "<f2", count=7 * 64 * 64, offset=16).astype(np.float32)
    w0 = state.model["mlp.layers.0.weight"].numpy()
    np.testing.assert_array_equal(w0, block[: 64 * 64].reshape(64, 64))
    w_out = state.model["mlp.layers.6.weight"].numpy()  # at W*in_width + 5*W*W = 24576
    np.testing.assert_array_equal(w_out, block[24576 : 24576 + 16 * 64].reshape(16, 64))

    code, _, err = run(
        capsys, "export", tmp_path / "w.pt", "-o", tmp_path / "back.lut", "--vkdt-target", "head"
    )
    assert code == 0
    assert err.startswith("warning: vkdt ce12d6ed cannot run this model: W = 64 weights in ")
    assert "in_width 32" in err
    back = (tmp_path / "back.lut").read_bytes()
    used = 16 + (24576 + 16 * 64) * 2
    assert back[:used] == raw[:used]  # header and every matrix
    assert back[used : 16 + 7 * 64 * 64 * 2] == bytes(7 * 64 * 64 * 2 + 16 - used)  # zeros
    text = back[16 + 7 * 64 * 64 * 2 :].decode()
    assert text.startswith(VKDT_SHIPPED_TRAILER + "\n")  # the same text, then kpn's section
    assert text[len(VKDT_SHIPPED_TRAILER) + 1 :] == format_kpn_section(
        state.config.model, state.config.infer
    )


def test_import_old_six_line_trailer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """kpn-t before 2024-01-18 wrote no activation and no loss: they come from the preset."""
    (tmp_path / "old.lut").write_bytes(vkdt_lut(32, 6, old_trailer(32, "softmax", "const")))
    argv = ["import", tmp_path / "old.lut", "--preset", "vkdt-head-w32", "-o", tmp_path / "o.pt"]
    assert run(capsys, *argv)[0] == 0
    config = load_checkpoint(tmp_path / "o.pt").config
    preset = load_config(CONFIGS / "vkdt-head-w32.toml")
    assert config.model.kernel_activation == "softmax"  # from the trailer
    assert config.model.alpha_activation == "const"
    assert config.model.activation == preset.model.activation  # from the preset
    assert config.train.loss == preset.train.loss
    # with --config, the file must only agree with it where it speaks
    code, _, err = run(
        capsys,
        "import",
        tmp_path / "old.lut",
        "--config",
        CONFIGS / "vkdt-2024-02.toml",
        "-o",
        tmp_path / "o2.pt",
    )
    assert (code, err) == (0, "")
    assert load_checkpoint(tmp_path / "o2.pt").config == load_config(CONFIGS / "vkdt-2024-02.toml")


def test_import_ambiguous_sigmoid_alpha(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """vkdt prints "sigmoid" for ALPHA_SIGMOID and ALPHA_CLAMPED."""
    text = full_trailer(32, "softmax", "sigmoid", "leaky relu", "SMAPE")
    (tmp_path / "s.lut").write_bytes(vkdt_lut(32, 6, text))
    code, _, err = run(
        capsys, "import", tmp_path / "s.lut", "--preset", "vkdt-head-w32", "-o", tmp_path / "s.pt"
    )
    assert code == 0
    assert load_checkpoint(tmp_path / "s.pt").config.model.alpha_activation == "sigmoid"
    assert_one_line_error(err, "clamped", starts="note: ")

    clamped = tmp_path / "clamped.toml"
    clamped.write_text(
        DESIGN.read_text(encoding="utf-8").replace(
            'alpha_activation = "sigmoid"', 'alpha_activation = "clamped"'
        ),
        encoding="utf-8",
    )
    code, _, err = run(
        capsys, "import", tmp_path / "s.lut", "--config", clamped, "-o", tmp_path / "c.pt"
    )
    assert (code, err) == (0, "")
    assert load_checkpoint(tmp_path / "c.pt").config.model.alpha_activation == "clamped"


# --- bad input: one line, exit 2, nothing written -----------------------------------------
def valid_lut(tmp_path: Path) -> bytes:
    """A valid W 32, 1 hidden layer file of the tiny config, trailer included."""
    config = tiny_config(tmp_path)
    model = KPN(config.model)
    load_weights(model.mlp, [torch.from_numpy(m) for m in tiny_matrices()])
    return lut_payload(model.mlp, config)


BLOCK = 16 + 2 * 32 * 32 * 2  # header and block of the tiny file

BAD_FILES = {
    "short": (lambda raw: raw[:10], ["10 bytes", "header"]),
    "truncated": (lambda raw: raw[: BLOCK - 2], ["truncated"]),
    "magic": (lambda raw: with_header(raw, magic=4321), ["wrong magic 4321"]),
    "version": (lambda raw: with_header(raw, version=1), ["wrong version 1"]),
    "datatype": (lambda raw: with_header(raw, datatype=0), ["datatype 0"]),
    "channels": (lambda raw: with_header(raw, channels=4), ["4 channels"]),
    "size": (lambda raw: with_header(raw, ht=48), ["32 x 48"]),
    "width": (lambda raw: with_header(raw, wd=24, ht=48), ["width 24"]),
    "no_hidden": (lambda raw: with_header(raw, ht=32), ["0 hidden layers"]),
    "garbage_trailer": (lambda raw: raw[:BLOCK] + b"hello\n", ["trailer"]),
    "trailer_vs_header": (
        lambda raw: (
            raw[:BLOCK]
            + full_trailer(64, "softmax", "sigmoid", "leaky relu", "SMAPE")
            .replace("6 hidden", "1 hidden")
            .encode()
            + b"\n"
        ),
        ["trailer says 1 hidden layers of width 64"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_import_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    corrupt, words = BAD_FILES[case]
    (tmp_path / "bad.lut").write_bytes(corrupt(valid_lut(tmp_path)))
    before = listing(tmp_path)
    code, out, err = run(
        capsys,
        "import",
        tmp_path / "bad.lut",
        "--config",
        tmp_path / "tiny.toml",
        "-o",
        tmp_path / "out.pt",
    )
    assert (code, out) == (2, "")
    assert_error_line(err, str(tmp_path / "bad.lut"), *words)
    assert listing(tmp_path) == before


CONTRADICTIONS = {
    "kernel": ("plain", "sigmoid", "leaky relu", "SMAPE", "model.kernel_activation = 'plain'"),
    "alpha": ("softmax", "const", "leaky relu", "SMAPE", "model.alpha_activation = 'const'"),
    "activation": ("softmax", "sigmoid", "relu", "SMAPE", "model.activation = 'relu'"),
    "loss": ("softmax", "sigmoid", "leaky relu", "L2", "train.loss = 'l2'"),
}


@pytest.mark.parametrize("case", sorted(CONTRADICTIONS))
def test_import_trailer_contradicts_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    *words, message = CONTRADICTIONS[case]
    (tmp_path / "w.lut").write_bytes(vkdt_lut(32, 6, full_trailer(32, *words)))
    before = listing(tmp_path)
    code, out, err = run(
        capsys, "import", tmp_path / "w.lut", "--config", DESIGN, "-o", tmp_path / "w.pt"
    )
    assert (code, out) == (2, "")
    assert_error_line(err, str(tmp_path / "w.lut"), f"trailer says {message}", str(DESIGN))
    assert listing(tmp_path) == before


def test_import_header_contradicts_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "w.lut").write_bytes(vkdt_lut(64, 6, VKDT_SHIPPED_TRAILER))
    before = listing(tmp_path)
    code, _, err = run(
        capsys, "import", tmp_path / "w.lut", "--config", DESIGN, "-o", tmp_path / "w.pt"
    )
    assert code == 2
    assert_error_line(err, "header says model.width = 64", "says 32")
    assert listing(tmp_path) == before


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (vkdt_lut(32, 6, None), ["no trailer", "--config", "--preset vkdt-head-w32"]),
        (
            vkdt_lut(48, 6, full_trailer(48, "plain", "const", "leaky relu", "SMAPE")),
            ["does not say which model", "--config", "--preset NAME"],
        ),
        (
            vkdt_lut(32, 6, full_trailer(32, "sigmoid", "const", "leaky relu", "SMAPE")),
            ["APPLY_SIGMOID"],
        ),
    ],
    ids=["no_trailer", "no_preset", "kernel_sigmoid"],
)
def test_import_without_config_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], raw: bytes, words: list[str]
) -> None:
    (tmp_path / "w.lut").write_bytes(raw)
    before = listing(tmp_path)
    code, _, err = run(capsys, "import", tmp_path / "w.lut", "-o", tmp_path / "w.pt")
    assert code == 2
    assert_error_line(err, str(tmp_path / "w.lut"), *words)
    assert listing(tmp_path) == before


def test_import_missing_file_and_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "import", tmp_path / "none.lut", "-o", tmp_path / "w.pt")
    assert code == 2
    assert_error_line(err, "none.lut", "no such file")
    (tmp_path / "w.lut").write_bytes(vkdt_lut(32, 6, None))
    code, _, err = run(
        capsys,
        "import",
        tmp_path / "w.lut",
        "--config",
        tmp_path / "no.toml",
        "-o",
        tmp_path / "w.pt",
    )
    assert code == 2
    assert_error_line(err, "no.toml")
    assert not (tmp_path / "w.pt").exists()


# --- kpn's section: files kpn wrote say their model ------------------------------------
def test_import_with_section_refuses_preset_and_other_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load_config(CONFIGS / "vkdt-head-w32.toml")
    save_model(tmp_path / "w.pt", config)
    assert run(capsys, "export", tmp_path / "w.pt", "-o", tmp_path / "w.lut")[0] == 0
    # same width and trailer items, another pyramid: the section tells them apart
    other = tmp_path / "other.toml"
    # the preset resolved (it names a base config), every key written out
    other.write_text(config_to_toml(config).replace('down = "binomial5"', 'down = "box2"'))
    before = listing(tmp_path)
    code, _, err = run(
        capsys, "import", tmp_path / "w.lut", "--preset", "vkdt-head-w32", "-o", tmp_path / "i.pt"
    )
    assert code == 2
    assert_error_line(err, "--preset vkdt-head-w32", "w.lut", "leave --preset out")
    code, _, err = run(
        capsys, "import", tmp_path / "w.lut", "--config", other, "-o", tmp_path / "i.pt"
    )
    assert code == 2
    assert_error_line(err, "other.toml", "model.down = 'box2'", "'binomial5'", "kpn section")
    assert listing(tmp_path) == before
    code, _, err = run(
        capsys,
        "import",
        tmp_path / "w.lut",
        "--config",
        CONFIGS / "vkdt-head-w32.toml",
        "-o",
        tmp_path / "i.pt",
    )
    assert (code, err) == (0, "")
    assert load_checkpoint(tmp_path / "i.pt").config == config


def test_import_unknown_preset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "w.lut").write_bytes(vkdt_lut(32, 6, VKDT_SHIPPED_TRAILER.replace("64", "32")))
    for name in ("nope", "../configs/design"):
        code, _, err = run(
            capsys, "import", tmp_path / "w.lut", "--preset", name, "-o", tmp_path / "w.pt"
        )
        assert code == 2
        assert_error_line(err, f"--preset {name}: no such preset", "vkdt-head-w32")
    assert not (tmp_path / "w.pt").exists()


# --- vkdt HEAD's inference layout (--vkdt-layout head) -----------------------------------
def test_import_vkdt_file_in_the_head_layout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file without kpn's section is read as --vkdt-layout says: head reads the later
    matrices from float 2048 (hand-checked offsets on vkdt_lut's random block)."""
    raw = vkdt_lut(64, 2, None, seed=4)
    (tmp_path / "v.lut").write_bytes(raw)
    (tmp_path / "c.toml").write_text(config_to_toml(head_preset()))
    argv = ["import", tmp_path / "v.lut", "--config", tmp_path / "c.toml", "-o", tmp_path / "h.pt"]
    code, out, err = run(capsys, *argv, "--vkdt-layout", "head")
    assert (code, err) == (0, "") and "(head layout)" in out
    state = load_checkpoint(tmp_path / "h.pt")
    block = np.frombuffer(raw, "<f2", count=3 * 64 * 64, offset=16).astype(np.float32)
    np.testing.assert_array_equal(
        state.model["mlp.layers.0.weight"].numpy(), block[:4096].reshape(64, 64)
    )
    np.testing.assert_array_equal(
        state.model["mlp.layers.1.weight"].numpy(), block[2048:6144].reshape(64, 64)
    )
    np.testing.assert_array_equal(
        state.model["mlp.layers.2.weight"].numpy(), block[6144:7168].reshape(16, 64)
    )
    code, out, _ = run(capsys, *argv[:-1], tmp_path / "k.pt")
    assert code == 0 and "(kpn-t layout)" in out
    kpn_t = load_checkpoint(tmp_path / "k.pt")
    np.testing.assert_array_equal(
        kpn_t.model["mlp.layers.1.weight"].numpy(), block[4096:8192].reshape(64, 64)
    )
