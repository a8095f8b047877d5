"""Finite in, finite out: every noise profile kpn accepts, however absurd, gives a finite
image or a one-line refusal, never NaN or Inf pixels (issue 22: b = 1e34 overflowed the
SURE blend's float32 sums and infer wrote 99.9% NaN with exit status 0)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

import kpn
from kpn.errors import KpnError
from kpn.infer.denoiser import F16_MAX, Denoiser
from kpn.infer.profile import NOISE_MAX
from kpn.infer.sure import risk_sums, sure_blend, weight_of_sums
from kpn.io.pfm import read_pfm, write_pfm
from kpn.model import native

from conftest import assert_error_line, assert_one_line_error
from infer_shared import error_lines, leftovers, noisy_image, run

pytestmark = pytest.mark.usefixtures("one_thread")  # 24 x 24 images

# From no noise through tiny (a sigma far below float32's resolution of a pixel) to float32's
# largest value: every a against every b.
VALUES = (0.0, 1e-30, 1e-10, 1.0, 1e4, 1e10, 1e20, 1e30, 1e34, 1e38, NOISE_MAX)
PROFILES = list(itertools.product(VALUES, VALUES))


@pytest.fixture(scope="module")
def models() -> dict[tuple[str, bool], kpn.Model]:
    """The shipped design model in float32 and in vkdt's float16, SURE on and off."""
    return {
        (precision, sure): kpn.load(precision=precision, sure=sure, tile=0)
        for precision in ("fp32", "vkdt-f16")
        for sure in (True, False)
    }


def images() -> dict[str, np.ndarray]:
    return {
        "photo": noisy_image(24, 24),
        "black": np.zeros((24, 24, 3), np.float32),
        "hdr": noisy_image(24, 24) * np.float32(5000),  # inside float16's range
    }


@pytest.mark.parametrize("path", ["native", "eager"])
@pytest.mark.parametrize("sure", [True, False], ids=["sure", "network"])
@pytest.mark.parametrize("precision", ["fp32", "vkdt-f16"])
def test_every_profile_gives_a_finite_image(
    models: dict[tuple[str, bool], kpn.Model],
    monkeypatch: pytest.MonkeyPatch,
    precision: str,
    sure: bool,
    path: str,
) -> None:
    """``eager``: without the C loops of kpn.model.native, as on CUDA (the features' level
    channel log2(65535 sigma) was inf there for a profile near float32's largest)."""
    if path == "eager":
        monkeypatch.setattr(native, "library", lambda: None)
    model = models[precision, sure]
    broken = []
    for (name, image), (a, b) in itertools.product(images().items(), PROFILES):
        out = model(image, (a, b))
        if not np.isfinite(out).all():
            broken.append((name, a, b, float(np.mean(~np.isfinite(out)))))
    assert not broken, f"{len(broken)} NaN/Inf outputs (image, a, b, fraction): {broken[:6]}"


def test_a_huge_profile_blends_to_the_network_and_a_tiny_one_to_the_input(
    models: dict[tuple[str, bool], kpn.Model],
) -> None:
    """The limits SURE tends to: noise far above the image, the network's output (the
    weight clipped at 1); noise far below float32's resolution, the input."""
    image = noisy_image(24, 24)
    sure, network = models["fp32", True], models["fp32", False]
    np.testing.assert_allclose(sure(image, (0, 1e34)), network(image, (0, 1e34)), atol=1e-6)
    np.testing.assert_allclose(sure(image, (1e-30, 0)), image, atol=1e-6)


def test_risk_sums_of_a_huge_profile_are_finite_and_weigh_fully_towards_the_network() -> None:
    """b = 1e34 at a pixel of 1: the noise variance 65535 b / 65535^2 overflows float32."""
    noisy = np.ones((8, 8, 3), np.float32)
    denoised = np.full_like(noisy, 0.5)
    signs = np.ones((8, 8, 3), np.int8)
    reduction, residual = risk_sums(noisy, denoised, denoised, signs, 1.0, 0.0, 1e34)
    assert bool(reduction.isfinite().all()) and bool(residual.isfinite().all())
    assert float(weight_of_sums(reduction, residual, 3).min()) == 1.0


