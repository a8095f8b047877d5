"""Tests for ``python -m kpn export`` / ``import`` and kpn.vkdt.export (SPEC 9, 10).

Golden bytes of a hand-built export, files laid out as vkdt's kpn-t and o-lut write them
(built here with struct and numpy, independently of kpn.vkdt.lut), round trips, and every bad
input of issue 7: one line on stderr, exit code 2, nothing written.
"""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from kpn.__main__ import main
from kpn.config import Config, apply_overrides, config_to_toml, load_config
from kpn.errors import KpnError
from kpn.infer.weights import load_weights as load_weights_for_inference
from kpn.io.checkpoint import TrainingState, load_checkpoint, save_checkpoint
from kpn.model.mlp import load_weights
from kpn.model.network import KPN
from kpn.train.optim import make_optimizer
from kpn.vkdt.export import (
    RUN_CHECKPOINT,
    checkpoint_from_lut,
    config_for_lut,
    inference_layout_warning,
    lut_payload,
)
from kpn.vkdt.graph import INFER_PFM, INFER_RAW, TRAIN, graph_files
from kpn.vkdt.lut import KPN_SECTION_HEAD, format_kpn_section, read_lut

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DESIGN = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "design-vkdt.toml"  # vkdt-runnable

# kpn-t's text for its shipped config.h, as kpn-t/main.c's init() prints it (o-lut adds "\n")
SHIPPED_TRAILER = (
    "lut contains weights for\n"
    "multi-level kernel predicting mlp with:\n"
    "6 hidden layers\n"
    "64 network width\n"
    "plain kernel weight activation\n"
    "const alpha blending activation\n"
    "leaky relu mlp activation\n"
    "SMAPE loss\n"
)


# --- helpers -----------------------------------------------------------------------------
def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_error_line(err: str, *words: str) -> None:
    """Exactly one line, ``error: ...``, naming ``words``, and no traceback."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for word in words:
        assert word in lines[0], (word, lines[0])


def listing(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` with its bytes: 'nothing written' means this is unchanged."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def tiny_config(tmp_path: Path, **model: object) -> Config:
    """The design's settings with one hidden layer of width 32: a 2 x 32 x 32 block."""
    table = "\n".join(f"{key} = {value!r}".replace("'", '"') for key, value in model.items())
    path = tmp_path / "tiny.toml"
    path.write_text(f"[model]\nwidth = 32\nn_hidden = 1\n{table}\n", encoding="utf-8")
    return load_config(path)


def save_model(path: Path, config: Config, matrices: list[np.ndarray] | None = None) -> Path:
    """A checkpoint of ``config`` with these weights (or vkdt's random ones), step 3."""
    torch.manual_seed(0)
    model = KPN(config.model)
    if matrices is not None:
        load_weights(model.mlp, [torch.from_numpy(m) for m in matrices])
    optimizer = make_optimizer(model.parameters(), config.train)
    state = TrainingState(
        config, model.state_dict(), optimizer.state_dict(), 3, 0, 48, torch.get_rng_state()
    )
    save_checkpoint(path, state)
    return path


def vkdt_lut(width: int, n_hidden: int, trailer: str | None, seed: int = 0) -> bytes:
    """A file as kpn-t + o-lut write it: header, f16 block whose unused rows hold random
    values (vkdt initialises the whole buffer), then the text and one newline."""
    header = struct.pack("<IHBBII", 1234, 2, 1, 16, width, (n_hidden + 1) * width)
    rng = np.random.default_rng(seed)
    block = (rng.integers(-512, 512, size=(n_hidden + 1) * width * width) / 256).astype("<f2")
    return header + block.tobytes() + (b"" if trailer is None else trailer.encode() + b"\n")


def old_trailer(width: int, kernel: str, alpha: str) -> str:
    """kpn-t's text before 2024-01-18: six lines, no mlp activation, no loss."""
    return (
        "lut contains weights for\nmulti-level kernel predicting mlp with:\n"
        f"6 hidden layers\n{width} network width\n"
        f"{kernel} kernel weight activation\n{alpha} alpha blending activation"
    )


def full_trailer(width: int, kernel: str, alpha: str, activation: str, loss: str) -> str:
    return old_trailer(width, kernel, alpha) + f"\n{activation} mlp activation\n{loss} loss"


