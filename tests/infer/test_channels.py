"""kpn-infer keeps an input's channels (issue 22, item 4): an alpha plane passes through
untouched, a grey file is denoised as grey and written grey, in its bit depth; an alpha
plane that the output format cannot hold is refused before any work, in one line."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import imagecodecs
import numpy as np
import pytest
import tifffile

from kpn.infer.files import Kept, gray_of
from kpn.io.images import encode_srgb, srgb_to_linear
from kpn.io.pfm import read_pfm, write_pfm

from conftest import assert_error_line
from infer_shared import error_lines, expected, leftovers, noisy_image, run, seeded_weights

pytestmark = pytest.mark.usefixtures("one_thread")  # small images

# The network alone: the seeded model's own output, far from its input, shows the colour
# denoised (SURE would blend it back towards the input).
NOISE = ["--noise-a", "20000", "--noise-b", "4", "--sure", "off"]

PNG_COLOR_TYPE = {0: "grey", 2: "RGB", 4: "grey+alpha", 6: "RGBA"}  # IHDR byte 25


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    return seeded_weights(tmp_path_factory.mktemp("weights"))


def png_header(path: Path) -> tuple[int, str]:
    """(bit depth, colour type) of a PNG's IHDR."""
    data = path.read_bytes()
    return data[24], PNG_COLOR_TYPE[data[25]]


def alpha_plane(height: int, width: int, bits: int) -> np.ndarray:
    """Every kind of coverage: 0, the maximum, and random codes between."""
    dtype = np.uint8 if bits == 8 else np.uint16
    alpha = np.random.default_rng(7).integers(0, np.iinfo(dtype).max + 1, (height, width))
    alpha[0, 0], alpha[0, 1] = 0, np.iinfo(dtype).max
    return alpha.astype(dtype)


def denoised_codes(weights: SimpleNamespace, codes: np.ndarray, bits: int) -> np.ndarray:
    """The codes infer should write for colour ``codes`` ``[H,W,3]``."""
    linear = srgb_to_linear(codes / float((1 << bits) - 1)).astype(np.float32)
    return encode_srgb(expected(weights.model, linear, sure=False), bits)


def assert_codes_close(got: np.ndarray, want: np.ndarray) -> None:
    """Within one code: the network's float arithmetic against expected()'s, rounded."""
    assert np.abs(got.astype(np.int64) - want.astype(np.int64)).max() <= 1


@pytest.mark.parametrize("bits", [8, 16])
def test_rgba_png_keeps_its_alpha(
    tmp_path: Path, weights: SimpleNamespace, capsys: pytest.CaptureFixture, bits: int
) -> None:
    color = encode_srgb(noisy_image(24, 32), bits)
    alpha = alpha_plane(24, 32, bits)
    source = tmp_path / "photo.png"
    source.write_bytes(imagecodecs.png_encode(np.dstack([color, alpha])))
    code, out, err = run(capsys, source, "--weights", weights.checkpoint, *NOISE)
    assert (code, err) == (0, "")
    output = tmp_path / "photo.denoised.png"
    assert png_header(output) == (bits, "RGBA")
    assert f"-> {output} (32 x 24, " in out and "s; alpha kept unchanged)" in out
    written = imagecodecs.png_decode(output.read_bytes())
    np.testing.assert_array_equal(written[:, :, 3], alpha)  # untouched, bit for bit
    assert_codes_close(written[:, :, :3], denoised_codes(weights, color, bits))
    assert (written[:, :, :3] != color).mean() > 0.5  # and the colour is denoised


@pytest.mark.parametrize(("bits", "kind"), [(8, "grey"), (16, "grey"), (16, "grey+alpha")])
def test_grey_png_stays_grey(
    tmp_path: Path, weights: SimpleNamespace, capsys: pytest.CaptureFixture, bits: int, kind: str
) -> None:
    grey = encode_srgb(noisy_image(24, 32)[:, :, 1], bits)
    alpha = alpha_plane(24, 32, bits)
    source = tmp_path / "scan.png"
    stored = np.dstack([grey, alpha]) if kind == "grey+alpha" else grey
    source.write_bytes(imagecodecs.png_encode(stored))
    code, out, err = run(capsys, source, "--weights", weights.checkpoint, *NOISE)
    assert (code, err) == (0, "")
    output = tmp_path / "scan.denoised.png"
    assert png_header(output) == (bits, kind)
    note = "grayscale, denoised as gray" + (
        "; alpha kept unchanged" if kind == "grey+alpha" else ""
    )
    assert f"s; {note})" in out
    written = imagecodecs.png_decode(output.read_bytes())
    if kind == "grey+alpha":
        np.testing.assert_array_equal(written[:, :, 1], alpha)
        written = written[:, :, 0]
    want = denoised_codes(weights, np.repeat(grey[:, :, None], 3, axis=2), bits)
    np.testing.assert_array_equal(want[:, :, 0], want[:, :, 2])  # the network keeps grey grey
    assert_codes_close(written, want[:, :, 1])


