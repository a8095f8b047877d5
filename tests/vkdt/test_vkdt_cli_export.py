"""Tests for ``python -m kpn export`` (kpn.vkdt.cli; docs/design.md §9, §10).

Golden bytes of a hand-built export, the vkdt graphs of ``--vkdt-cfg``, the warnings for
models vkdt cannot run, the ``--vkdt-layout head`` export, and every bad input of issue 7:
one line on stderr, exit code 2, nothing written.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from kpn.config import apply_overrides, config_to_toml, load_config
from kpn.infer.weights import load_weights as load_weights_for_inference
from kpn.io.checkpoint import TrainingState, load_checkpoint, save_checkpoint
from kpn.model.network import KPN
from kpn.vkdt.graph import INFER_PFM, INFER_RAW, TRAIN, graph_files
from kpn.vkdt.lut import read_lut
from kpn.vkdt.lut_text import KPN_SECTION_HEAD, format_kpn_section

from conftest import assert_error_line, assert_one_line_error
from vkdt_shared import CONFIGS, head_preset, listing, run, save_model, tiny_config, tiny_matrices


# --- golden bytes ------------------------------------------------------------------------
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
    save_model(run_dir / "checkpoint.pt", config, tiny_matrices())
    (run_dir / "config.toml").write_text(config_to_toml(config), encoding="utf-8")
    save_model(tmp_path / "file.pt", config, tiny_matrices())
    assert run(capsys, "export", run_dir, "-o", tmp_path / "a.lut")[0] == 0
    assert run(capsys, "export", tmp_path / "file.pt", "-o", tmp_path / "b.lut")[0] == 0
    assert (tmp_path / "a.lut").read_bytes() == (tmp_path / "b.lut").read_bytes()


# --- warnings ----------------------------------------------------------------------------
def test_export_w32_has_no_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """vkdt HEAD's own W 32 preset runs on vkdt HEAD, needing only the patch that compiles
    WIDTH 32; the series, which fixes HEAD's kernel store, does not run it."""
    save_model(tmp_path / "w.pt", load_config(CONFIGS / "vkdt-head-w32.toml"))
    code, out, err = run(
        capsys, "export", tmp_path / "w.pt", "-o", tmp_path / "w.lut", "--vkdt-target", "head"
    )
    assert (code, err) == (0, "")
    assert "runs in vkdt ce12d6ed, needing 0001 (input.glsl included after" in out
    code, out, err = run(capsys, "export", tmp_path / "w.pt", "-o", tmp_path / "w.lut")
    assert code == 0
    assert_one_line_error(err, "patch series cannot run", "(--vkdt-target head runs it)", "0002")


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
        "--vkdt-target",
        "head",
    )
    assert (code, err) == (0, "")
    expected = graph_files(
        config,
        "../weights.lut",
        noise_a=1000.0,
        noise_b=2.5,
        weights_out="weights-vkdt",
        init_weights=None,
        target="head",
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
        "--vkdt-target",
        "head",
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
        capsys, "export", tmp_path / "w.pt", "-o", tmp_path / "w.lut", "--vkdt-cfg",
        tmp_path / "g", "--vkdt-target", "head",
    )  # fmt: skip
    assert code == 0
    assert err.startswith("note: no --noise or --nprof")
    train = (tmp_path / "g" / TRAIN).read_text(encoding="utf-8")
    assert "param:kpn-t:01:init:0\n" in train
    assert train.endswith("param:i-lut:wcp:filename:../start.lut\n")


# --- bad input: one line, exit 2, nothing written -----------------------------------------
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
    """The design's star15_snr for vkdt HEAD: one warning line, the file written, and kpn
    imports it without --config as the same model."""
    config = apply_overrides(load_config(CONFIGS / "design.toml"), ["model.width=32"])
    assert config.model.features == "star15_snr"
    save_model(tmp_path / "d.pt", config)
    code, out, err = run(
        capsys, "export", tmp_path / "d.pt", "-o", tmp_path / "d.lut", "--vkdt-target", "head"
    )
    assert code == 0 and "wrote" in out
    assert_one_line_error(
        err, "vkdt ce12d6ed cannot run", "star15_snr", "patch 0005", starts="warning: "
    )
    lut = read_lut(tmp_path / "d.lut")
    assert (lut.model, lut.infer) == (config.model, config.infer)
    code, out, err = run(capsys, "import", tmp_path / "d.lut", "-o", tmp_path / "i.pt")
    assert (code, err) == (0, "")
    assert "kpn section" in out
    state = load_checkpoint(tmp_path / "i.pt")
    assert (state.config.model, state.config.infer) == (config.model, config.infer)


# --- vkdt HEAD's inference layout (--vkdt-layout head) -----------------------------------
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
    code, _, err = run(capsys, "export", ckpt, "-o", tmp_path / "w.lut", "--vkdt-target", "head")
    assert code == 0 and "--vkdt-layout head" in err