# --- golden bytes ------------------------------------------------------------------------
def tiny_matrices() -> list[np.ndarray]:
    """W0[o][i] = (32o + i)/1024 and W_out[o][i] = -(32o + i + 1)/512: exact in f16."""
    w0 = np.arange(32 * 32, dtype=np.float32).reshape(32, 32) / 1024
    w_out = -(np.arange(16 * 32, dtype=np.float32).reshape(16, 32) + 1) / 512
    return [w0, w_out]


def test_export_golden_bytes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tiny_config(tmp_path, features="star15")  # vkdt's input: no warning
    ckpt = save_model(tmp_path / "tiny.pt", config, tiny_matrices())
    code, out, err = run(capsys, "export", ckpt, "-o", tmp_path / "tiny.lut")
    assert (code, err) == (0, "")
    assert "W 32, 1 hidden layers, f16" in out
    raw = (tmp_path / "tiny.lut").read_bytes()
    # magic 1234, version 2, 1 channel, datatype 16 (ssbo f16), wd 32, ht (1+1)*32 = 64
    assert raw[:16] == bytes.fromhex("d2040000 0200 01 10 20000000 40000000")
    # W0 row-major [out][in]: f16 0, 1/1024, 2/1024, 3/1024; W0[0][31] = 31/1024
    assert raw[16:24] == bytes.fromhex("0000 0014 0018 001a")
    assert raw[16 + 31 * 2 : 16 + 32 * 2] == bytes.fromhex("c027")
    # W0[31][31] = 1023/1024 is float 1023
    assert raw[16 + 1023 * 2 : 16 + 1024 * 2] == bytes.fromhex("fe3b")
    # W_out at float W*in_width = 1024: -1/512, -2/512; W_out[15][31] = -1 is float 1535
    assert raw[16 + 2048 : 16 + 2052] == bytes.fromhex("0098 009c")
    assert raw[16 + 1535 * 2 : 16 + 1536 * 2] == bytes.fromhex("00bc")
    # the rest of the last 32 x 32 block (floats 1536..2047) is zeros
    assert raw[16 + 1536 * 2 : 16 + 4096] == bytes(1024)
    # kpn-t's trailer for the design's settings, with o-lut's final newline, first and
    # byte for byte as before kpn's section existed
    vkdt_text = (
        b"lut contains weights for\n"
        b"multi-level kernel predicting mlp with:\n"
        b"1 hidden layers\n"
        b"32 network width\n"
        b"softmax kernel weight activation\n"
        b"sigmoid alpha blending activation\n"
        b"leaky relu mlp activation\n"
        b"SMAPE loss\n"
    )
    assert raw[16 + 4096 : 16 + 4096 + len(vkdt_text)] == vkdt_text
    # then kpn's section: the whole [model] and [infer]
    section = raw[16 + 4096 + len(vkdt_text) :].decode()
    assert section == format_kpn_section(config.model, config.infer)
    assert section.startswith(f"{KPN_SECTION_HEAD}\n[model]\nlevels = 4\n")
    assert '\nfeatures = "star15"\n' in section
    assert "\n[infer]\nlevels = 0\n" in section