def test_grey_pfm_stays_grey(
    tmp_path: Path, weights: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    grey = noisy_image(24, 32)[:, :, 2]
    write_pfm(tmp_path / "grey.pfm", grey)
    code, out, err = run(capsys, tmp_path / "grey.pfm", "--weights", weights.checkpoint, *NOISE)
    assert (code, err) == (0, "")
    output = tmp_path / "grey.denoised.pfm"
    assert output.read_bytes()[:2] == b"Pf"
    assert "s; grayscale, denoised as gray)" in out
    want = expected(weights.model, np.repeat(grey[:, :, None], 3, axis=2), sure=False)
    np.testing.assert_allclose(read_pfm(output), want[:, :, 0], atol=1e-5)


def test_float_tiff_grey_alpha_keeps_its_kind_and_floats(
    tmp_path: Path, weights: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    """Float alpha, outside [0, 1] too, comes back as it was, with the TIFF's alpha kind;
    a 16-bit PNG from it gets the alpha as codes."""
    grey = noisy_image(24, 32)[:, :, 0]
    alpha = np.random.default_rng(3).random((24, 32)).astype(np.float32)
    alpha[0, 0] = 1.5
    tifffile.imwrite(
        tmp_path / "f.tif", np.dstack([grey, alpha]), photometric="minisblack",
        extrasamples=["assocalpha"],
    )  # fmt: skip
    code, _, err = run(capsys, tmp_path / "f.tif", "--weights", weights.checkpoint, *NOISE)
    assert (code, err) == (0, "")
    with tifffile.TiffFile(tmp_path / "f.denoised.tif") as tif:
        page = tif.pages.first
        assert (page.dtype, page.extrasamples) == (np.float32, (1,))  # associated alpha
        written = page.asarray()
    np.testing.assert_array_equal(written[:, :, 1], alpha)
    want = expected(weights.model, np.repeat(grey[:, :, None], 3, axis=2), sure=False)
    np.testing.assert_allclose(written[:, :, 0], want[:, :, 0], atol=1e-5)
    code, _, err = run(
        capsys, tmp_path / "f.tif", "--weights", weights.checkpoint, *NOISE, "--format", "png"
    )
    assert (code, err) == (0, "")
    written = imagecodecs.png_decode((tmp_path / "f.denoised.png").read_bytes())
    assert written.dtype == np.uint16 and written.shape == (24, 32, 2)
    np.testing.assert_array_equal(
        written[:, :, 1], np.rint(np.clip(alpha.astype(np.float64), 0, 1) * 65535)
    )


@pytest.mark.parametrize(("fmt", "name"), [("pfm", "photo.denoised.pfm"), (None, "out.jpg")])
def test_alpha_the_output_cannot_hold_is_refused(
    tmp_path: Path,
    weights: SimpleNamespace,
    capsys: pytest.CaptureFixture,
    fmt: str | None,
    name: str,
) -> None:
    source = tmp_path / "photo.png"
    rgba = np.dstack([encode_srgb(noisy_image(8, 8), 8), alpha_plane(8, 8, 8)])
    source.write_bytes(imagecodecs.png_encode(rgba))
    where = ["--format", fmt] if fmt else ["-o", tmp_path / name]
    code, _, err = run(capsys, source, "--weights", weights.checkpoint, *NOISE, *where)
    assert code == 1
    assert len(error_lines(err)) == 1
    assert_error_line(err, str(source), "has an alpha channel", "PNG or TIFF")
    assert not (tmp_path / name).exists() and leftovers(tmp_path) == []


def test_gray_of_is_exact_for_equal_channels() -> None:
    """The mean is taken in float64: three equal float32 values give that value back,
    where a float32 mean would round (3x / 3 is not always x in float32)."""
    values = np.random.default_rng(0).random((300, 5)).astype(np.float32) * 7
    image = np.repeat(values[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(gray_of(image), values)
    assert (image.mean(2, dtype=np.float32) != values).any()  # the rounding it avoids
    np.testing.assert_allclose(gray_of(np.dstack([values, 2 * values, 3 * values])), 2 * values)


def test_kept_notes() -> None:
    assert Kept().note() == ""
    assert Kept(gray=True).note() == "grayscale, denoised as gray"
    alpha = np.zeros((2, 2), np.uint8)
    assert Kept(True, alpha).note() == "grayscale, denoised as gray; alpha kept unchanged"
    assert Kept(alpha=alpha).note() == "alpha kept unchanged"
