"""Tests for kpn/infer/weights.py through ``kpn-infer``: checkpoints, run folders and .lut
files with and without their trailer, and the --config / --preset that go with them.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from kpn.io.images import read_any
from kpn.io.pfm import write_pfm
from kpn.model.network import KPN
from kpn.vkdt.lut import read_lut, write_lut
from kpn.vkdt.lut_model import config_for_lut, load_lut

from conftest import assert_error_line
from infer_shared import DESIGN, NOISE, expected, noisy_image, run, seeded_weights

pytestmark = pytest.mark.usefixtures("one_thread")  # small images


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """infer_shared.seeded_weights, saved once for this module."""
    return seeded_weights(tmp_path_factory.mktemp("weights"))


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
    assert_error_line(err, "vkdt.lut", "no kpn section", "--config", "--preset vkdt-head-w32")
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
    assert_error_line(err, "--preset vkdt-head-w32", "leave --preset out")
    code, _, err = run(
        capsys, tmp_path / "x.pfm", "--weights", weights.run, "--preset", "vkdt-head-w32", *NOISE
    )
    assert code == 2
    assert_error_line(err, "--preset vkdt-head-w32", "run or checkpoint")


def test_lut_without_trailer(
    tmp_path: Path, weights: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    write_pfm(tmp_path / "x.pfm", noisy_image(24, 26))
    code, _, err = run(capsys, tmp_path / "x.pfm", "--weights", weights.bare, *NOISE)
    assert code == 2
    assert_error_line(err, "bare.lut", "no trailer", "--config")
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
