"""Tests for kpn/infer/cli.py (``kpn-infer``): ``main(argv)`` end to end on generated files.

Every output is compared with :func:`kpn.model.network.kpn_forward` of the same weights on the
input as read back, so the tests see the numbers, not only that files appear.
"""

from __future__ import annotations

import dataclasses
import io
import math
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
import torch

import kpn.infer.files as files_module
from kpn.config import Config, InferConfig, config_to_toml, load_config
from kpn.errors import KpnError
from kpn.infer.cli import main
from kpn.infer.denoiser import Denoiser, inference_precision, native_bf16
from kpn.infer.sure import sure_blend
from kpn.infer.weights import load_weights
from kpn.io.checkpoint import TrainingState, save_checkpoint
from kpn.io.images import read_any, read_image, read_raw, write_image, write_pfm
from kpn.io.nprof import NoiseProfile, write_nprof
from kpn.metrics import psnr
from kpn.model.network import KPN, kpn_forward
from kpn.train.optim import make_optimizer
from kpn.vkdt.export import config_for_lut, export_lut, load_lut
from kpn.vkdt.lut import read_lut, write_lut

ROOT = Path(__file__).resolve().parents[2]
DESIGN = ROOT / "tests" / "fixtures" / "design-vkdt.toml"  # the design as vkdt runs it
NOISE = ["--noise-a", "20000", "--noise-b", "4"]


pytestmark = pytest.mark.usefixtures("one_thread")  # small images


def training_state(config: Config, model: KPN, step: int = 3) -> TrainingState:
    optimizer = make_optimizer(model.parameters(), config.train)
    return TrainingState(
        config,
        model.state_dict(),
        optimizer.state_dict(),
        step,
        0,
        0,
        torch.Generator().manual_seed(0).get_state(),
    )


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A seeded design model as a checkpoint, a run directory, and .lut with and without
    trailer."""
    folder = tmp_path_factory.mktemp("weights")
    config = load_config(DESIGN)
    torch.manual_seed(1234)
    model = KPN(config.model)
    checkpoint = folder / "model.pt"
    save_checkpoint(checkpoint, training_state(config, model))
    run = folder / "run"
    run.mkdir()
    save_checkpoint(run / "checkpoint.pt", training_state(config, model))
    lut = folder / "model.lut"
    export_lut(model.mlp, config, lut)
    bare = folder / "bare.lut"
    write_lut(bare, [w.detach() for w in model.mlp.weights], in_width=32)
    lut_run = folder / "lut_run"
    lut_run.mkdir()
    export_lut(model.mlp, config, lut_run / "weights.lut")
    (lut_run / "config.toml").write_text(config_to_toml(config))
    return SimpleNamespace(
        config=config,
        model=model,
        checkpoint=checkpoint,
        run=run,
        lut=lut,
        bare=bare,
        lut_run=lut_run,
    )


def clean_image(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    y, x = y / max(height - 1, 1), x / max(width - 1, 1)
    return np.stack((0.2 + 0.6 * x, 0.1 + 0.7 * y, 0.5 - 0.3 * x * y), axis=-1).astype(np.float32)


def noisy_image(height: int, width: int, sigma: float = 0.03, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noisy = clean_image(height, width) + sigma * rng.standard_normal((height, width, 3))
    return noisy.astype(np.float32)


def expected(
    model: KPN,
    image: np.ndarray,
    a: float = 20000,
    b: float = 4,
    levels: int | None = None,
    precision: str = "auto",
    sure: bool = True,
) -> np.ndarray:
    """What infer computes untiled: the network at ``precision`` (auto: bf16 where native),
    blended by SURE (infer.sure's default), [H,W,3]."""
    precision = inference_precision(precision, model.config.precision, torch.device("cpu"))
    config = dataclasses.replace(model.config, precision=precision)

    def network(image: np.ndarray) -> np.ndarray:
        noisy = torch.from_numpy(image).permute(2, 0, 1)[None].contiguous()
        with torch.no_grad():
            out = kpn_forward(noisy, torch.tensor([[a, b]]), model.mlp.weights, config, levels)
        return out.output[0].permute(1, 2, 0).float().numpy()

    return sure_blend(network, image, a, b, InferConfig().sure_window) if sure else network(image)


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.strip()]


