"""Tests for kpn/infer/files.py: inputs (folders, globs), output names, formats and bit
depths, refusals to overwrite, unwritable folders, the reference image, banded encoding.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import kpn.infer.files as files_module
from kpn.errors import KpnError
from kpn.io.images import read_image, write_image
from kpn.io.pfm import write_pfm
from kpn.metrics import psnr

from conftest import assert_error_line
from infer_shared import NOISE, clean_image, expected, noisy_image, run, seeded_weights

pytestmark = pytest.mark.usefixtures("one_thread")  # small images


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """infer_shared.seeded_weights, saved once for this module."""
    return seeded_weights(tmp_path_factory.mktemp("weights"))


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
    assert_error_line(err, "refused", "overwrite the input")
    code, _, err = run(
        capsys, tmp_path / "x.pfm", "--weights", weights.checkpoint, *NOISE, "--out-dir", tmp_path
    )
    assert code == 1
    assert_error_line(err, "refused", "x.pfm")
    assert (tmp_path / "x.pfm").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pfm"]


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
    assert_error_line(err, target, "cannot write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "x.pfm"]


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
    assert_error_line(err, "*.png", "matches no image files")


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
    assert_error_line(err, "small.pfm", "32 x 16")
    assert not (tmp_path / "o.pfm").exists()


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
