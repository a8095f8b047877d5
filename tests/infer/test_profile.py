"""Tests for kpn/infer/profile.py through ``kpn-infer``: which noise profile each input is
denoised with (--noise-a/b, --nprof, --nprof-dir, --noise auto), and what happens without one.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from kpn.io.images import read_any
from kpn.io.nprof import NoiseProfile, write_nprof
from kpn.io.pfm import write_pfm
from kpn.io.raw import read_raw

from conftest import assert_error_line
from infer_shared import expected, noisy_image, run, seeded_weights, write_dng

pytestmark = pytest.mark.usefixtures("one_thread")  # small images


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """infer_shared.seeded_weights, saved once for this module."""
    return seeded_weights(tmp_path_factory.mktemp("weights"))


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
    assert "an estimate from the image (a " in line and "not a camera raw file" in line
    a = float(line.split("(a, b) = (")[1].split(",")[0])
    assert a == pytest.approx(0.02**2 * 65535**2, rel=0.2)  # sigma 0.02, no signal term
    # ... and without it fails, naming the file
    code, out, err = run(
        capsys, tmp_path / "x.pfm", "--weights", weights.checkpoint, "--nprof-dir", profiles.folder
    )
    assert code == 1
    assert_error_line(err, "x.pfm", "no noise profile", "not a camera raw file")
    # a camera without a profile falls back too
    dng = write_dng(tmp_path / "camera.dng")
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = run(capsys, dng, "--weights", weights.checkpoint, "--nprof-dir", empty)
    assert code == 1
    assert_error_line(err, "no noise profile for KpnMaker KpnModel X-1")