def test_export_golden_f32_header(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = save_model(tmp_path / "tiny.pt", tiny_config(tmp_path), tiny_matrices())
    code, _, _ = run(capsys, "export", ckpt, "-o", tmp_path / "t.lut", "--dtype", "f32")
    assert code == 0
    raw = (tmp_path / "t.lut").read_bytes()
    assert raw[:16] == bytes.fromhex("d2040000 0200 01 11 20000000 40000000")  # 17: ssbo f32
    assert raw[16:28] == struct.pack("<3f", 0.0, 1 / 1024, 2 / 1024)
    assert raw[16 + 4096 : 16 + 4100] == struct.pack("<f", -1 / 512)
    assert raw[16 + 8192 :].startswith(b"lut contains weights for\n")


def test_export_from_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tiny_config(tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    save_model(run_dir / RUN_CHECKPOINT, config, tiny_matrices())
    (run_dir / "config.toml").write_text(config_to_toml(config), encoding="utf-8")
    save_model(tmp_path / "file.pt", config, tiny_matrices())
    assert run(capsys, "export", run_dir, "-o", tmp_path / "a.lut")[0] == 0
    assert run(capsys, "export", tmp_path / "file.pt", "-o", tmp_path / "b.lut")[0] == 0
    assert (tmp_path / "a.lut").read_bytes() == (tmp_path / "b.lut").read_bytes()


def test_run_checkpoint_name_is_the_trainers() -> None:
    from kpn.train.loop import CHECKPOINT

    assert RUN_CHECKPOINT == CHECKPOINT


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


def test_imported_checkpoint_resumes_like_a_training_checkpoint(tmp_path: Path) -> None:
    """The state train.py --resume loads: model and a fresh optimiser of the config."""
    config = load_config(DESIGN)
    source = load_checkpoint(save_model(tmp_path / "a.pt", config))
    model = KPN(config.model)
    model.load_state_dict(source.model)
    (tmp_path / "a.lut").write_bytes(lut_payload(model.mlp, config))
    state = checkpoint_from_lut(read_lut(tmp_path / "a.lut"), config)
    resumed = KPN(config.model)
    resumed.load_state_dict(state.model)
    for got, want in zip(resumed.mlp.weights, model.mlp.weights, strict=True):
        # the file holds float16: the weights come back rounded to it
        torch.testing.assert_close(got, want.half().float(), rtol=0, atol=0)
    optimizer = make_optimizer(resumed.parameters(), config.train)
    optimizer.load_state_dict(state.optimizer)
    assert optimizer.state_dict()["state"] == {}  # fresh: no moments yet
    assert state.rng.dtype == torch.uint8


def test_imported_checkpoint_trains_with_train_py_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kpn.train.loop import main as train_main

    config = tiny_config(tmp_path, features="star15")
    save_model(tmp_path / "t.pt", config, tiny_matrices())
    assert run(capsys, "export", tmp_path / "t.pt", "-o", tmp_path / "t.lut")[0] == 0
    assert (
        run(
            capsys,
            "import",
            tmp_path / "t.lut",
            "--config",
            tmp_path / "tiny.toml",
            "-o",
            tmp_path / "i.pt",
        )[0]
        == 0
    )
    overrides = ["train.steps=1", "data.workers=0", "data.batch=1", "data.validation_count=1"]
    argv = ["--resume", str(tmp_path / "i.pt"), "--out", str(tmp_path / "run")]
    assert train_main([*argv, *(a for o in overrides for a in ("--set", o))]) == 0
    assert load_checkpoint(tmp_path / "run" / RUN_CHECKPOINT).step == 1


# --- files as vkdt writes them -----------------------------------------------------------
def test_import_vkdt_shipped_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """kpn-t's shipped build (W 64): preset vkdt-head; weights kept, the random tail not."""
    raw = vkdt_lut(64, 6, SHIPPED_TRAILER.rstrip("\n"))
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

    code, _, err = run(capsys, "export", tmp_path / "w.pt", "-o", tmp_path / "back.lut")
    assert code == 0
    assert err.startswith("warning: W = 64 weights are written in kpn-t's layout")
    assert "in_width 32" in err
    back = (tmp_path / "back.lut").read_bytes()
    used = 16 + (24576 + 16 * 64) * 2
    assert back[:used] == raw[:used]  # header and every matrix
    assert back[used : 16 + 7 * 64 * 64 * 2] == bytes(7 * 64 * 64 * 2 + 16 - used)  # zeros
    text = back[16 + 7 * 64 * 64 * 2 :].decode()
    assert text.startswith(SHIPPED_TRAILER)  # the same text, then kpn's section
    assert text[len(SHIPPED_TRAILER) :] == format_kpn_section(
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
    assert err.startswith("note: ") and "clamped" in err and len(err.splitlines()) == 1

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


def test_config_for_lut_without_trailer_takes_config(tmp_path: Path) -> None:
    (tmp_path / "bare.lut").write_bytes(vkdt_lut(32, 6, None))
    lut = read_lut(tmp_path / "bare.lut")
    config = load_config(DESIGN)
    imported = config_for_lut(lut, config, "design")
    assert (imported.config, imported.source, imported.notes) == (config, "design", ())
    with pytest.raises(KpnError, match="no trailer"):
        config_for_lut(lut)
    with pytest.raises(KpnError, match="not both"):
        config_for_lut(lut, config, "design", "vkdt-head-w32")


def test_inference_layout_warning() -> None:
    assert inference_layout_warning(load_config(CONFIGS / "vkdt-head-w32.toml").model) is None
    message = inference_layout_warning(load_config(CONFIGS / "vkdt-head.toml").model)
    assert message is not None and "in_width 32" in message and "\n" not in message


def test_export_w32_has_no_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_model(tmp_path / "w.pt", load_config(CONFIGS / "vkdt-head-w32.toml"))
    code, _, err = run(capsys, "export", tmp_path / "w.pt", "-o", tmp_path / "w.lut")
    assert (code, err) == (0, "")


# --- --vkdt-cfg --------------------------------------------------------------------------
def test_vkdt_cfg_writes_the_graphs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = load_config(CONFIGS / "vkdt-head-w32.toml")
    save_model(tmp_path / "w.pt", config)
    code, out, err = run(
        capsys,
        "export",
        tmp_path / "w.pt",
        "-o",
        tmp_path / "weights.lut",
        "--vkdt-cfg",
        tmp_path / "vkdt",
        "--noise",
        "1000",
        "2.5",
    )
    assert (code, err) == (0, "")
    expected = graph_files(
        config,
        "../weights.lut",
        noise_a=1000.0,
        noise_b=2.5,
        weights_out="weights-vkdt",
        init_weights=None,
    )
    assert sorted(p.name for p in (tmp_path / "vkdt").iterdir()) == sorted(
        [INFER_PFM, INFER_RAW, TRAIN]
    )
    for graph in expected:
        assert (tmp_path / "vkdt" / graph.name).read_text(encoding="utf-8") == graph.text
        assert f"wrote {tmp_path / 'vkdt' / graph.name}" in out
    pfm = (tmp_path / "vkdt" / INFER_PFM).read_text(encoding="utf-8")
    assert "param:i-lut:w:filename:../weights.lut\n" in pfm
    assert "param:kpn:01:noise a:1000.0\nparam:kpn:01:noise b:2.5\n" in pfm


def test_vkdt_cfg_beside_the_lut_and_nprof(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_model(tmp_path / "w.pt", load_config(CONFIGS / "vkdt-head-w32.toml"))
    nprof = tmp_path / "Canon-EOS R5-6400.nprof"
    nprof.write_text("0.0001 0.00002\n", encoding="utf-8")  # vkdt's today: [0,1]
    code, _, err = run(
        capsys,
        "export",
        tmp_path / "w.pt",
        "-o",
        tmp_path / "w.lut",
        "--vkdt-cfg",
        tmp_path,
        "--nprof",
        nprof,
        "--nprof-scale",
        "dng",
    )
    assert (code, err) == (0, "")
    pfm = (tmp_path / INFER_PFM).read_text(encoding="utf-8")
    assert "param:i-lut:w:filename:w.lut\n" in pfm
    a, b = 0.0001 * 65535**2, 0.00002 * 65535
    assert f"param:kpn:01:noise a:{a!r}\nparam:kpn:01:noise b:{b!r}\n" in pfm


def test_vkdt_cfg_init_lut_and_no_noise(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = apply_overrides(
        load_config(CONFIGS / "vkdt-head-w32.toml"), [f"train.init={tmp_path / 'start.lut'}"]
    )
    save_model(tmp_path / "w.pt", config)
    code, _, err = run(
        capsys, "export", tmp_path / "w.pt", "-o", tmp_path / "w.lut", "--vkdt-cfg", tmp_path / "g"
    )
    assert code == 0
    assert err.startswith("note: no --noise or --nprof")
    train = (tmp_path / "g" / TRAIN).read_text(encoding="utf-8")
    assert "param:kpn-t:01:init:0\n" in train
    assert train.endswith("param:i-lut:wcp:filename:../start.lut\n")


# --- bad input: one line, exit 2, nothing written -----------------------------------------
def valid_lut(tmp_path: Path) -> bytes:
    """A valid W 32, 1 hidden layer file of the tiny config, trailer included."""
    config = tiny_config(tmp_path)
    model = KPN(config.model)
    load_weights(model.mlp, [torch.from_numpy(m) for m in tiny_matrices()])
    return lut_payload(model.mlp, config)


def with_header(raw: bytes, **fields: int) -> bytes:
    names = ("magic", "version", "channels", "datatype", "wd", "ht")
    values = dict(zip(names, struct.unpack_from("<IHBBII", raw), strict=True))
    values.update(fields)
    return struct.pack("<IHBBII", *values.values()) + raw[16:]


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
    (tmp_path / "w.lut").write_bytes(vkdt_lut(64, 6, SHIPPED_TRAILER.rstrip("\n")))
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


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["{tmp}/none.pt", "-o", "{tmp}/w.lut"], ["none.pt", "not found"]),
        (["{tmp}/emptyrun", "-o", "{tmp}/w.lut"], ["emptyrun", "checkpoint.pt"]),
        (["{tmp}/notes.txt", "-o", "{tmp}/w.lut"], ["notes.txt", "not a readable checkpoint"]),
        (["{tmp}/ok.pt", "-o", "{tmp}/missing/w.lut"], ["missing/w.lut", "cannot write"]),
        (
            ["{tmp}/ok.pt", "-o", "{tmp}/w.lut", "--dtype", "f32", "--vkdt-cfg", "{tmp}/g"],
            ["--vkdt-cfg", "f16"],
        ),
        (
            ["{tmp}/ok.pt", "-o", "{tmp}/w.lut", "--vkdt-cfg", "{tmp}/notes.txt"],
            ["notes.txt", "not a folder"],
        ),
        (
            ["{tmp}/ok.pt", "-o", "{tmp}/w.lut", "--vkdt-cfg", "{tmp}/g", "--noise", "-1", "2"],
            ["--noise", ">= 0"],
        ),
        (["{tmp}/ok.pt", "-o", "{tmp}/w.lut", "--noise", "1", "2"], ["--noise", "--vkdt-cfg"]),
        (["{tmp}/ok.pt", "-o", "{tmp}/w.lut", "--nprof-scale", "dng"], ["--nprof-scale"]),
        (
            [
                "{tmp}/ok.pt",
                "-o",
                "{tmp}/w.lut",
                "--vkdt-cfg",
                "{tmp}/g",
                "--nprof",
                "{tmp}/none.nprof",
            ],
            ["none.nprof"],
        ),
        (
            [
                "{tmp}/ok.pt",
                "-o",
                "{tmp}/w.lut",
                "--vkdt-cfg",
                "{tmp}/g",
                "--nprof",
                "{tmp}/Canon-R5-100.nprof",
            ],
            ["Canon-R5-100.nprof", "scale"],
        ),
    ],
    ids=[
        "missing",
        "run_without_checkpoint",
        "not_checkpoint",
        "unwritable",
        "f32_cfg",
        "cfg_is_file",
        "negative_noise",
        "noise_without_cfg",
        "scale_without_nprof",
        "missing_nprof",
        "unmarked_nprof",
    ],
)
def test_export_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], words: list[str]
) -> None:
    save_model(tmp_path / "ok.pt", tiny_config(tmp_path))
    (tmp_path / "emptyrun").mkdir()
    (tmp_path / "notes.txt").write_text("not a checkpoint\n", encoding="utf-8")
    (tmp_path / "Canon-R5-100.nprof").write_text("1.5 0.25\n", encoding="utf-8")  # no scale
    before = listing(tmp_path)
    code, out, err = run(capsys, "export", *(a.format(tmp=tmp_path) for a in args))
    assert (code, out) == (2, "")
    assert_error_line(err, *words)
    assert listing(tmp_path) == before
    assert not (tmp_path / "g").exists()


