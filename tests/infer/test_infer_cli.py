"""Tests for kpn/infer/cli.py (``kpn-infer``): ``main(argv)`` end to end on generated files.

Every output is compared with :func:`kpn.model.network.kpn_forward` of the same weights on the
input as read back, so the tests see the numbers, not only that files appear. How weights,
the denoiser, noise profiles and files behave under the command line is tested beside their
modules (test_weights, test_denoiser, test_profile, test_files).
"""

from __future__ import annotations

import dataclasses
import io
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile

from kpn.infer.cli import main
from kpn.infer.denoiser import Denoiser
from kpn.io.checkpoint import save_checkpoint
from kpn.io.images import read_any, read_image, write_image
from kpn.io.pfm import write_pfm
from kpn.io.raw import read_raw

from conftest import assert_error_line
from infer_shared import (
    DESIGN,
    NOISE,
    ROOT,
    error_lines,
    expected,
    leftovers,
    noisy_image,
    run,
    seeded_weights,
    training_state,
    write_dng,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # small images


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """infer_shared.seeded_weights, saved once for this module."""
    return seeded_weights(tmp_path_factory.mktemp("weights"))


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


# --- failures and bad input ------------------------------------------------------------
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
        (["--weights", "{tmp}/absent.pt"], ["--weights", "absent.pt: no such weights file"]),
        (["--weights", "{tmp}/garbage.pt"], ["garbage.pt", "not a readable checkpoint"]),
        (["--weights", "{tmp}/garbage.lut"], ["garbage.lut", "magic"]),
        (["--weights", "{tmp}/wide.pt"], ["wide.pt", "do not fit"]),
        (["--weights", "{lut}", "--config", "{head}"], ["model.width", "64"]),
        (["--weights", "{ckpt}", "--config", "{head}"], ["model.", "trained with"]),
        (["--weights", "{ckpt}", "--noise-a", "-5", "--noise-b", "1"], ["--noise-a", ">= 0"]),
        (["--weights", "{ckpt}", "--nprof", "{tmp}/Neg-Cam-100.nprof"], ["negative"]),
        (["--weights", "{ckpt}", "--noise-a", "5"], ["go together"]),
        (["--weights", "{ckpt}"], ["no noise profile"]),
        (["--weights", "{ckpt}", *NOISE, "--out-dir", "{tmp}/file/sub"], ["sub: cannot create"]),
        (["--weights", "{ckpt}", *NOISE, "--tile", "3"], ["--tile 3: must be 0 (untiled)"]),
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
    assert_error_line(err, *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


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
        assert_error_line(err, name, "too small to estimate")
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
    assert_error_line(err, "-o", "2 inputs")
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
    assert_error_line(err, "contradicts --format pfm")
    assert main(["--weights", str(weights.checkpoint)]) == 2  # argparse: no input
    capsys.readouterr()


# --- wrappers and limits --------------------------------------------------------------
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
    assert 'kpn-infer = "kpn.cli:kpn_infer"' in (ROOT / "pyproject.toml").read_text()


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
    assert_error_line(err, "a.pfm", "out of memory")
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
    assert_error_line(err, "bad.toml", *words)


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
