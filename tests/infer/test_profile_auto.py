"""What a user without a profile sees (issue 25): ``kpn-infer --noise auto`` prints the
estimate with its standard error or refuses the file in one line that says what to give,
and ``kpn.denoise(image)`` estimates the profile itself."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import kpn
from kpn.errors import KpnError
from kpn.infer.noise_estimate import estimate_noise
from kpn.io.pfm import write_pfm

from conftest import assert_error_line, assert_one_line_error
from infer_shared import clean_image, noisy_image, run, seeded_weights

pytestmark = pytest.mark.usefixtures("one_thread")  # small images


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """infer_shared.seeded_weights, saved once for this module."""
    return seeded_weights(tmp_path_factory.mktemp("weights"))


def test_auto_prints_the_estimate_and_its_error(
    tmp_path: Path, weights: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    image = noisy_image(96, 96, sigma=0.02)
    write_pfm(tmp_path / "x.pfm", image)
    code, out, err = run(
        capsys, tmp_path / "x.pfm", "--weights", weights.checkpoint, "--noise", "auto"
    )
    assert (code, err) == (0, "")
    line = next(line for line in out.splitlines() if "noise (a, b)" in line)
    estimate = estimate_noise(image)
    assert line.startswith(
        f"{tmp_path / 'x.pfm'}: noise (a, b) = ({estimate.a:.6g}, {estimate.b:.6g})"
    )
    assert estimate.describe() in line
    match = re.search(r"sigma ([\d.e-]+)/([\d.e-]+)/([\d.e-]+) at 10/50/90% grey \+- (\d+)%", line)
    assert match is not None, line
    assert float(match[2]) == pytest.approx(0.02, rel=0.05)  # the true sigma
    assert 0 <= int(match[4]) < 10


@pytest.mark.parametrize(
    ("name", "image", "reason"),
    [
        ("flat.pfm", clean_image(96, 96), "too flat to estimate its noise"),
        ("black.pfm", np.zeros((96, 96, 3), dtype=np.float32), "too clipped to estimate"),
        ("tiny.pfm", noisy_image(30, 30), "30 x 30 is too small to estimate"),
    ],
)
def test_auto_refuses_in_one_line_saying_what_to_give(
    tmp_path: Path,
    weights: SimpleNamespace,
    capsys: pytest.CaptureFixture,
    name: str,
    image: np.ndarray,
    reason: str,
) -> None:
    write_pfm(tmp_path / name, image)
    code, _, err = run(capsys, tmp_path / name, "--weights", weights.checkpoint, "--noise", "auto")
    assert code == 1
    line = assert_error_line(err, tmp_path / name, reason)
    assert line.endswith("give the profile (--noise-a and --noise-b, or --nprof)"), line
    assert not (tmp_path / name.replace(".pfm", ".denoised.pfm")).exists()


def test_denoise_without_a_profile_estimates_it() -> None:
    image = noisy_image(96, 96, sigma=0.02)
    model = kpn.load(tile=0)
    estimate = estimate_noise(image)
    np.testing.assert_array_equal(
        kpn.denoise(image, weights=model), model(image, (estimate.a, estimate.b))
    )
    batch = np.stack([image, noisy_image(96, 96, sigma=0.05, seed=1)]).transpose(0, 3, 1, 2)
    out = model(torch.from_numpy(batch))
    second = estimate_noise(batch[1].transpose(1, 2, 0))
    want = model(batch[1].transpose(1, 2, 0).copy(), (second.a, second.b))
    np.testing.assert_allclose(out[1].numpy().transpose(1, 2, 0), want, atol=1e-6)


def test_denoise_without_a_profile_refuses_in_one_line() -> None:
    model = kpn.load(tile=0)
    with pytest.raises(KpnError, match="too flat") as err:
        kpn.denoise(clean_image(96, 96), weights=model)
    line = assert_one_line_error(err, starts="image: ")
    assert line.endswith("give the profile: denoise(image, (a, b))")