def assert_one_error(err: str, *words: str) -> None:
    lines = error_lines(err)
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for word in words:
        assert str(word) in lines[0], (word, lines[0])


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary files an interrupted write would leave."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# A 24 x 32 DNG as tests/test_io.py builds it (LibRaw refuses sensors under 22 pixels).
def write_dng(path: Path) -> Path:
    rng = np.random.default_rng(5)
    pixels = (1024 + 1500 + 200 * rng.standard_normal((24, 32))).astype(np.uint16)
    tags = [
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (50707, "B", 4, (1, 1, 0, 0), True),  # DNGBackwardVersion
        (50708, "s", 0, "Kpn Test Camera", True),  # UniqueCameraModel
        (271, "s", 0, "KpnMaker", True),  # Make
        (272, "s", 0, "KpnModel X-1", True),  # Model
        (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
        (33422, "B", 4, (0, 1, 1, 2), True),  # CFAPattern RGGB
        (50710, "B", 3, (0, 1, 2), True),  # CFAPlaneColor
        (50711, "H", 1, 1, True),  # CFALayout
        (50713, "H", 2, (1, 1), True),  # BlackLevelRepeatDim
        (50714, "H", 1, 1024, True),  # BlackLevel
        (50717, "H", 1, 5120, True),  # WhiteLevel
        (50721, "2i", 9, (1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1), True),
        (50778, "H", 1, 21, True),  # CalibrationIlluminant1: D65
        (50728, "2I", 3, (1, 1, 1, 1, 1, 1), True),  # AsShotNeutral
        (34855, "H", 1, 800, True),  # ISOSpeedRatings
    ]
    tifffile.imwrite(path, pixels, photometric=32803, extratags=tags, subfiletype=0)
    return path


# --- each input kind, end to end -------------------------------------------------------
def test_pfm_tiled(tmp_path: Path, weights: SimpleNamespace, capsys: pytest.CaptureFixture) -> None:
    image = noisy_image(37, 29)
    write_pfm(tmp_path / "photo.pfm", image)
    code, out, err = run(
        capsys, tmp_path / "photo.pfm", "--weights", weights.checkpoint, *NOISE, "--tile", 8
    )
    assert (code, err) == (0, "")
    output = tmp_path / "photo.denoised.pfm"
    assert "photo.pfm: noise (a, b) = (20000, 4) from --noise-a/--noise-b" in out
    assert f"-> {output}" in out
    np.testing.assert_allclose(read_any(output), expected(weights.model, image), atol=1e-5)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("bits", [8, 16])
def test_png(
    tmp_path: Path, weights: SimpleNamespace, capsys: pytest.CaptureFixture, bits: int
) -> None:
    write_image(tmp_path / "photo.png", noisy_image(33, 40), bits=bits)
    image = read_image(tmp_path / "photo.png")  # as decoded: linear
    code, _, err = run(capsys, tmp_path / "photo.png", "--weights", weights.checkpoint, *NOISE)
    assert (code, err) == (0, "")
    output = tmp_path / "photo.denoised.png"
    assert output.read_bytes()[24] == bits  # PNG IHDR bit depth: as the input
    got = read_image(output)
    want = expected(weights.model, image)
    # one sRGB code step of the encoding, at most (linear 1/255 near white for 8 bits)
    assert np.abs(got - np.clip(want, 0, 1)).max() <= (0.01 if bits == 8 else 1e-4)


def test_tiff_float(
    tmp_path: Path, weights: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    image = noisy_image(30, 31)
    image[0, 0] = [1.5, -0.1, 2.0]  # float keeps what 8 or 16 bits cannot
    write_image(tmp_path / "photo.tif", image, bits=32)
    code, _, err = run(
        capsys, tmp_path / "photo.tif", "--weights", weights.run, *NOISE, "--tile", 8
    )
    assert (code, err) == (0, "")
    with tifffile.TiffFile(tmp_path / "photo.denoised.tif") as tif:
        assert tif.pages.first.dtype == np.float32
    got = read_image(tmp_path / "photo.denoised.tif")
    np.testing.assert_allclose(got, expected(weights.model, image), atol=1e-5)


def test_dng(tmp_path: Path, weights: SimpleNamespace, capsys: pytest.CaptureFixture) -> None:
    dng = write_dng(tmp_path / "camera.dng")
    code, _, err = run(capsys, dng, "--weights", weights.checkpoint, *NOISE, "--tile", 8)
    assert (code, err) == (0, "")
    linear = read_raw(dng, "demosaic").image
    got = read_any(tmp_path / "camera.denoised.pfm")  # raw: PFM by default
    np.testing.assert_allclose(got, expected(weights.model, linear), atol=1e-5)
    code, _, err = run(capsys, dng, "--weights", weights.checkpoint, *NOISE, "--format", "tiff")
    assert (code, err) == (0, "")
    with tifffile.TiffFile(tmp_path / "camera.denoised.tif") as tif:
        assert tif.pages.first.dtype == np.uint16  # camera raw: 16-bit TIFF
    got = read_image(tmp_path / "camera.denoised.tif")
    assert np.abs(got - np.clip(expected(weights.model, linear), 0, 1)).max() < 1e-4


def test_formats_and_names(
    tmp_path: Path, weights: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    write_pfm(tmp_path / "a.pfm", noisy_image(20, 20))
    out_dir = tmp_path / "out"
    code, _, err = run(
        capsys,
        tmp_path / "a.pfm",
        "--weights",
        weights.checkpoint,
        *NOISE,
        "--format",
        "png",
        "--out-dir",
        out_dir,
    )
    assert (code, err) == (0, "")
    assert (out_dir / "a.png").read_bytes()[24] == 16  # from float: 16 bits
    code, _, err = run(
        capsys,
        tmp_path / "a.pfm",
        "--weights",
        weights.checkpoint,
        *NOISE,
        "-o",
        tmp_path / "chosen.tiff",
    )
    assert (code, err) == (0, "")
    assert read_image(tmp_path / "chosen.tiff").shape == (20, 20, 3)


def test_tiled_equals_untiled_through_the_cli(
    tmp_path: Path, weights: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    write_pfm(tmp_path / "odd.pfm", noisy_image(45, 61))
    for tile, name in ((0, "whole.pfm"), (8, "tiles.pfm"), (16, "tiles16.pfm")):
        code, _, err = run(
            capsys,
            tmp_path / "odd.pfm",
            "--weights",
            weights.checkpoint,
            *NOISE,
            "--tile",
            tile,
            "-o",
            tmp_path / name,
        )
        assert (code, err) == (0, "")
    whole = read_any(tmp_path / "whole.pfm")
    assert np.abs(read_any(tmp_path / "tiles.pfm") - whole).max() <= 1e-5
    assert np.abs(read_any(tmp_path / "tiles16.pfm") - whole).max() <= 1e-5


# --- weights and configs ---------------------------------------------------------------
def test_lut_with_trailer(
    tmp_path: Path, weights: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    image = noisy_image(24, 26)
    write_pfm(tmp_path / "x.pfm", image)
    lut = read_lut(weights.lut)
    design = KPN(weights.config.model)
    load_lut(design.mlp, weights.config.model, lut)  # the file's float16 weights
    want = expected(design, image)
    # without --config: the file's kpn section says it is the design
    code, out, err = run(
        capsys, tmp_path / "x.pfm", "--weights", weights.lut, *NOISE, "-o", tmp_path / "own.pfm"
    )
    assert (code, err) == (0, "")
    assert "kpn section" in out and "vkdt-head" not in out
    np.testing.assert_allclose(read_any(tmp_path / "own.pfm"), want, atol=1e-5)
    # with --config: the same model
    code, _, err = run(
        capsys,
        tmp_path / "x.pfm",
        "--weights",
        weights.lut,
        "--config",
        DESIGN,
        *NOISE,
        "-o",
        tmp_path / "design.pfm",
    )
    assert (code, err) == (0, "")
    np.testing.assert_allclose(read_any(tmp_path / "design.pfm"), want, atol=1e-5)


def test_vkdt_lut_needs_config_or_preset(
    tmp_path: Path, weights: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    """A file with vkdt's trailer only does not say its model: refused in one line that
    says how to tell it; --preset takes the preset under the trailer's items."""
    image = noisy_image(24, 26)
    write_pfm(tmp_path / "x.pfm", image)
    vkdt = tmp_path / "vkdt.lut"
    trailer = read_lut(weights.lut).trailer
    assert trailer is not None
    matrices = [w.detach() for w in weights.model.mlp.weights]
    write_lut(vkdt, matrices, in_width=32, trailer=trailer.to_text())  # no kpn section
    code, _, err = run(capsys, tmp_path / "x.pfm", "--weights", vkdt, *NOISE)
    assert code == 2
    assert_one_error(err, "vkdt.lut", "no kpn section", "--config", "--preset vkdt-head-w32")
    assert not (tmp_path / "x.denoised.pfm").exists()
    code, out, err = run(
        capsys,
        tmp_path / "x.pfm",
        "--weights",
        vkdt,
        "--preset",
        "vkdt-head-w32",
        *NOISE,
        "-o",
        tmp_path / "preset.pfm",
    )
    assert (code, err) == (0, "")
    assert "trailer + " in out and "vkdt-head-w32.toml" in out
    preset = config_for_lut(read_lut(vkdt), preset="vkdt-head-w32").config
    assert preset.model.block_transpose and preset.model.kernel_activation == "softmax"
    model = KPN(preset.model)
    load_lut(model.mlp, preset.model, read_lut(vkdt))
    assert not preset.infer.sure  # vkdt has no SURE blend
    want = expected(model, image, levels=preset.infer.levels, sure=False)  # vkdt infers with 6
    np.testing.assert_allclose(read_any(tmp_path / "preset.pfm"), want, atol=1e-5)
    # --preset is for such files only
    code, _, err = run(
        capsys, tmp_path / "x.pfm", "--weights", weights.lut, "--preset", "vkdt-head-w32", *NOISE
    )
    assert code == 2
    assert_one_error(err, "--preset vkdt-head-w32", "leave --preset out")
    code, _, err = run(
        capsys, tmp_path / "x.pfm", "--weights", weights.run, "--preset", "vkdt-head-w32", *NOISE
    )
    assert code == 2
    assert_one_error(err, "--preset vkdt-head-w32", "run or checkpoint")


def test_lut_without_trailer(
    tmp_path: Path, weights: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    write_pfm(tmp_path / "x.pfm", noisy_image(24, 26))
    code, _, err = run(capsys, tmp_path / "x.pfm", "--weights", weights.bare, *NOISE)
    assert code == 2
    assert_one_error(err, "bare.lut", "no trailer", "--config")
    assert not (tmp_path / "x.denoised.pfm").exists()
    code, out, err = run(
        capsys, tmp_path / "x.pfm", "--weights", weights.bare, "--config", DESIGN, *NOISE
    )
    assert (code, err) == (0, "")
    assert "no trailer" in out
    from_lut = read_any(tmp_path / "x.denoised.pfm")
    design = KPN(weights.config.model)
    load_lut(design.mlp, weights.config.model, read_lut(weights.bare))
    np.testing.assert_allclose(from_lut, expected(design, noisy_image(24, 26)), atol=1e-5)


def test_run_directory_with_lut_and_config(
    tmp_path: Path, weights: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    image = noisy_image(20, 24)
    write_pfm(tmp_path / "x.pfm", image)
    code, _, err = run(capsys, tmp_path / "x.pfm", "--weights", weights.lut_run, *NOISE)
    assert (code, err) == (0, "")
    design = KPN(weights.config.model)
    load_lut(design.mlp, weights.config.model, read_lut(weights.lut_run / "weights.lut"))
    np.testing.assert_allclose(
        read_any(tmp_path / "x.denoised.pfm"), expected(design, image), atol=1e-5
    )


def test_config_infer_section_is_used(
    tmp_path: Path, weights: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    """--config with a checkpoint: its [model] must match, its [infer] applies."""
    config = tmp_path / "infer.toml"
    config.write_text(DESIGN.read_text() + "\n[infer]\nlevels = 2\ntile = 8\n")
    image = noisy_image(30, 30)
    write_pfm(tmp_path / "x.pfm", image)
    code, out, err = run(
        capsys, tmp_path / "x.pfm", "--weights", weights.checkpoint, "--config", config, *NOISE
    )
    assert (code, err) == (0, "")
    assert "2 levels" in out and "tile 8" in out
    want = expected(weights.model, image, levels=2)
    np.testing.assert_allclose(read_any(tmp_path / "x.denoised.pfm"), want, atol=1e-5)


def test_precisions(
    tmp_path: Path, weights: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    image = noisy_image(30, 34)
    write_pfm(tmp_path / "x.pfm", image)
    outputs, lines = {}, {}
    for precision in ("auto", "model", "fp32", "bf16", "vkdt-f16"):
        code, out, err = run(
            capsys,
            tmp_path / "x.pfm",
            "--weights",
            weights.checkpoint,
            *NOISE,
            "--precision",
            precision,
            "--sure",
            "off",  # the network's arithmetic alone
            "-o",
            tmp_path / f"{precision}.pfm",
        )
        assert (code, err) == (0, "")
        outputs[precision], lines[precision] = read_any(tmp_path / f"{precision}.pfm"), out
    exact = dataclasses.replace(weights.config.model, precision="fp32")
    noisy = torch.from_numpy(image).permute(2, 0, 1)[None]
    with torch.no_grad():
        fp32 = kpn_forward(noisy, torch.tensor([[20000.0, 4.0]]), weights.model.mlp.weights, exact)
    np.testing.assert_allclose(outputs["fp32"], fp32.output[0].permute(1, 2, 0), atol=1e-5)
    np.testing.assert_array_equal(outputs["model"], outputs["fp32"])  # an fp32 model
    native = "bf16" if native_bf16(torch.device("cpu")) else "fp32"
    np.testing.assert_array_equal(outputs["auto"], outputs[native])
    for precision in ("auto", "bf16", "vkdt-f16"):
        assert f"levels, {native if precision == 'auto' else precision}" in lines[precision]
    for other in ("bf16", "vkdt-f16"):
        difference = np.abs(outputs[other] - outputs["fp32"]).max()
        assert 0 < difference < 0.02, (other, difference)


def test_sure_on_and_off(tmp_path: Path, weights: SimpleNamespace, capsys) -> None:
    """infer.sure (on by default) blends the network towards the input, in tiles as
    untiled; --sure off is the network alone, and the printed line says which."""
    image = noisy_image(40, 44)
    write_pfm(tmp_path / "x.pfm", image)
    outputs = {}
    for sure, tile in (("on", "16"), ("on", "0"), ("off", "16")):
        code, out, err = run(
            capsys, tmp_path / "x.pfm", "--weights", weights.checkpoint, *NOISE,
            "--sure", sure, "--tile", tile, "-o", tmp_path / f"{sure}{tile}.pfm",
        )  # fmt: skip
        assert (code, err) == (0, "")
        assert ("SURE blend (window 33)" if sure == "on" else "no SURE") in out
        outputs[sure, tile] = read_any(tmp_path / f"{sure}{tile}.pfm")
    np.testing.assert_allclose(outputs["on", "16"], outputs["on", "0"], atol=1e-5)
    np.testing.assert_allclose(outputs["on", "0"], expected(weights.model, image), atol=1e-5)
    alone = expected(weights.model, image, sure=False)
    np.testing.assert_allclose(outputs["off", "16"], alone, atol=1e-5)
    assert np.abs(outputs["on", "0"] - alone).max() > 1e-3  # the blend did something
    code, _, _ = run(capsys, tmp_path / "x.pfm", "--weights", weights.checkpoint, "--sure", "no")
    assert code == 2


def test_inference_precision_resolution() -> None:
    cpu = torch.device("cpu")
    native = native_bf16(cpu)
    assert inference_precision("auto", "fp32", cpu) == ("bf16" if native else "fp32")
    assert inference_precision("auto", "vkdt-f16", cpu) == "vkdt-f16"  # vkdt's stays vkdt's
    assert inference_precision("model", "fp32", cpu) == "fp32"
    assert inference_precision("bf16", "vkdt-f16", cpu) == "bf16"
    with pytest.raises(KpnError, match="precision 'half': expected auto, model, fp32"):
        inference_precision("half", "fp32", cpu)


def test_vkdt_matmul(
    tmp_path: Path, weights: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    """--vkdt-matmul fallback runs vkdt's fallback path: what kpn_forward computes with
    model.vkdt_matmul = "fallback", and not the coopmat result; it needs vkdt-f16."""
    image = noisy_image(30, 34)
    write_pfm(tmp_path / "x.pfm", image)
    outputs = {}
    for matmul in ("coopmat", "fallback"):
        args = ["--precision", "vkdt-f16", "--vkdt-matmul", matmul, "--tile", "0", "--sure", "off"]
        code, out, err = run(
            capsys, tmp_path / "x.pfm", "--weights", weights.checkpoint, *NOISE, *args,
            "-o", tmp_path / f"{matmul}.pfm",
        )  # fmt: skip
        assert (code, err) == (0, "")
        assert f"vkdt-f16 ({matmul})" in out
        outputs[matmul] = read_any(tmp_path / f"{matmul}.pfm")
    config = dataclasses.replace(weights.model.config, precision="vkdt-f16", vkdt_matmul="fallback")
    noisy = torch.from_numpy(read_any(tmp_path / "x.pfm")).permute(2, 0, 1).unsqueeze(0)
    with torch.no_grad():
        want = kpn_forward(noisy, torch.tensor([[20000.0, 4.0]]), weights.model.mlp.weights, config)
    np.testing.assert_array_equal(outputs["fallback"], want.output[0].permute(1, 2, 0).numpy())
    assert not np.array_equal(outputs["fallback"], outputs["coopmat"])
    assert np.abs(outputs["fallback"] - outputs["coopmat"]).max() < 0.02
    code, out, err = run(
        capsys, tmp_path / "x.pfm", "--weights", weights.checkpoint, *NOISE,
        "--vkdt-matmul", "fallback", "-o", tmp_path / "no.pfm",
    )  # fmt: skip
    assert code == 2
    assert_one_error(err, "--vkdt-matmul fallback", "--precision vkdt-f16")
    assert not (tmp_path / "no.pfm").exists()


def test_denoiser_resets_the_matmul_of_other_precisions(weights: SimpleNamespace) -> None:
    """A vkdt-f16 fallback model run in fp32 has no vkdt matmul (its config stays valid)."""
    model = KPN(
        dataclasses.replace(weights.model.config, precision="vkdt-f16", vkdt_matmul="fallback")
    )
    infer = weights.config.infer
    assert Denoiser.build(model, infer).config.vkdt_matmul == "fallback"
    fp32 = Denoiser.build(model, infer, precision="fp32").config
    assert (fp32.precision, fp32.vkdt_matmul) == ("fp32", "coopmat")
    fp32.validate("test")
    own = Denoiser.build(model, infer, vkdt_matmul="coopmat").config
    assert (own.precision, own.vkdt_matmul) == ("vkdt-f16", "coopmat")
    with pytest.raises(KpnError, match="expected one of"):
        Denoiser.build(model, infer, vkdt_matmul="tensor")


# --- noise profile ---------------------------------------------------------------------
@pytest.fixture
def profiles(tmp_path: Path) -> SimpleNamespace:
    folder = tmp_path / "nprof"
    folder.mkdir()
    camera = write_nprof(folder, NoiseProfile(30000.0, 6.0, "KpnMaker", "KpnModel X-1", 800, "u16"))
    other = write_nprof(tmp_path, NoiseProfile(50000.0, 8.0, "Other", "Cam", 100, "u16"))
    return SimpleNamespace(folder=folder, camera=camera, nprof=other)


def profile_line(out: str, name: str) -> str:
    lines = [
        line for line in out.splitlines() if line.startswith(str(name)) and "noise (a, b)" in line
    ]
    assert len(lines) == 1, out
    return lines[0]


def test_profile_order(
    tmp_path: Path,
    weights: SimpleNamespace,
    profiles: SimpleNamespace,
    capsys: pytest.CaptureFixture,
) -> None:
    dng = write_dng(tmp_path / "camera.dng")
    sources = {
        "explicit": ["--noise-a", "1000", "--noise-b", "2"],
        "nprof": ["--nprof", profiles.nprof],
        "dir": ["--nprof-dir", profiles.folder],
        "auto": ["--noise", "auto"],
    }
    wanted = [
        ("explicit", "(1000, 2) from --noise-a/--noise-b"),
        ("nprof", f"(50000, 8) from --nprof {profiles.nprof}"),
        ("dir", "(30000, 6) from KpnMaker-KpnModel X-1-800.nprof (exact for ISO 800)"),
    ]
    for first, text in wanted:
        given = [
            arg
            for name, args in sources.items()
            for arg in args
            if list(sources).index(name) >= list(sources).index(first)
        ]
        code, out, err = run(capsys, dng, "--weights", weights.checkpoint, *given)
        assert (code, err) == (0, ""), first
        assert profile_line(out, dng).endswith(text), (first, out)
    # the profile is the one denoised with
    a, b = 30000.0, 6.0
    got = read_any(tmp_path / "camera.denoised.pfm")
    want = expected(weights.model, read_raw(dng, "demosaic").image, a, b)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_profile_fallbacks(
    tmp_path: Path,
    weights: SimpleNamespace,
    profiles: SimpleNamespace,
    capsys: pytest.CaptureFixture,
) -> None:
    write_pfm(tmp_path / "x.pfm", noisy_image(64, 64, sigma=0.02))
    # --nprof-dir is for camera raw files: a PFM goes on to --noise auto ...
    code, out, err = run(
        capsys,
        tmp_path / "x.pfm",
        "--weights",
        weights.checkpoint,
        "--nprof-dir",
        profiles.folder,
        "--noise",
        "auto",
    )
    assert (code, err) == (0, "")
    line = profile_line(out, tmp_path / "x.pfm")
    assert "estimated from the image" in line and "not a camera raw file" in line
    a = float(line.split("(a, b) = (")[1].split(",")[0])
    assert a == pytest.approx(0.02**2 * 65535**2, rel=0.2)  # sigma 0.02, no signal term
    # ... and without it fails, naming the file
    code, out, err = run(
        capsys, tmp_path / "x.pfm", "--weights", weights.checkpoint, "--nprof-dir", profiles.folder
    )
    assert code == 1
    assert_one_error(err, "x.pfm", "no noise profile", "not a camera raw file")
    # a camera without a profile falls back too
    dng = write_dng(tmp_path / "camera.dng")
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = run(capsys, dng, "--weights", weights.checkpoint, "--nprof-dir", empty)
    assert code == 1
    assert_one_error(err, "no noise profile for KpnMaker KpnModel X-1")


# --- refusals, failures and bad input --------------------------------------------------
def test_refuses_to_overwrite_input(
    tmp_path: Path, weights: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    write_pfm(tmp_path / "x.pfm", noisy_image(20, 20))
    before = (tmp_path / "x.pfm").read_bytes()
    code, _, err = run(
        capsys,
        tmp_path / "x.pfm",
        "--weights",
        weights.checkpoint,
        *NOISE,
        "-o",
        tmp_path / "x.pfm",
    )
    assert code == 1
    assert_one_error(err, "refused", "overwrite the input")
    code, _, err = run(
        capsys, tmp_path / "x.pfm", "--weights", weights.checkpoint, *NOISE, "--out-dir", tmp_path
    )
    assert code == 1
    assert_one_error(err, "refused", "x.pfm")
    assert (tmp_path / "x.pfm").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pfm"]


def test_partial_failure(
    tmp_path: Path, weights: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    write_pfm(tmp_path / "good.pfm", noisy_image(20, 20))
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    bad = noisy_image(20, 20)
    bad[3, 4, 1] = np.nan
    write_pfm(tmp_path / "nan.pfm", bad)
    code, _, err = run(
        capsys,
        tmp_path / "corrupt.png",
        tmp_path / "good.pfm",
        tmp_path / "nan.pfm",
        tmp_path / "missing.pfm",
        "--weights",
        weights.checkpoint,
        *NOISE,
    )
    assert code == 1
    lines = error_lines(err)
    assert len(lines) == 3, err
    assert "corrupt.png" in lines[0] and "nan.pfm" in lines[1] and "NaN" in lines[1]
    assert "missing.pfm" in lines[2]
    assert (tmp_path / "good.denoised.pfm").is_file()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["corrupt.png", "good.denoised.pfm", "good.pfm", "nan.pfm"]


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--weights", "{tmp}/absent.pt"], ["absent.pt", "no such"]),
        (["--weights", "{tmp}/garbage.pt"], ["garbage.pt", "not a readable checkpoint"]),
        (["--weights", "{tmp}/garbage.lut"], ["garbage.lut", "magic"]),
        (["--weights", "{tmp}/wide.pt"], ["wide.pt", "do not fit"]),
        (["--weights", "{lut}", "--config", "{head}"], ["model.width", "64"]),
        (["--weights", "{ckpt}", "--config", "{head}"], ["model.", "trained with"]),
        (["--weights", "{ckpt}", "--noise-a", "-5", "--noise-b", "1"], ["--noise-a", ">= 0"]),
        (["--weights", "{ckpt}", "--nprof", "{tmp}/Neg-Cam-100.nprof"], ["negative"]),
        (["--weights", "{ckpt}", "--noise-a", "5"], ["go together"]),
        (["--weights", "{ckpt}"], ["no noise profile"]),
        (["--weights", "{ckpt}", *NOISE, "--out-dir", "{tmp}/file/sub"], ["--out-dir", "cannot"]),
        (["--weights", "{ckpt}", *NOISE, "--tile", "3"], ["--tile 3"]),
        (["--weights", "{ckpt}", *NOISE, "-o", "{tmp}/y.bmp"], ["-o", ".bmp"]),
    ],
    ids=[
        "missing_weights", "corrupt_checkpoint", "corrupt_lut", "weights_do_not_fit",
        "lut_config_mismatch", "checkpoint_config_mismatch", "negative_a", "negative_nprof",
        "a_without_b", "no_profile", "out_dir_uncreatable", "tiny_tile", "unknown_format",
    ],
)  # fmt: skip
def test_usage_and_weights_errors_exit_2(
    tmp_path: Path,
    weights: SimpleNamespace,
    capsys: pytest.CaptureFixture,
    argv: list[str],
    words: list[str],
) -> None:
    (tmp_path / "garbage.pt").write_bytes(b"not a zip file at all")
    (tmp_path / "garbage.lut").write_bytes(bytes(64))
    (tmp_path / "file").write_text("a file, not a folder")
    (tmp_path / "Neg-Cam-100.nprof").write_text("-3 2\nscale u16\n")
    wide = dataclasses.replace(
        weights.config, model=dataclasses.replace(weights.config.model, width=64)
    )
    save_checkpoint(
        tmp_path / "wide.pt",
        dataclasses.replace(training_state(weights.config, weights.model), config=wide),
    )
    write_pfm(tmp_path / "x.pfm", noisy_image(12, 12))
    names = {
        "tmp": tmp_path,
        "lut": weights.lut,
        "ckpt": weights.checkpoint,
        "head": ROOT / "configs" / "vkdt-head.toml",
    }
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = run(capsys, tmp_path / "x.pfm", *(arg.format(**names) for arg in argv))
    assert code == 2
    assert_one_error(err, *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_unwritable_output_folder(
    tmp_path: Path, weights: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    write_pfm(tmp_path / "x.pfm", noisy_image(12, 12))
    (tmp_path / "file").write_text("a file, not a folder")
    target = tmp_path / "file" / "out.pfm"
    code, _, err = run(
        capsys, tmp_path / "x.pfm", "--weights", weights.checkpoint, *NOISE, "-o", target
    )
    assert code == 1
    assert_one_error(err, target, "cannot write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "x.pfm"]


def test_tiny_and_huge_aspect_images(
    tmp_path: Path, weights: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    """They denoise (mirrored edges make every level defined), tiled as untiled; only the
    noise estimate refuses them, with one line."""
    for name, shape in (("dot.pfm", (1, 1)), ("line.pfm", (1, 3000)), ("column.pfm", (700, 2))):
        image = noisy_image(*shape)
        write_pfm(tmp_path / name, image)
        code, _, err = run(
            capsys, tmp_path / name, "--weights", weights.checkpoint, *NOISE, "--tile", 64
        )
        assert (code, err) == (0, "")
        got = read_any(tmp_path / name.replace(".pfm", ".denoised.pfm"))
        np.testing.assert_allclose(got, expected(weights.model, image), atol=1e-5)
        code, _, err = run(
            capsys,
            tmp_path / name,
            "--weights",
            weights.checkpoint,
            "--noise",
            "auto",
            "-o",
            tmp_path / "auto.pfm",
        )
        assert code == 1
        assert_one_error(err, name, "too small to estimate")
    assert not (tmp_path / "auto.pfm").exists() and leftovers(tmp_path) == []


def test_output_argument_errors(
    tmp_path: Path, weights: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    write_pfm(tmp_path / "a.pfm", noisy_image(12, 12))
    write_pfm(tmp_path / "b.pfm", noisy_image(12, 12))
    code, _, err = run(
        capsys,
        tmp_path / "a.pfm",
        tmp_path / "b.pfm",
        "--weights",
        weights.checkpoint,
        *NOISE,
        "-o",
        tmp_path / "c.pfm",
    )
    assert code == 2
    assert_one_error(err, "-o", "2 inputs")
    code, _, err = run(
        capsys,
        tmp_path / "a.pfm",
        "--weights",
        weights.checkpoint,
        *NOISE,
        "-o",
        tmp_path / "c.png",
        "--format",
        "pfm",
    )
    assert code == 2
    assert_one_error(err, "contradicts --format pfm")
    assert main(["--weights", str(weights.checkpoint)]) == 2  # argparse: no input
    capsys.readouterr()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is there")
def test_cuda_missing(
    tmp_path: Path, weights: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    write_pfm(tmp_path / "a.pfm", noisy_image(12, 12))
    code, _, err = run(
        capsys, tmp_path / "a.pfm", "--weights", weights.checkpoint, *NOISE, "--device", "cuda"
    )
    assert code == 2
    assert_one_error(err, "cuda", "not available")


# --- folders, globs, reference ---------------------------------------------------------
def test_folders_and_globs(
    tmp_path: Path, weights: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.pfm", "b.pfm", "a.denoised.pfm"):  # an earlier output is not an input
        write_pfm(photos / name, noisy_image(16, 16))
    (photos / "notes.txt").write_text("not an image")
    code, _, err = run(
        capsys, photos, "--weights", weights.checkpoint, *NOISE, "--out-dir", tmp_path / "o"
    )
    assert (code, err) == (0, "")
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.pfm", "b.pfm"]
    code, _, err = run(
        capsys,
        str(photos / "[ab].pfm"),
        "--weights",
        weights.checkpoint,
        *NOISE,
        "--format",
        "tiff",
    )
    assert (code, err) == (0, "")
    assert (photos / "a.denoised.tif").is_file() and (photos / "b.denoised.tif").is_file()
    code, _, err = run(capsys, str(photos / "*.png"), "--weights", weights.checkpoint, *NOISE)
    assert code == 1
    assert_one_error(err, "*.png", "matches no image files")


def test_reference_psnr(
    tmp_path: Path, weights: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    clean = clean_image(32, 32)
    noisy = noisy_image(32, 32)
    write_pfm(tmp_path / "clean.pfm", clean)
    write_pfm(tmp_path / "noisy.pfm", noisy)
    code, out, err = run(
        capsys,
        tmp_path / "noisy.pfm",
        "--weights",
        weights.checkpoint,
        *NOISE,
        "--reference",
        tmp_path / "clean.pfm",
    )
    assert (code, err) == (0, "")
    denoised = expected(weights.model, noisy)
    mse = lambda x: float(np.mean((x.astype(np.float64) - clean) ** 2))  # noqa: E731
    line = f"PSNR noisy {10 * math.log10(1 / mse(noisy)):.2f} dB -> denoised "
    assert line + f"{10 * math.log10(1 / mse(denoised)):.2f} dB" in out
    assert psnr(noisy, clean) == pytest.approx(10 * math.log10(1 / mse(noisy)), rel=1e-9)
    write_pfm(tmp_path / "small.pfm", clean[:16])
    code, _, err = run(
        capsys,
        tmp_path / "noisy.pfm",
        "--weights",
        weights.checkpoint,
        *NOISE,
        "--reference",
        tmp_path / "small.pfm",
        "-o",
        tmp_path / "o.pfm",
    )
    assert code == 1
    assert_one_error(err, "small.pfm", "32 x 16")
    assert not (tmp_path / "o.pfm").exists()


# --- API and wrappers ------------------------------------------------------------------
def test_denoiser_api(weights: SimpleNamespace) -> None:
    loaded = load_weights(weights.run)
    assert loaded.config == weights.config
    image = noisy_image(40, 44)
    denoiser = Denoiser.build(loaded.model, loaded.config.infer, tile=16)
    ticks: list[int] = []
    got = denoiser(image, 20000, 4, ticks.append)
    assert len(ticks) == denoiser.tiles(40, 44) > 4
    np.testing.assert_allclose(got, expected(weights.model, image), atol=1e-5)


def test_root_script_and_console_entry(tmp_path: Path, weights: SimpleNamespace) -> None:
    write_pfm(tmp_path / "x.pfm", noisy_image(12, 12))
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "infer.py"),
            str(tmp_path / "x.pfm"),
            "--weights",
            str(weights.checkpoint),
            *NOISE,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "x.denoised.pfm").is_file()
    assert 'kpn-infer = "kpn.infer.cli:run"' in (ROOT / "pyproject.toml").read_text()


@pytest.mark.parametrize(
    ("name", "bits"), [("a.png", 8), ("a.png", 16), ("a.tif", 16), ("a.jpg", 8)]
)
def test_banded_encoding_writes_what_write_image_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, bits: int
) -> None:
    """kpn-infer encodes sRGB codes a few rows at a time (memory); the pixels are those
    of kpn.io.images.write_image."""
    monkeypatch.setattr(files_module, "ENCODE_ROWS", 7)
    image = noisy_image(30, 20, sigma=0.3)  # values past 0 and 1: clipped alike
    files_module.write_output(tmp_path / name, image, bits)
    write_image(tmp_path / f"ref{Path(name).suffix}", image, bits=bits)
    ours, theirs = read_image(tmp_path / name), read_image(tmp_path / f"ref{Path(name).suffix}")
    np.testing.assert_array_equal(ours, theirs)
    bad = image.copy()
    bad[2, 3, 0] = np.inf
    with pytest.raises(KpnError, match="NaN or Inf"):
        files_module.write_output(tmp_path / f"bad{Path(name).suffix}", bad, bits)


def test_out_of_memory_is_one_line(
    tmp_path: Path,
    weights: SimpleNamespace,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_pfm(tmp_path / "a.pfm", noisy_image(12, 12))

    def exhausted(*args: object, **kwargs: object) -> None:
        raise MemoryError

    monkeypatch.setattr(Denoiser, "__call__", exhausted)
    code, _, err = run(capsys, tmp_path / "a.pfm", "--weights", weights.checkpoint, *NOISE)
    assert code == 1
    assert_one_error(err, "a.pfm", "out of memory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pfm"]


@pytest.mark.parametrize(
    ("infer", "words"),
    [
        ("tile = 4", ["infer.tile = 4", "0 (untiled) or >= 8"]),
        ('precision = "fp16"', ["infer.precision", "'fp16'"]),
        ("levels = 17", ["infer.levels = 17"]),
    ],
)
def test_infer_config_is_checked(
    tmp_path: Path,
    weights: SimpleNamespace,
    capsys: pytest.CaptureFixture,
    infer: str,
    words: list[str],
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(DESIGN.read_text() + f"\n[infer]\n{infer}\n")
    write_pfm(tmp_path / "x.pfm", noisy_image(12, 12))
    code, _, err = run(
        capsys, tmp_path / "x.pfm", "--weights", weights.checkpoint, "--config", config, *NOISE
    )
    assert code == 2
    assert_one_error(err, "bad.toml", *words)


# --- progress display ---------------------------------------------------------------------
class Terminal(io.StringIO):
    """A terminal's one screen, which stdout and stderr both write to."""

    def isatty(self) -> bool:
        return True


CURSOR = re.compile(r"\x1b\[(\d*)([A-Za-z])")


def screen(text: str) -> list[str]:
    """The lines a terminal shows after ``text``: ``\\r`` returns to the line's start,
    ``\\n`` starts the next line, ``ESC[nA`` moves up (tqdm's moves between its bars),
    later characters overwrite earlier ones."""
    rows: list[list[str]] = [[]]
    row = col = 0
    index = 0
    while index < len(text):
        escape = CURSOR.match(text, index)
        if escape is not None:
            if escape.group(2) == "A":
                row = max(0, row - int(escape.group(1) or 1))
            index = escape.end()
            continue
        char = text[index]
        index += 1
        if char == "\r":
            col = 0
        elif char == "\n":
            row, col = row + 1, 0
        else:
            while len(rows) <= row:
                rows.append([])
            line = rows[row]
            line.extend(" " * (col + 1 - len(line)))
            line[col] = char
            col += 1
    return ["".join(line).rstrip() for line in rows]


def test_file_lines_do_not_overwrite_the_progress_bar(
    tmp_path: Path, weights: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = [tmp_path / "a.pfm", tmp_path / "b.pfm"]
    for path in inputs:
        write_pfm(path, noisy_image(12, 10))
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    monkeypatch.setattr(sys, "stderr", terminal)
    argv = [*map(str, inputs), "--weights", str(weights.checkpoint), *NOISE, "--tile", "8"]
    assert main(argv) == 0
    shown = screen(terminal.getvalue())
    assert any(line.startswith("files:") for line in shown), shown  # the bar was drawn
    for path in inputs:
        # each line whole, on a line of its own, not after the bar's text
        assert f"{path}: noise (a, b) = (20000, 4) from --noise-a/--noise-b" in shown, shown
        done = [line for line in shown if f"{path} -> " in line]
        assert len(done) == 1 and done[0].startswith(f"{path} -> "), shown
