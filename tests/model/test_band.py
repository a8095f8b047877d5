"""Tests for kpn.model.band: the training band's hand-written backward pass.

Its forward is checked against the plain path it replaces (mlp_forward_planar,
kernel_weights, apply_kernel_padded), its gradients against autograd of that path and by
float64 gradcheck, the softmax-filter gradient against a case worked by hand, and the
model's use of it: taken exactly where it computes what the config's model computes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import Tensor
from torch.autograd import gradcheck
from torch.testing import assert_close

import kpn.model.level_filter
import kpn.model.network
from kpn.config import ModelConfig, load_config
from kpn.model.apply import apply_kernel_padded, kernel_weights
from kpn.model.band import band_applies, band_forward, softmax_apply_backward
from kpn.model.features import STAR15_TAPS
from kpn.model.mlp import mlp_forward_planar
from kpn.model.network import kpn_forward

pytestmark = pytest.mark.usefixtures("one_thread")
F64 = torch.float64
ROOT = Path(__file__).resolve().parents[2]


def band_case(batch: int, height: int, width: int, dtype: torch.dtype, seed: int = 0):
    """Features, a padded X and an MLP of 2 hidden layers of 8, of a band."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(batch, 32, height * width, generator=generator, dtype=dtype)
    padded = torch.rand(batch, 3, height + 4, width + 4, generator=generator, dtype=dtype)
    sizes = [(8, 32), (8, 8), (16, 8)]
    weights = [torch.randn(size, generator=generator, dtype=dtype) / 3 for size in sizes]
    return inputs, padded, [weight.requires_grad_() for weight in weights]


def plain_band(
    inputs: Tensor, padded: Tensor, weights: list[Tensor], activation: str, precision: str
) -> tuple[Tensor, Tensor]:
    """What kpn.model.network computes without the band: the path whose gradients autograd takes."""
    height, width = padded.shape[-2] - 4, padded.shape[-1] - 4
    outputs = mlp_forward_planar(inputs, weights, activation, precision)
    outputs = outputs.view(inputs.shape[0], 16, height, width)
    filtered = apply_kernel_padded(padded, kernel_weights(outputs[:, :15], "softmax"), None)
    return filtered, outputs[:, 15:]


def loss_of(filtered: Tensor, alpha: Tensor, seed: int = 1) -> Tensor:
    """A loss that weighs every output differently, so that no gradient cancels."""
    generator = torch.Generator().manual_seed(seed)
    weigh_filtered = torch.randn(filtered.shape, generator=generator, dtype=filtered.dtype)
    weigh_alpha = torch.randn(alpha.shape, generator=generator, dtype=alpha.dtype)
    return (weigh_filtered * filtered).sum() + (weigh_alpha * alpha).sum()


@pytest.mark.parametrize("activation", ["leaky_relu", "relu", "none"])
def test_gradcheck(activation: str) -> None:
    inputs, padded, weights = band_case(2, 3, 4, F64)

    def band(*matrices: Tensor) -> tuple[Tensor, Tensor]:
        return band_forward(inputs, padded, matrices, activation, "fp32")

    assert gradcheck(band, tuple(weights))


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("activation", ["leaky_relu", "relu", "none"])
def test_equals_autograd_of_plain_path_fp32(batch: int, activation: str) -> None:
    inputs, padded, weights = band_case(batch, 5, 7, torch.float32)
    results = []
    for path in (band_forward, plain_band):
        filtered, alpha = path(inputs, padded, weights, activation, "fp32")
        grads = torch.autograd.grad(loss_of(filtered, alpha), weights)
        results.append((filtered, alpha, grads))
    (filtered, alpha, grads), (plain_filtered, plain_alpha, plain_grads) = results
    # the products run on other layouts (pixel rows, a batch's together): to rounding
    assert_close(filtered, plain_filtered, rtol=1e-6, atol=1e-6)
    assert_close(alpha, plain_alpha, rtol=1e-6, atol=1e-6)
    for grad, plain_grad in zip(grads, plain_grads, strict=True):
        # float32 sums in other orders: to 1e-5 of the largest gradient
        assert_close(grad, plain_grad, rtol=1e-5, atol=1e-5 * plain_grad.abs().max().item())


