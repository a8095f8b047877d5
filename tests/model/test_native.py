"""Tests for kpn.model.native: the fused C loops against kpn's eager code, which defines them.

Each loop is compared with the eager function on strided views, batches, extreme values
and NaN kernels; the model with and without them; and the conditions under which they
apply (float32 CPU, no gradient) and build (a compiler, KPN_NATIVE, the cache).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import Tensor
from torch.testing import assert_close

from kpn.config import ModelConfig
from kpn.model import native
from kpn.model.apply import apply_kernel_padded, kernel_weights
from kpn.model.band import softmax_apply_backward
from kpn.model.features import luminance, star15_snr_features_padded
from kpn.model.network import KPN

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(native.library() is None, reason="no C compiler: the eager path only"),
]


@pytest.fixture
def eager(monkeypatch: pytest.MonkeyPatch):
    """Within the test, ``eager()`` runs a function with the native loops switched off."""
    built = native.library

    def run(function, *args):
        monkeypatch.setattr(native, "library", lambda: None)
        try:
            return function(*args)
        finally:
            monkeypatch.setattr(native, "library", built)

    return run


def band(batch: int, height: int, width: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A padded band as the model cuts it (a view into a taller level, rows strided) and
    the luminance of its centre, with negative values as a detail input has."""
    generator = torch.Generator().manual_seed(seed)
    level = 1.4 * torch.rand(batch, 3, height + 9, width + 4, generator=generator) - 0.3
    padded = level[:, :, 3 : 3 + height + 4]
    return padded, luminance(padded[:, :, 2:-2, 2:-2])


@pytest.mark.parametrize(("batch", "height", "width"), [(1, 7, 70), (3, 5, 9), (2, 1, 1)])
@pytest.mark.parametrize("level", [0, 3])
@pytest.mark.parametrize("chroma", [False, True])
def test_star15_snr_matches_eager(
    eager, batch: int, height: int, width: int, level: int, chroma: bool
):
    """star15_snr's 32 channels, and with model.chroma_input's 30 after them."""
    padded, noise_lum = band(batch, height, width)
    # from a nearly noise-free camera (ratios of 1e4 sigma) to a very noisy one; a = b = 0
    # floors sigma at 1e-7 (ratios of 1e7)
    profiles = [[100.0, 0.1], [4e6, 4000.0], [0.0, 0.0]]
    noise_ab = torch.tensor([profiles[i % 3] for i in range(batch)])
    fused = native.star15_snr_features(padded, noise_ab, level, noise_lum, chroma)
    expected = eager(star15_snr_features_padded, padded, noise_ab, level, noise_lum, chroma)
    channels = 62 if chroma else 32
    assert fused is not None and fused.shape == expected.shape == (batch, channels, height, width)
    assert fused.permute(0, 2, 3, 1).is_contiguous()  # each pixel's inputs together
    assert_close(fused, expected, rtol=1e-6, atol=1e-6)
    assert expected.abs().max() > 5  # the sweep reached far into the logarithm (150 sigma)


def test_signed_log1p_across_magnitudes(eager) -> None:
    """The features' logarithm from 1e-30 to 1e30, both signs, on a single row of taps."""
    width = 121
    values = torch.logspace(-30, 30, width)
    padded = torch.zeros(1, 3, 5, width + 4)
    padded[0, :, 2, 3 : width + 3] = values * torch.tensor([1.0, -1.0, 1.0])[:, None]
    noise_lum = torch.zeros(1, 1, width)
    noise_ab = torch.tensor([[65535.0**2, 0.0]])  # sigma 1: the taps themselves
    fused = native.star15_snr_features(padded, noise_ab, 0, noise_lum)
    expected = eager(star15_snr_features_padded, padded, noise_ab, 0, noise_lum)
    assert_close(fused, expected, rtol=3e-7, atol=1e-30)


