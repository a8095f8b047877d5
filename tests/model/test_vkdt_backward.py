"""Tests for kpn.model.vkdt_backward (``model.vkdt_f16_backward``): kpn-t's float16
backward pass of the MLP against a scalar NumPy float16 model of ``bck-impl.glsl`` and
``mulw-impl.glsl`` written from their text."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from kpn.config import ModelConfig
from kpn.model.mlp import mlp_forward_planar

IN, WIDTH, HIDDEN, PIXELS = 7, 16, 2, 9
GRAD_SCALE = 128.0


def problem(seed: int) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """Planar features ``[IN, PIXELS]``, the matrices, and d loss / d output ``[16, PIXELS]``."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(IN, PIXELS, generator=generator) * 2.0
    sizes = [IN] + [WIDTH] * HIDDEN + [16]
    weights = [
        (torch.rand(fan_out, fan_in, generator=generator) - 0.5) * 0.8
        for fan_in, fan_out in itertools.pairwise(sizes)
    ]
    upstream = torch.randn(16, PIXELS, generator=generator) * 0.05
    return features, weights, upstream


def f16(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float16)


def fallback_dot(a: np.ndarray, b: np.ndarray) -> np.float16:
    """coopmat.glsl's fallback: C = f16(C + f16(A[k] * B[k])), k in order, C from 0."""
    total = np.float16(0.0)
    for x, y in zip(a, b, strict=True):
        total = np.float16(total + np.float16(x * y))
    return total


def leaky(x: np.float16) -> np.float16:
    return x if x > 0 else np.float16(np.float32(0.001) * np.float32(x))


def numpy_gradients(features, weights, upstream) -> list[np.ndarray]:
    """d loss / d W as kpn-t computes it, one pixel and one scalar at a time."""
    features = features.double().numpy().T  # [PIXELS, IN]
    matrices = [f16(w.numpy()) for w in weights]
    stored = []  # per pixel: the float16 activations of each hidden layer
    for pixel in range(PIXELS):
        x = f16(features[pixel])
        layers = []
        for matrix in matrices[:-1]:
            x = f16([leaky(fallback_dot(x, row)) for row in matrix])
            layers.append(x)
        stored.append(layers)
    grads = [np.zeros(m.shape) for m in matrices]
    for pixel in range(PIXELS):
        scaled = np.clip(upstream[:, pixel].double().numpy() * GRAD_SCALE, -65000, 65000)
        d_out = f16(scaled)  # dapply's float16 dE/dK
        for index in reversed(range(len(matrices))):
            below = stored[pixel][index - 1] if index else features[pixel]
            grads[index] += np.outer(d_out.astype(np.float64), below.astype(np.float64))
            if index:
                through = [fallback_dot(d_out, matrices[index][:, j]) for j in range(WIDTH)]
                d_out = f16(
                    [t if a > 0 else np.float16(np.float32(0.001) * np.float32(t))
                     for t, a in zip(through, stored[pixel][index - 1], strict=True)]
                )  # fmt: skip
    return [g / GRAD_SCALE for g in grads]


def kpn_gradients(features, weights, upstream, f16_backward: bool, matmul: str = "fallback"):
    leaves = [w.clone().requires_grad_() for w in weights]
    output = mlp_forward_planar(
        features, leaves, "leaky_relu", "vkdt-f16", matmul, f16_backward=f16_backward
    )
    (output * upstream).sum().backward()
    return output.detach(), [w.grad for w in leaves]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradients_equal_numpy_model_of_bck_and_mulw(seed: int) -> None:
    features, weights, upstream = problem(seed)
    _, ours = kpn_gradients(features, weights, upstream, f16_backward=True)
    expected = numpy_gradients(features, weights, upstream)
    for got, want in zip(ours, expected, strict=True):
        # float32 sums against float64 ones of the same float16 values: float32's rounding
        # of each row (a unit's pixels, leaky ones 1000 times smaller), where a wrong
        # float16 rounding is 1e-3 of the row's terms
        want = torch.from_numpy(want)
        row_scale = want.abs().amax(1, keepdim=True)
        assert ((got.double() - want).abs() <= 1e-5 * row_scale).all()