def test_export_weights_beyond_f16(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    big = tiny_matrices()
    big[1][3, 4] = 1e6  # float16 ends at 65504
    save_model(tmp_path / "big.pt", tiny_config(tmp_path), big)
    before = listing(tmp_path)
    code, _, err = run(capsys, "export", tmp_path / "big.pt", "-o", tmp_path / "w.lut")
    assert code == 2
    assert_error_line(err, "W_out", "f16 range")
    assert listing(tmp_path) == before
    # f32 holds them
    assert (
        run(capsys, "export", tmp_path / "big.pt", "-o", tmp_path / "w.lut", "--dtype", "f32")[0]
        == 0
    )


def test_export_checkpoint_whose_weights_do_not_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = load_checkpoint(save_model(tmp_path / "a.pt", tiny_config(tmp_path)))
    model = dict(state.model)
    del model["mlp.layers.1.weight"]
    save_checkpoint(tmp_path / "a.pt", TrainingState(**{**state.__dict__, "model": model}))
    before = listing(tmp_path)
    code, _, err = run(capsys, "export", tmp_path / "a.pt", "-o", tmp_path / "w.lut")
    assert code == 2
    assert_error_line(err, "a.pt", "do not fit")
    assert listing(tmp_path) == before


# --- kpn's section: files kpn wrote say their model ------------------------------------
def test_export_of_kpn_only_features_warns_and_reads_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The design's star15_snr: one warning line, the file written, and kpn imports it
    without --config as the same model."""
    config = apply_overrides(load_config(CONFIGS / "design.toml"), ["model.width=32"])
    assert config.model.features == "star15_snr"
    save_model(tmp_path / "d.pt", config)
    code, out, err = run(capsys, "export", tmp_path / "d.pt", "-o", tmp_path / "d.lut")
    assert code == 0 and "wrote" in out
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: "), err
    assert "star15_snr" in lines[0] and "vkdt cannot run" in lines[0]
    lut = read_lut(tmp_path / "d.lut")
    assert (lut.model, lut.infer) == (config.model, config.infer)
    code, out, err = run(capsys, "import", tmp_path / "d.lut", "-o", tmp_path / "i.pt")
    assert (code, err) == (0, "")
    assert "kpn section" in out
    state = load_checkpoint(tmp_path / "i.pt")
    assert (state.config.model, state.config.infer) == (config.model, config.infer)


def test_inference_layout_warning_for_features() -> None:
    design = dataclasses.replace(load_config(CONFIGS / "design.toml").model, width=32)
    message = inference_layout_warning(design)
    assert message is not None and "star15_snr" in message and "in_width" not in message
    both = inference_layout_warning(dataclasses.replace(design, width=64))
    assert both is not None and "star15_snr" in both and "in_width 32" in both
    assert "\n" not in both
    assert inference_layout_warning(dataclasses.replace(design, features="star15")) is None


def test_import_with_section_refuses_preset_and_other_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load_config(CONFIGS / "vkdt-head-w32.toml")
    save_model(tmp_path / "w.pt", config)
    assert run(capsys, "export", tmp_path / "w.pt", "-o", tmp_path / "w.lut")[0] == 0
    # same width and trailer items, another pyramid: the section tells them apart
    other = tmp_path / "other.toml"
    other.write_text(
        (CONFIGS / "vkdt-head-w32.toml").read_text().replace('down = "binomial5"', 'down = "box2"')
    )
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
    (tmp_path / "w.lut").write_bytes(vkdt_lut(32, 6, SHIPPED_TRAILER.replace("64", "32")))
    for name in ("nope", "../configs/design"):
        code, _, err = run(
            capsys, "import", tmp_path / "w.lut", "--preset", name, "-o", tmp_path / "w.pt"
        )
        assert code == 2
        assert_error_line(err, f"--preset {name!r}", "no such preset", "vkdt-head-w32")
    assert not (tmp_path / "w.pt").exists()


def test_config_for_lut_restores_the_section_exactly(tmp_path: Path) -> None:
    """Every [model] and [infer] key, not only those kpn-t's trailer records."""
    config = apply_overrides(
        load_config(DESIGN),
        ["model.levels=5", "model.down=binomial5", "model.precision=vkdt-f16", "infer.tile=64"],
    )
    model = KPN(config.model)
    (tmp_path / "w.lut").write_bytes(lut_payload(model.mlp, config))
    imported = config_for_lut(read_lut(tmp_path / "w.lut"))
    assert imported.config.model == config.model
    assert imported.config.infer == config.infer
    assert imported.config.train.loss == config.train.loss
    assert (imported.source, imported.notes) == ("the file's kpn section", ())


# --- vkdt HEAD's inference layout (--vkdt-layout head) -----------------------------------
def head_preset(*overrides: str) -> Config:
    """vkdt HEAD as shipped (W 64, patch8x8), two hidden layers to keep the files small."""
    return apply_overrides(
        load_config(CONFIGS / "vkdt-head.toml"), ["model.n_hidden=2", *overrides]
    )


def test_export_head_layout_runs_as_trained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A W 64 model trained with model.vkdt_head_layout exports in vkdt HEAD's layout: the
    file read as vkdt's kpn module reads it (W0 at 0, later matrices from float 2048) is
    the trained network, and import/infer read it back so (kpn's section says head)."""
    config = head_preset("model.vkdt_head_layout=true")
    ckpt = save_model(tmp_path / "m.pt", config)
    code, out, err = run(
        capsys, "export", ckpt, "-o", tmp_path / "w.lut", "--vkdt-layout", "head",
        "--vkdt-cfg", tmp_path / "cfg", "--noise", "100", "2",
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert "the others from float 2048 (vkdt HEAD's kpn module's layout)" in out
    model = KPN(config.model)
    model.load_state_dict(load_checkpoint(ckpt).model)
    trained = [w.detach().to(torch.float16).float().numpy() for w in model.mlp.weights]
    assert not trained[1][:, 32:].any()  # units 32.. feed nothing
    raw = (tmp_path / "w.lut").read_bytes()
    block = np.frombuffer(raw, "<f2", count=3 * 64 * 64, offset=16).astype(np.float32)
    np.testing.assert_array_equal(block[:2048], trained[0][:32].reshape(-1))
    np.testing.assert_array_equal(block[2048:6144], trained[1].reshape(-1))
    np.testing.assert_array_equal(block[6144:7168], trained[2].reshape(-1))
    assert read_lut(tmp_path / "w.lut").layout == "head"
    graph = (tmp_path / "cfg" / INFER_PFM).read_text()
    assert "in_width" not in graph
    # import reads it in its layout: the same outputs as the trained model
    code, out, err = run(capsys, "import", tmp_path / "w.lut", "-o", tmp_path / "back.pt")
    assert (code, err) == (0, "") and "(head layout)" in out
    back = KPN(config.model)
    back.load_state_dict(load_checkpoint(tmp_path / "back.pt").model)
    noisy = torch.rand(1, 3, 40, 36, generator=torch.Generator().manual_seed(5))
    profile = torch.tensor([[100.0, 2.0]])
    loaded = load_weights_for_inference(tmp_path / "w.lut").model  # infer.py's reading
    with torch.no_grad():
        torch.testing.assert_close(back(noisy, profile), model(noisy, profile), rtol=0, atol=0)
        torch.testing.assert_close(loaded(noisy, profile), model(noisy, profile), rtol=0, atol=0)
    # exported again: the same bytes
    code, _, _ = run(capsys, "export", tmp_path / "back.pt", "-o", tmp_path / "again.lut",
                     "--vkdt-layout", "head")  # fmt: skip
    assert code == 0 and (tmp_path / "again.lut").read_bytes() == raw
    # the layout the file says, or one line
    code, _, err = run(
        capsys, "import", tmp_path / "w.lut", "--vkdt-layout", "kpn-t", "-o", tmp_path / "x.pt"
    )
    assert code == 2
    assert_error_line(err, "--vkdt-layout kpn-t", "head layout")
    assert not (tmp_path / "x.pt").exists()


def test_export_head_layout_refuses_a_network_it_cannot_hold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """vkdt HEAD as shipped trains every first-layer unit: no head-layout file holds it."""
    ckpt = save_model(tmp_path / "m.pt", head_preset())
    before = listing(tmp_path)
    code, out, err = run(
        capsys, "export", ckpt, "-o", tmp_path / "w.lut", "--vkdt-layout", "head",
        "--vkdt-cfg", tmp_path / "cfg",
    )  # fmt: skip
    assert (code, out) == (2, "")
    assert_error_line(err, "w.lut", "float 2048", "model.vkdt_head_layout = true")
    assert listing(tmp_path) == before
    # kpn-t's layout exports it, with the warning that names the way to vkdt
    code, _, err = run(capsys, "export", ckpt, "-o", tmp_path / "w.lut")
    assert code == 0 and "--vkdt-layout head" in err


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