def test_equals_autograd_of_plain_path_bf16() -> None:
    """bfloat16 products: the forward to a few bfloat16 roundings (the band's products
    take their activation before rounding), gradients to bfloat16's 8 bits."""
    inputs, padded, weights = band_case(2, 8, 9, torch.float32, seed=3)
    results = []
    for path in (band_forward, plain_band):
        filtered, alpha = path(inputs, padded, weights, "leaky_relu", "bf16")
        grads = torch.autograd.grad(loss_of(filtered, alpha), weights)
        results.append((filtered, alpha, grads))
    (filtered, alpha, grads), (plain_filtered, plain_alpha, plain_grads) = results
    assert_close(filtered, plain_filtered, rtol=0, atol=1e-3)
    assert_close(alpha, plain_alpha, rtol=0, atol=1e-3)
    for grad, plain_grad in zip(grads, plain_grads, strict=True):
        assert grad.dtype == torch.float32
        scale = plain_grad.abs().max()
        assert_close(grad / scale, plain_grad / scale, rtol=0, atol=2e-2)


def test_softmax_apply_backward_by_hand() -> None:
    """Two taps live (logits 0 and 10*ln 3: weights 1/4 and 3/4), one channel: I = (X_a +
    3 X_b) / 4, dI/dz_a = 0.1 w_a (X_a - I), dI/dz_b = 0.1 w_b (X_b - I)."""
    centre, right = STAR15_TAPS.index((0, 0)), STAR15_TAPS.index((1, 0))
    logits = torch.full((1, 15, 1, 1), -1e4, dtype=F64)  # exp(-1000): the other taps are 0
    logits[0, centre] = 0.0
    logits[0, right] = 10.0 * torch.log(torch.tensor(3.0, dtype=F64))
    padded = torch.zeros(1, 1, 5, 5, dtype=F64)
    padded[0, 0, 2, 2] = 2.0  # X at the centre
    padded[0, 0, 2, 3] = 6.0  # X one to the right
    tap_weights = kernel_weights(logits, "softmax")
    filtered = apply_kernel_padded(padded, tap_weights, None)
    assert filtered.item() == pytest.approx((2.0 + 3 * 6.0) / 4)  # 5
    grad = softmax_apply_backward(torch.ones_like(filtered), padded, tap_weights, filtered)
    expected = torch.zeros(15, dtype=F64)
    expected[centre] = 0.1 * 0.25 * (2.0 - 5.0)
    expected[right] = 0.1 * 0.75 * (6.0 - 5.0)
    assert_close(grad.flatten(), expected, rtol=1e-12, atol=1e-12)


def test_softmax_apply_backward_flat_image_is_zero() -> None:
    """Every tap reads the same value: no kernel changes the output, no logit has a
    gradient."""
    padded = torch.full((2, 3, 6, 7), 0.5, dtype=F64)
    logits = torch.randn(2, 15, 2, 3, dtype=F64)
    tap_weights = kernel_weights(logits, "softmax")
    filtered = apply_kernel_padded(padded, tap_weights, None)
    grad = softmax_apply_backward(torch.randn_like(filtered), padded, tap_weights, filtered)
    assert_close(grad, torch.zeros_like(grad), rtol=0, atol=1e-15)


@pytest.mark.parametrize(
    ("preset", "applies"),
    [
        ("configs/design.toml", True),
        ("configs/long.toml", True),
        ("configs/vkdt-head.toml", False),
        ("configs/vkdt-head-w32.toml", False),
        ("configs/vkdt-2024-02.toml", False),
    ],
)
def test_band_applies_to_presets(preset: str, applies: bool) -> None:
    assert band_applies(load_config(ROOT / preset).model) is applies