@pytest.mark.parametrize(("batch", "channels", "height", "width"), [(1, 3, 6, 70), (2, 3, 3, 5)])
@pytest.mark.parametrize("taps", [15, 21])  # star15, star21
def test_softmax_apply_matches_eager(
    eager, batch: int, channels: int, height: int, width: int, taps: int
):
    padded, _ = band(batch, height, width, seed=1)
    generator = torch.Generator().manual_seed(2)
    kernel = 40.0 * torch.randn(batch, taps + 1, height, width, generator=generator)
    kernel[0, 3, 0, 0] = float("nan")  # a NaN tap weighs 1
    kernel[0, :taps, 0, 1] = float("nan")  # every tap NaN: the mean
    kernel[0, 5, 1, 2] = -float("inf")  # weighs 0
    kernel[0, taps - 1, 1, 3] = 1e30  # the others vanish
    logits = kernel[:, :taps]  # a view, as the model passes it
    fused = native.softmax_apply(padded, logits)
    expected = eager(lambda: apply_kernel_padded(padded, kernel_weights(logits, "softmax"), None))
    assert fused is not None and not fused.isnan().any()
    assert_close(fused, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("taps", [15, 21])
def test_softmax_apply_keeps_weights(eager, taps: int) -> None:
    """The weights it can hand back (for the band's backward pass) are kernel_weights'."""
    padded, _ = band(2, 4, 9, seed=4)
    logits = 30.0 * torch.randn(2, taps, 4, 9, generator=torch.Generator().manual_seed(5))
    tap_weights = torch.empty(2, taps, 4, 9)
    fused = native.softmax_apply(padded, logits, tap_weights)
    expected = eager(kernel_weights, logits, "softmax")
    assert_close(tap_weights, expected, rtol=1e-6, atol=1e-7)
    assert_close(fused, apply_kernel_padded(padded, expected, None), rtol=1e-6, atol=1e-6)


def test_softmax_apply_backward_matches_eager(eager) -> None:
    padded, _ = band(3, 5, 11, seed=6)
    generator = torch.Generator().manual_seed(7)
    tap_weights = kernel_weights(20.0 * torch.randn(3, 15, 5, 11, generator=generator), "softmax")
    filtered = apply_kernel_padded(padded, tap_weights, None)
    grad = torch.randn(3, 3, 5, 11, generator=generator)
    fused = native.softmax_apply_backward(grad, padded, tap_weights, filtered)
    expected = eager(softmax_apply_backward, grad, padded, tap_weights, filtered)
    assert fused is not None
    assert_close(fused, expected, rtol=1e-5, atol=1e-7)


def test_applies_to_float32_cpu_without_gradient() -> None:
    padded, noise_lum = band(1, 3, 4)
    noise_ab = torch.tensor([[1e4, 10.0]])
    assert (
        native.star15_snr_features(padded.double(), noise_ab.double(), 0, noise_lum.double())
        is None
    )
    wanting = padded.clone().requires_grad_()
    assert native.star15_snr_features(wanting, noise_ab, 0, noise_lum) is None
    with torch.no_grad():
        assert native.star15_snr_features(wanting, noise_ab, 0, noise_lum) is not None
    logits = torch.zeros(1, 15, 3, 4, requires_grad=True)
    assert native.softmax_apply(padded, logits) is None
    assert native.softmax_apply(padded, logits.detach()) is not None


@pytest.mark.parametrize(("precision", "tolerance"), [("fp32", 1e-5), ("bf16", 1e-3)])
@pytest.mark.parametrize("chroma", [False, True])
@pytest.mark.parametrize("kernel_taps", ["star15", "star21"])
def test_model_output_matches_eager(
    eager, precision: str, tolerance: float, chroma: bool, kernel_taps: str
):
    """The whole network, untiled (with chroma_kernel and chroma_input too, and star21's
    kernels): float32 within the issue's 1e-5 of the eager path; bfloat16 within a few of
    its roundings (a feature 1 ulp apart can round to another bfloat16)."""
    config = dataclasses.replace(
        ModelConfig(),
        levels=3,
        precision=precision,
        chroma_kernel=chroma,
        chroma_input=chroma,
        kernel_taps=kernel_taps,
    )
    torch.manual_seed(0)
    model = KPN(config)
    generator = torch.Generator().manual_seed(3)
    noisy = torch.rand(2, 3, 37, 45, generator=generator)
    noise_ab = torch.tensor([[2e4, 20.0], [1e5, 100.0]])
    with torch.no_grad():
        fused = model(noisy, noise_ab)
        expected = eager(model, noisy, noise_ab)
    assert_close(fused, expected, rtol=0, atol=tolerance)


def test_switched_off_and_without_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    native.library.cache_clear()
    try:
        monkeypatch.setenv("KPN_NATIVE", "0")
        assert native.library() is None
        native.library.cache_clear()
        monkeypatch.delenv("KPN_NATIVE")
        monkeypatch.setenv("CC", "/nonexistent/cc")
        assert native.build() is None
        assert native.library() is None
    finally:
        monkeypatch.undo()
        native.library.cache_clear()
    assert native.library() is not None


def test_build_caches_by_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KPN_CACHE", str(tmp_path))
    built = native.build()
    assert built is not None and built.parent == tmp_path and built.exists()
    modified = built.stat().st_mtime_ns
    assert native.build() == built and built.stat().st_mtime_ns == modified  # not rebuilt
    assert [path.name for path in tmp_path.iterdir()] == [built.name]  # no temporary left


def test_refuses_shapes_the_loops_would_overrun() -> None:
    padded, noise_lum = band(2, 3, 4)
    noise_ab = torch.tensor([[1e4, 10.0], [1e4, 10.0]])
    with pytest.raises(ValueError, match="padded"):
        native.star15_snr_features(padded[:, :, 1:], noise_ab, 0, noise_lum)
    with pytest.raises(ValueError, match="noise_ab"):
        native.star15_snr_features(padded, noise_ab[:1], 0, noise_lum)
    with pytest.raises(ValueError, match="logits"):
        native.softmax_apply(padded, torch.zeros(1, 15, 3, 4))
    with pytest.raises(ValueError, match="16 taps"):
        native.softmax_apply(padded, torch.zeros(2, 16, 3, 4))
    with pytest.raises(ValueError, match="tap_weights"):
        native.softmax_apply(padded, torch.zeros(2, 15, 3, 4), torch.empty(2, 15, 4, 3).mT)
