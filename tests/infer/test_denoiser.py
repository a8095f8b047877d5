"""Tests for kpn/infer/denoiser.py: the Denoiser on its own and under ``kpn-infer``
(precisions, the SURE blend, vkdt's matmul, the device).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from kpn.errors import KpnError, ParameterError
from kpn.infer.denoiser import ORIENTATIONS, Denoiser, inference_precision, native_bf16
from kpn.infer.weights import load_weights
from kpn.io.images import read_any
from kpn.io.pfm import write_pfm
from kpn.model.network import KPN, kpn_forward

from conftest import assert_error_line, assert_one_line_error
from infer_shared import NOISE, expected, noisy_image, run, seeded_weights

pytestmark = pytest.mark.usefixtures("one_thread")  # small images


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """infer_shared.seeded_weights, saved once for this module."""
    return seeded_weights(tmp_path_factory.mktemp("weights"))


def test_denoiser_api(weights: SimpleNamespace) -> None:
    loaded = load_weights(weights.run)
    assert loaded.config == weights.config
    image = noisy_image(40, 44)
    denoiser = Denoiser.build(loaded.model, loaded.config.infer, tile=16)
    ticks: list[int] = []
    got = denoiser(image, 20000, 4, ticks.append)
    assert len(ticks) == denoiser.tiles(40, 44) > 4
    np.testing.assert_allclose(got, expected(weights.model, image), atol=1e-5)


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
    with pytest.raises(KpnError, match="precision='half': expected auto, model, fp32"):
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
    assert_error_line(err, "--vkdt-matmul fallback", "--precision vkdt-f16")
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


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is there")
def test_cuda_missing(
    tmp_path: Path, weights: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    write_pfm(tmp_path / "a.pfm", noisy_image(12, 12))
    code, _, err = run(
        capsys, tmp_path / "a.pfm", "--weights", weights.checkpoint, *NOISE, "--device", "cuda"
    )
    assert code == 2
    assert_error_line(err, "--device cuda: CUDA is not available")


def test_orientations_are_the_squares_eight_symmetries() -> None:
    """Each inverse undoes its orientation; the 8 are distinct; the first two are the
    identity and the transpose, the first four closed under composition (a group, so the
    mean over them is itself invariant to them)."""
    image = np.arange(2 * 3 * 1, dtype=np.float32).reshape(2, 3, 1)
    oriented = []
    for forward, inverse in ORIENTATIONS:
        np.testing.assert_array_equal(inverse(forward(image)), image)
        oriented.append(forward(image))
    assert len({(o.shape, o.tobytes()) for o in map(np.ascontiguousarray, oriented)}) == 8
    np.testing.assert_array_equal(oriented[1], image.transpose(1, 0, 2))
    four = [forward for forward, _ in ORIENTATIONS[:4]]
    square = np.arange(9, dtype=np.float32).reshape(3, 3, 1)
    images = {f(square).tobytes() for f in four}
    assert {f(g(square)).tobytes() for f in four for g in four} == images


@pytest.mark.parametrize("sure", [True, False])
def test_ensemble_is_the_mean_over_orientations(weights: SimpleNamespace, sure: bool) -> None:
    """ensemble 2: the mean of the output and the transposed image's output transposed
    back; 4 adds the half turn and the anti-transpose. The tiles of each orientation count
    (a tall image's transpose is wide); every orientation ticks its tiles."""
    loaded = load_weights(weights.run)
    image = noisy_image(40, 44)
    single = Denoiser.build(loaded.model, loaded.config.infer, tile=16, sure=sure)
    transposed = single(np.ascontiguousarray(image.transpose(1, 0, 2)), 20000, 4)
    turned = single(np.ascontiguousarray(image[::-1, ::-1]), 20000, 4)[::-1, ::-1]
    anti = single(np.ascontiguousarray(image.transpose(1, 0, 2)[::-1, ::-1]), 20000, 4)
    outputs = single(image, 20000, 4), transposed.transpose(1, 0, 2), turned
    outputs += (anti[::-1, ::-1].transpose(1, 0, 2),)
    for count in (2, 4):
        ensemble = dataclasses.replace(single, ensemble=count)
        ticks: list[int] = []
        got = ensemble(image, 20000, 4, ticks.append)
        np.testing.assert_allclose(got, np.mean(outputs[:count], axis=0), atol=1e-6)
        assert len(ticks) == ensemble.tiles(40, 44)
    assert np.abs(outputs[0] - outputs[1]).max() > 1e-4  # the orientations disagree
    narrow = dataclasses.replace(single, tile=24)
    tall = dataclasses.replace(narrow, ensemble=2)
    assert tall.tiles(100, 30) == narrow.tiles(100, 30) + narrow.tiles(30, 100) > 2


def test_ensemble_option(tmp_path: Path, weights: SimpleNamespace, capsys) -> None:
    """--ensemble N runs the API's ensemble and says so; a count other than 1, 2, 4, 8 is
    a usage error there and a one-line error from the API and the config."""
    image = noisy_image(30, 34)
    write_pfm(tmp_path / "x.pfm", image)
    code, out, err = run(
        capsys, tmp_path / "x.pfm", "--weights", weights.checkpoint, *NOISE,
        "--ensemble", "2", "-o", tmp_path / "y.pfm",
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert "mean of 2 orientations" in out
    loaded = load_weights(weights.run)
    built = Denoiser.build(loaded.model, loaded.config.infer, ensemble=2)
    np.testing.assert_allclose(read_any(tmp_path / "y.pfm"), built(image, 20000, 4), atol=1e-6)
    checkpoint = weights.checkpoint
    code, _, err = run(capsys, tmp_path / "x.pfm", "--weights", checkpoint, "--ensemble", "3")
    assert code == 2 and "--ensemble" in err
    for bad in (3, 0, True):
        with pytest.raises(ParameterError, match="ensemble") as caught:
            Denoiser.build(loaded.model, loaded.config.infer, ensemble=bad)
        assert_one_line_error(caught, "ensemble")
    with pytest.raises(KpnError, match=r"x.toml: infer.ensemble = 3 must be one of 1, 2, 4, 8"):
        dataclasses.replace(loaded.config.infer, ensemble=3).validate("x.toml")