def test_float32_backward_differs_from_the_model() -> None:
    """The float32 gradient (straight through the rounding) misses the model by far more
    than the float16 one's tolerance: the test above can fail."""
    features, weights, upstream = problem(0)
    _, plain = kpn_gradients(features, weights, upstream, f16_backward=False)
    expected = numpy_gradients(features, weights, upstream)
    worst = max(
        float(
            (
                (got.double() - torch.from_numpy(want)).abs() / torch.from_numpy(want).abs().max()
            ).max()
        )
        for got, want in zip(plain, expected, strict=True)
    )
    assert worst > 1e-4


@pytest.mark.parametrize("matmul", ["fallback", "coopmat"])
def test_forward_pass_unchanged(matmul: str) -> None:
    features, weights, upstream = problem(2)
    ours, _ = kpn_gradients(features, weights, upstream, True, matmul)
    theirs, _ = kpn_gradients(features, weights, upstream, False, matmul)
    assert_close(ours, theirs, rtol=0, atol=0)


@pytest.mark.parametrize("matmul", ["fallback", "coopmat"])
def test_gradients_near_float32(matmul: str) -> None:
    """Within float16's precision of the float32 gradient, both matrix paths."""
    features, weights, upstream = problem(3)
    _, ours = kpn_gradients(features, weights, upstream, True, matmul)
    _, plain = kpn_gradients(features, weights, upstream, False, matmul)
    for got, want in zip(ours, plain, strict=True):
        assert float((got - want).abs().max()) <= 2e-2 * float(want.abs().max())


def test_batched_planar_input_sums_every_image() -> None:
    features, weights, upstream = problem(4)
    batch = torch.stack([features, features.flip(-1)])
    leaves = [w.clone().requires_grad_() for w in weights]
    output = mlp_forward_planar(batch, leaves, "leaky_relu", "vkdt-f16", "fallback", True)
    (output * torch.stack([upstream, upstream.flip(-1)])).sum().backward()
    _, single = kpn_gradients(features, weights, upstream, True)
    for got, want in zip(leaves, single, strict=True):
        assert_close(got.grad, 2 * want, rtol=1e-5, atol=1e-6 * float(want.abs().max()))


def test_input_gradient_when_asked() -> None:
    features, weights, upstream = problem(5)
    features = features.requires_grad_()
    output = mlp_forward_planar(features, weights, "leaky_relu", "vkdt-f16", "fallback", True)
    (output * upstream).sum().backward()
    plain = features.detach().clone().requires_grad_()
    (
        mlp_forward_planar(plain, weights, "leaky_relu", "vkdt-f16", "fallback") * upstream
    ).sum().backward()
    assert features.grad is not None
    assert float((features.grad - plain.grad).abs().max()) <= 2e-2 * float(plain.grad.abs().max())


def test_other_precisions_ignore_it() -> None:
    """A vkdt preset run in float32 (``infer --precision fp32``, a test's model) keeps the
    switch: it is vkdt-f16's backward pass and changes nothing else."""
    ModelConfig(vkdt_f16_backward=True).validate("x.toml")
    features, weights, upstream = problem(6)
    results = []
    for switch in (False, True):
        leaves = [w.clone().requires_grad_() for w in weights]
        output = mlp_forward_planar(features, leaves, "leaky_relu", "fp32", f16_backward=switch)
        (output * upstream).sum().backward()
        results.append((output.detach(), [w.grad for w in leaves]))
    assert_close(results[1][0], results[0][0], rtol=0, atol=0)
    for got, want in zip(results[1][1], results[0][1], strict=True):
        assert_close(got, want, rtol=0, atol=0)