def test_band_applies_needs_softmax_and_no_transpose() -> None:
    design = ModelConfig()
    assert band_applies(design)
    assert band_applies(dataclasses.replace(design, precision="bf16"))
    assert not band_applies(dataclasses.replace(design, kernel_activation="plain"))
    assert not band_applies(dataclasses.replace(design, block_transpose=True))
    assert not band_applies(dataclasses.replace(design, precision="vkdt-f16"))


MODEL_VARIANTS = {
    "design": {},
    "star15": {"features": "star15"},
    "add-detail": {"blend": "add", "mlp_input": "detail"},
    "post_diff": {"blend": "post_diff"},
    "relu": {"activation": "relu"},
    "alpha-const": {"alpha_activation": "const"},
    "denoise_levels-1": {"denoise_levels": 1},
    "guide": {"guide": "centre", "width": 48},  # read as data: no gradient through it
}


def model_case(changes: dict[str, object], dtype: torch.dtype):
    config = dataclasses.replace(
        ModelConfig(), **({"levels": 3, "width": 32, "n_hidden": 2} | changes)
    )
    torch.manual_seed(0)
    weights = [w.to(dtype).requires_grad_() for w in kpn.model.network.KPN(config).mlp.weights]
    generator = torch.Generator().manual_seed(2)
    noisy = 0.1 + 0.9 * torch.rand(2, 3, 11, 13, generator=generator, dtype=dtype)
    noise_ab = torch.tensor([[1e5, 100.0], [2e4, 20.0]], dtype=dtype)
    return config, weights, noisy, noise_ab


@pytest.mark.parametrize("changes", MODEL_VARIANTS.values(), ids=MODEL_VARIANTS.keys())
def test_model_gradcheck_through_band(changes: dict[str, object]) -> None:
    """The whole network's float64 gradient w.r.t. its weights, the band taken."""
    config, weights, noisy, noise_ab = model_case(changes, F64)

    def forward(*matrices: Tensor) -> Tensor:
        return kpn_forward(noisy, noise_ab, matrices, config, keep_kernels=False).output

    assert gradcheck(forward, tuple(weights), fast_mode=True)


@pytest.mark.parametrize("changes", MODEL_VARIANTS.values(), ids=MODEL_VARIANTS.keys())
def test_model_takes_band_when_training(
    changes: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training (weights with gradients, kernels not kept) goes through the band, and its
    output and gradients are the plain path's (kept kernels take the plain path)."""
    config, weights, noisy, noise_ab = model_case(changes, torch.float32)
    calls = []

    def counted(*args: object) -> tuple[Tensor, Tensor]:
        calls.append(1)
        return band_forward(*args)

    monkeypatch.setattr(kpn.model.level_filter, "band_forward", counted)
    results = []
    for keep_kernels in (False, True):
        output = kpn_forward(noisy, noise_ab, weights, config, keep_kernels=keep_kernels).output
        results.append((output, torch.autograd.grad(output.square().sum(), weights)))
    filtered_levels = config.denoise_levels or config.levels
    assert len(calls) == filtered_levels  # one band per level at this size, once
    (output, grads), (plain_output, plain_grads) = results
    assert_close(output, plain_output, rtol=1e-6, atol=1e-7)
    for grad, plain_grad in zip(grads, plain_grads, strict=True):
        # float32 sums over the image, in other orders: to 1e-5 of the largest gradient
        assert_close(grad, plain_grad, rtol=1e-4, atol=1e-5 * plain_grad.abs().max().item())


def test_model_skips_band_without_weight_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inference (no gradient) and gradients w.r.t. the image take the plain path."""
    config, weights, noisy, noise_ab = model_case({}, torch.float32)
    monkeypatch.setattr(kpn.model.level_filter, "band_forward", None)  # called: TypeError
    with torch.no_grad():
        kpn_forward(noisy, noise_ab, weights, config, keep_kernels=False)
    image = noisy.clone().requires_grad_()
    kpn_forward(image, noise_ab, weights, config, keep_kernels=False).output.sum().backward()
    assert image.grad is not None and weights[0].grad is not None