def test_the_blend_of_values_far_apart_does_not_overflow() -> None:
    """y + lambda (f - y) with f - y beyond float32's range: computed wider, it lies
    between the two."""
    noisy = np.full((4, 4, 3), -3e38, np.float32)
    noisy[::2] = 3e38  # the input's rows alternate, the network's output is their opposite
    out = sure_blend(lambda image: -image, noisy, 1e38, 0.0, 0)
    assert np.isfinite(out).all()
    assert np.all(np.abs(out) <= 3e38)


def test_vkdt_f16_refuses_values_beyond_float16(models: dict[tuple[str, bool], kpn.Model]):
    image = noisy_image(24, 24)
    image[3, 4] = 1e5
    with pytest.raises(KpnError) as caught:
        models["vkdt-f16", False](image, (100, 1))
    assert_one_line_error(caught, "100000", f"{F16_MAX:.0f}", "precision='fp32'")
    # SURE's perturbed input counts: noise far above the image probes at 0.1 of its peak
    image = np.full((24, 24, 3), 60000, np.float32)
    assert np.isfinite(models["vkdt-f16", False](image, (0, 1e38))).all()
    with pytest.raises(KpnError, match="SURE's probe 66000"):
        models["vkdt-f16", True](image, (0, 1e38))


def break_network(monkeypatch: pytest.MonkeyPatch, value: float) -> None:
    """The network, with SURE's one pass or without, gives ``value`` at every pixel."""
    monkeypatch.setattr(Denoiser, "network", lambda self, image, a, b, progress=None: image * value)
    monkeypatch.setattr(
        Denoiser,
        "network_along",
        lambda self, image, signs, step, a, b, progress=None: (image * value, image * 0),
    )


def test_non_finite_output_is_an_error_not_a_result(
    monkeypatch: pytest.MonkeyPatch, models: dict[tuple[str, bool], kpn.Model]
) -> None:
    """The last line of defence: a network that returns NaN (a bug) is a KpnError."""
    break_network(monkeypatch, np.nan)
    for sure in (True, False):
        with pytest.raises(KpnError) as caught:
            models["fp32", sure](noisy_image(24, 24), (100, 1))
        assert_one_line_error(caught, "NaN or Inf", "kpn bug")


def test_infer_writes_a_finite_image_for_a_huge_profile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's command: the output is finite, and infer reads its own output back."""
    write_pfm(tmp_path / "in.pfm", noisy_image(24, 24))
    out = tmp_path / "out.pfm"
    flags = ["--noise-a", "0", "--noise-b", "1e34", "--precision", "fp32", "--tile", "0"]
    code, _, err = run(capsys, tmp_path / "in.pfm", "-o", out, *flags)
    assert (code, error_lines(err)) == (0, [])
    assert np.isfinite(read_pfm(out)).all()
    code, _, err = run(capsys, out, "-o", tmp_path / "again.pfm", *flags)
    assert (code, error_lines(err)) == (0, [])


def test_infer_refuses_what_the_precision_cannot_hold_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = noisy_image(24, 24)
    image[0, 0] = 1e6
    write_pfm(tmp_path / "in.pfm", image)
    out = tmp_path / "out.pfm"
    code, _, err = run(
        capsys, tmp_path / "in.pfm", "-o", out, "--noise-a", "1", "--noise-b", "1",
        "--precision", "vkdt-f16", "--tile", "0",
    )  # fmt: skip
    assert code == 1
    assert_error_line(err, tmp_path / "in.pfm", "65504", "--precision fp32")
    assert not out.exists()
    assert leftovers(tmp_path) == []


def test_infer_writes_nothing_when_the_output_is_not_finite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    break_network(monkeypatch, np.inf)
    write_pfm(tmp_path / "in.pfm", noisy_image(24, 24))
    out = tmp_path / "out.pfm"
    code, _, err = run(capsys, tmp_path / "in.pfm", "-o", out, "--noise-a", "1", "--noise-b", "1")
    assert code == 1
    assert_error_line(err, tmp_path / "in.pfm", "NaN or Inf")
    assert not out.exists()
    assert leftovers(tmp_path) == []
