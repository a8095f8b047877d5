"""The weights line of kpn-infer says when the weights are a float16 ``.lut`` (issue 22,
item 9): a run's ``weights.lut`` differs from its float32 checkpoint, and
``python -m kpn export --dtype f32`` writes a ``.lut`` that does not."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from kpn.__main__ import main as kpn_main
from kpn.infer.weights import FLOAT16_NOTE, load_weights
from kpn.io.pfm import write_pfm

from infer_shared import DESIGN, NOISE, noisy_image, run, seeded_weights

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    return seeded_weights(tmp_path_factory.mktemp("weights"))


def weights_line(
    capsys: pytest.CaptureFixture, folder: Path, weights: object, *more: object
) -> str:
    """The first line kpn-infer prints, the one naming the weights."""
    write_pfm(folder / "a.pfm", noisy_image(8, 8))
    code, out, err = run(capsys, folder / "a.pfm", "--weights", weights, *more, *NOISE)
    assert (code, err) == (0, "")
    return out.splitlines()[0]


@pytest.mark.parametrize("which", ["lut", "bare", "lut_run"])
def test_float16_lut_says_so(
    tmp_path: Path, weights: SimpleNamespace, capsys: pytest.CaptureFixture, which: str
) -> None:
    """kpn's .lut, vkdt's bare one, and a run folder that holds only its weights.lut."""
    told = ["--config", DESIGN] if which == "bare" else []  # vkdt's says no model
    line = weights_line(capsys, tmp_path, getattr(weights, which), *told)
    assert line.startswith("weights ") and f"; {FLOAT16_NOTE}; " in line
    assert "float16 weights: outputs up to ~2e-4" in line and "export --dtype f32" in line


@pytest.mark.parametrize("which", ["run", "checkpoint"])
def test_float32_weights_do_not(
    tmp_path: Path, weights: SimpleNamespace, capsys: pytest.CaptureFixture, which: str
) -> None:
    line = weights_line(capsys, tmp_path, getattr(weights, which))
    assert line.startswith("weights ") and "float16" not in line


def test_export_f32_is_the_checkpoint_exactly(
    tmp_path: Path, weights: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    """``export --dtype f32``: the .lut kpn reads back holds the checkpoint's float32
    weights bit for bit, and infer names it without the float16 note."""
    lut = tmp_path / "f32.lut"
    assert kpn_main(["export", str(weights.checkpoint), "-o", str(lut), "--dtype", "f32"]) == 0
    capsys.readouterr()
    loaded = load_weights(lut)
    for got, want in zip(loaded.model.mlp.weights, weights.model.mlp.weights, strict=True):
        torch.testing.assert_close(got, want.detach(), rtol=0, atol=0)
    assert "float16" not in loaded.description
    assert "float16" not in weights_line(capsys, tmp_path, lut)
