"""Tests for kpn.model.mlp (docs/design.md §3, §10): the bias-free MLP, in float32, bfloat16
and vkdt's float16 (whose arithmetic tests/model/test_precision.py tests)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.autograd import gradcheck
from torch.testing import assert_close

from kpn.errors import KpnError
from kpn.model.mlp import (
    MLP,
    activate,
    fused_linear,
    linear_activated,
    live_columns,
    load_weights,
    mlp_forward_planar,
    mlp_hidden,
)
from kpn.model.reference import mlp_forward

from conftest import assert_one_line_error

ACTIVATIONS = ["leaky_relu", "relu", "none"]


def hand_activation(x: torch.Tensor, activation: str) -> torch.Tensor:
    """Written out here (not F.leaky_relu, whose default slope is 0.01)."""
    if activation == "leaky_relu":
        return torch.where(x > 0, x, 0.001 * x)
    if activation == "relu":
        return torch.where(x > 0, x, torch.zeros_like(x))
    return x


def hand_chain(x: torch.Tensor, weights: list[torch.Tensor], activation: str) -> torch.Tensor:
    """x @ W0^T, act, ..., x @ Wout^T (no activation after the output)."""
    for weight in weights[:-1]:
        x = hand_activation(x @ weight.T, activation)
    return x @ weights[-1].T


def random_weights(in_features: int, width: int, n_hidden: int, seed: int, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    sizes = [in_features] + [width] * n_hidden + [16]
    return [
        torch.randn(fan_out, fan_in, generator=generator, dtype=dtype) / math.sqrt(fan_in)
        for fan_in, fan_out in itertools.pairwise(sizes)
    ]


def is_f16_valued(x: torch.Tensor) -> bool:
    return torch.equal(x, x.half().to(x.dtype))


# ---------------------------------------------------------------- MLP structure and init


@pytest.mark.parametrize("in_features", [32, 64])
@pytest.mark.parametrize("width", [32, 64])
@pytest.mark.parametrize("n_hidden", [1, 2, 3, 4, 5, 6])
def test_shapes_and_no_biases(in_features: int, width: int, n_hidden: int) -> None:
    mlp = MLP(in_features, width, n_hidden, "leaky_relu")
    shapes = [tuple(w.shape) for w in mlp.weights]
    assert shapes == [(width, in_features)] + [(width, width)] * (n_hidden - 1) + [(16, width)]
    assert all(layer.bias is None for layer in mlp.layers)
    parameters = list(mlp.parameters())
    assert len(parameters) == n_hidden + 1  # one matrix per layer, nothing else
    count = sum(p.numel() for p in parameters)
    assert count == width * in_features + (n_hidden - 1) * width * width + 16 * width
    for batch in (1, 7, 128):
        assert mlp(torch.randn(batch, in_features)).shape == (batch, 16)


def test_parameter_count_vkdt_star15() -> None:
    # 32*32 (W0) + 5 * 32*32 (hidden) + 16*32 (W_out) = 1024 + 5120 + 512 = 6656
    mlp = MLP(32, 32, 6, "leaky_relu")
    assert sum(p.numel() for p in mlp.parameters()) == 6656


@pytest.mark.parametrize(("in_features", "width"), [(32, 32), (64, 64), (64, 32), (32, 64)])
def test_vkdt_init_bound_and_spread(in_features: int, width: int) -> None:
    # every matrix uniform in +-sqrt(6/(W+W)), the same W for both fans (so W0 with in 64 and
    # W 32 uses 0.306, not Xavier's sqrt(6/96) = 0.25; W_out not sqrt(6/48) = 0.354)
    torch.manual_seed(0)
    mlp = MLP(in_features, width, 6, "leaky_relu")
    bound = math.sqrt(6.0 / (width + width))
    for index, weight in enumerate(mlp.weights):
        w = weight.detach()
        assert w.abs().max().item() <= bound, index
        # uniform: reaches close to both ends, mean 0, standard deviation bound / sqrt(3)
        assert w.max().item() > 0.95 * bound and w.min().item() < -0.95 * bound, index
        assert abs(w.mean().item()) < 0.1 * bound, index
        assert_close(w.std().item(), bound / math.sqrt(3.0), rtol=0.1, atol=0.0)
    values = torch.cat([w.detach().flatten() for w in mlp.weights])
    histogram = torch.histc(values, bins=10, min=-bound, max=bound) / values.numel()
    assert_close(histogram, torch.full((10,), 0.1), atol=0.02, rtol=0.0)


def test_reset_parameters_redraws() -> None:
    torch.manual_seed(1)
    mlp = MLP(32, 32, 2, "relu")
    before = [w.detach().clone() for w in mlp.weights]
    mlp.reset_parameters()
    assert all(not torch.equal(a, b) for a, b in zip(before, mlp.weights, strict=True))


# ---------------------------------------------------------------- mlp_forward


def test_golden_tiny_network() -> None:
    # in 2, W 2, one hidden layer: W0 = identity, x = (2, -3) -> hidden (2, -3);
    # W_out rows: (1, 1), (0, -1), (-1, 0), then zeros.
    #   leaky_relu: hidden (2, -0.003) -> (1.997, 0.003, -2)   [slope 0.01 would give 1.97]
    #   relu:       hidden (2, 0)      -> (2, 0, -2)
    #   none:       hidden (2, -3)     -> (-1, 3, -2)
    # the output keeps -2: no activation after the last layer
    weights = [torch.eye(2), torch.zeros(16, 2)]
    weights[1][0] = torch.tensor([1.0, 1.0])
    weights[1][1] = torch.tensor([0.0, -1.0])
    weights[1][2] = torch.tensor([-1.0, 0.0])
    x = torch.tensor([[2.0, -3.0]])
    expected = {
        "leaky_relu": [1.997, 0.003, -2.0],
        "relu": [2.0, 0.0, -2.0],
        "none": [-1.0, 3.0, -2.0],
    }
    for activation, values in expected.items():
        out = mlp_forward(x, weights, activation)
        assert out.shape == (1, 16)
        assert_close(out[0, :3], torch.tensor(values), msg=activation)
        assert torch.equal(out[0, 3:], torch.zeros(13))


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize(
    ("in_features", "width", "n_hidden"), [(32, 32, 6), (64, 64, 3), (5, 4, 1)]
)
def test_equals_hand_chain(activation: str, in_features: int, width: int, n_hidden: int) -> None:
    weights = random_weights(in_features, width, n_hidden, seed=2, dtype=torch.float64)
    x = torch.randn(
        33, in_features, generator=torch.Generator().manual_seed(3), dtype=torch.float64
    )
    assert_close(mlp_forward(x, weights, activation), hand_chain(x, weights, activation))


def test_activations_differ() -> None:
    weights = random_weights(8, 8, 3, seed=4)
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(5))
    outs = [mlp_forward(x, weights, activation) for activation in ACTIVATIONS]
    for a, b in itertools.combinations(outs, 2):
        assert not torch.allclose(a, b)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("precision", ["fp32", "vkdt-f16"])
def test_module_equals_function(activation: str, precision: str) -> None:
    """The module runs the network's planar path, which is the plain one to rounding."""
    torch.manual_seed(6)
    mlp = MLP(32, 32, 3, activation, precision)
    x = torch.randn(50, 32)
    out = mlp(x)
    assert torch.equal(out, mlp_forward_planar(x.T, mlp.weights, activation, precision).T)
    assert_close(out, mlp_forward(x, mlp.weights, activation, precision), rtol=1e-6, atol=1e-6)


def test_module_precision_is_used() -> None:
    torch.manual_seed(7)
    fp32 = MLP(32, 32, 3, "leaky_relu")
    f16 = MLP(32, 32, 3, "leaky_relu", "vkdt-f16")
    load_weights(f16, [w.detach() for w in fp32.weights])
    x = torch.randn(64, 32)
    assert not torch.equal(fp32(x), f16(x))
    assert_close(f16(x), fp32(x), atol=0.02, rtol=0.02)


def test_non_contiguous_input() -> None:
    weights = random_weights(6, 5, 2, seed=8)
    x = torch.randn(6, 20, generator=torch.Generator().manual_seed(9)).T
    assert not x.is_contiguous()
    for precision in ("fp32", "vkdt-f16"):
        expected = mlp_forward(x.contiguous(), weights, "leaky_relu", precision)
        assert_close(mlp_forward(x, weights, "leaky_relu", precision), expected)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradcheck(activation: str) -> None:
    weights = [
        w.requires_grad_(True) for w in random_weights(4, 3, 2, seed=10, dtype=torch.float64)
    ]
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    x.requires_grad_(True)
    assert gradcheck(lambda a, *w: mlp_forward(a, list(w), activation), (x, *weights))
    # the network's planar layout, pixels as columns
    assert gradcheck(lambda a, *w: mlp_forward_planar(a.T, list(w), activation), (x, *weights))


# ---------------------------------------------------------------- load_weights


def test_load_weights_round_trip() -> None:
    torch.manual_seed(12)
    mlp = MLP(32, 32, 6, "leaky_relu")
    matrices = random_weights(32, 32, 6, seed=13)
    load_weights(mlp, matrices)
    for loaded, matrix in zip(mlp.weights, matrices, strict=True):
        assert torch.equal(loaded.detach(), matrix)
    x = torch.randn(10, 32)
    with torch.no_grad():  # the same path: with gradients the products are not fused
        assert torch.equal(mlp(x), mlp_forward_planar(x.T, matrices, "leaky_relu").T)
    # a copy: changing the source afterwards leaves the model alone
    matrices[0].zero_()
    assert not torch.equal(mlp.weights[0].detach(), matrices[0])
    # and the loaded model still trains
    mlp(x).sum().backward()
    assert all(w.grad is not None for w in mlp.weights)


@pytest.mark.parametrize("count", [0, 6, 8])
def test_load_weights_wrong_count(count: int) -> None:
    mlp = MLP(32, 32, 6, "leaky_relu")  # 7 matrices
    matrices = (random_weights(32, 32, 6, seed=14) * 2)[:count]
    with pytest.raises(KpnError) as info:
        load_weights(mlp, matrices)
    assert_one_line_error(info, count)


@pytest.mark.parametrize("bad", ["transposed_first", "wrong_width", "wrong_outputs"])
def test_load_weights_wrong_shape(bad: str) -> None:
    mlp = MLP(64, 32, 3, "leaky_relu")
    matrices = random_weights(64, 32, 3, seed=15)
    if bad == "transposed_first":
        matrices[0] = matrices[0].T.contiguous()  # [64, 32] where [32, 64] fits
    elif bad == "wrong_width":
        matrices[1] = torch.zeros(32, 31)
    else:
        matrices[-1] = torch.zeros(15, 32)
    with pytest.raises(KpnError) as info:
        load_weights(mlp, matrices)
    assert_one_line_error(info)


# ---------------------------------------------------------------- vkdt-f16 in the MLP


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_vkdt_f16_outputs_are_f16_values(activation: str) -> None:
    torch.manual_seed(20)
    mlp = MLP(32, 32, 6, activation)
    x = torch.randn(200, 32)
    out = mlp_forward(x, mlp.weights, activation, "vkdt-f16")
    assert out.dtype == torch.float32
    assert is_f16_valued(out)
    assert not is_f16_valued(mlp_forward(x, mlp.weights, activation, "fp32"))
    assert_close(out, mlp_forward(x, mlp.weights, activation), atol=0.02, rtol=0.02)


def test_vkdt_f16_rounds_inputs_and_weights() -> None:
    # 1.0003 is 1 in float16 (spacing 2^-10 = 0.000977 above 1). Pixel 0 has x = (1.0003, 1),
    # pixel 1 x = (1, 1); W0 row 0 = (1, -1), row 1 = (1.0003, -1). In float16 every product
    # cancels to 0 exactly; an unrounded input (pixel 0, row 0) or an unrounded weight
    # (pixel 1, row 1) leaves 0.0003.
    x = torch.zeros(2, 16)
    x[0, :2] = torch.tensor([1.0003, 1.0])
    x[1, :2] = 1.0
    w0 = torch.zeros(16, 16)
    w0[0, :2] = torch.tensor([1.0, -1.0])
    w0[1, :2] = torch.tensor([1.0003, -1.0])
    weights = [w0, torch.eye(16)]
    assert torch.equal(mlp_forward(x, weights, "none", "vkdt-f16"), torch.zeros(2, 16))
    fp32 = mlp_forward(x, weights, "none")
    assert_close(fp32[0, 0].item(), 0.0003, rtol=1e-3, atol=0.0)
    assert_close(fp32[1, 1].item(), 0.0003, rtol=1e-3, atol=0.0)


def test_vkdt_f16_rounds_leaky_relu_output() -> None:
    # vkdt's mlp.h: r = max(float16_t(0.001*x), x): the activation is float16 as well.
    # One hidden layer of 16: W0 makes hidden (-1, 1, 0, ...); leaky_relu(-1) = -0.001, in
    # float16 -0.0010004043579101562 (= -1049 * 2^-20). W_out row 0 = (1024, 1, 0, ...):
    # 1024 * -0.0010004043579101562 + 1 = -1.0244140625 + 1 = -0.0244140625 (exact in f16).
    # Without rounding the activation: -1.024 + 1 = -0.024 -> f16 -0.0240020751953125.
    x = torch.zeros(1, 16)
    x[0, :2] = 1.0
    w0 = torch.zeros(16, 16)
    w0[0, 0], w0[1, 1] = -1.0, 1.0
    w_out = torch.zeros(16, 16)
    w_out[0, 0], w_out[0, 1] = 1024.0, 1.0
    out = mlp_forward(x, [w0, w_out], "leaky_relu", "vkdt-f16")
    assert out[0, 0].item() == -0.0244140625


def test_bf16_hidden_products_and_float32_output() -> None:
    """bf16: the hidden layers in bfloat16, the output layer in float32 on them (kernel
    logits rounded to bfloat16 cost 0.9 dB at low noise); gradients reach the float32
    weights in float32."""
    torch.manual_seed(0)
    mlp = MLP(32, 64, 6, "leaky_relu")
    inputs = torch.randn(500, 32)
    weights = mlp.weights
    hidden = mlp_hidden(inputs, weights[:-1], "leaky_relu", "bf16")
    assert hidden.dtype == torch.bfloat16
    out = mlp_forward(inputs, weights, "leaky_relu", "bf16")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.nn.functional.linear(hidden.float(), weights[-1]))
    planar = mlp_forward_planar(inputs.T[None], weights, "leaky_relu", "bf16")
    torch.testing.assert_close(planar[0].T, out, rtol=1e-6, atol=1e-6)
    exact = mlp_forward(inputs, weights, "leaky_relu", "fp32")
    assert (out - exact).abs().max() > 0  # really bfloat16
    torch.testing.assert_close(out, exact, rtol=0.05, atol=0.05 * exact.abs().max().item())
    out.sum().backward()
    assert all(w.grad is not None and w.grad.dtype == torch.float32 for w in weights)


def test_mlp_forward_fallback_path() -> None:
    """One hidden layer: W0 routes input 0 to hidden unit 0, W_out row 0 sums hidden
    units 0..2 with weight 1; inputs (2048, 1, 1) reach hidden units 0, 1, 2 through an
    identity W0. fallback: 2048 + 1 -> 2048, + 1 -> 2048; coopmat: 2050."""
    x = torch.zeros(1, 16)
    x[0, :3] = torch.tensor([2048.0, 1.0, 1.0])
    w_out = torch.zeros(16, 16)
    w_out[0, :3] = 1.0
    weights = [torch.eye(16), w_out]
    fallback = mlp_forward(x, weights, "relu", "vkdt-f16", "fallback")
    assert fallback[0, 0].item() == 2048.0
    assert mlp_forward(x, weights, "relu", "vkdt-f16", "coopmat")[0, 0].item() == 2050.0
    planar = mlp_forward_planar(x.T.unsqueeze(0), weights, "relu", "vkdt-f16", "fallback")
    assert torch.equal(planar[0].T, fallback)
    with pytest.raises(ValueError, match="unknown vkdt matmul"):
        mlp_forward(x, weights, "relu", "vkdt-f16", "tensor-cores")


def test_mlp_module_passes_its_matmul() -> None:
    torch.manual_seed(22)
    mlp = MLP(32, 32, 2, "leaky_relu", "vkdt-f16", "fallback")
    x = torch.randn(50, 32)
    expected = mlp_forward(x, mlp.weights, "leaky_relu", "vkdt-f16", "fallback")
    assert torch.equal(mlp(x), expected)
    assert not torch.equal(mlp(x), mlp_forward(x, mlp.weights, "leaky_relu", "vkdt-f16"))
    assert "matmul=fallback" in repr(mlp)


def test_first_live_masks_the_next_matrix() -> None:
    """first_live = 32 of W 64: the second matrix's columns 32.. are 0 in every use, and
    no gradient reaches them; the first layer's units 32.. then change nothing."""
    torch.manual_seed(23)
    mlp = MLP(64, 64, 2, "leaky_relu", first_live=32)
    weights = mlp.weights
    assert torch.equal(weights[1][:, 32:], torch.zeros(64, 32))
    assert torch.equal(weights[1][:, :32], mlp.layers[1].weight[:, :32])
    assert torch.equal(weights[0], mlp.layers[0].weight)
    x = torch.randn(20, 64)
    before = mlp(x)
    with torch.no_grad():
        mlp.layers[0].weight[32:] = torch.randn(32, 64)  # the unused units
    assert torch.equal(mlp(x), before)
    mlp(x).sum().backward()
    assert torch.equal(mlp.layers[1].weight.grad[:, 32:], torch.zeros(64, 32))
    assert torch.equal(mlp.layers[0].weight.grad[32:], torch.zeros(32, 64))
    assert mlp.layers[1].weight.grad[:, :32].abs().sum() > 0
    assert torch.equal(live_columns(torch.ones(2, 4), 1), torch.tensor([[1.0, 0, 0, 0]] * 2))


# ------------------------------------------------- the fused product and activation


@pytest.mark.parametrize("activation", ["leaky_relu", "relu", "none"])
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-6), (torch.bfloat16, 1e-2)])
def test_linear_activated_matches_separate(
    activation: str, dtype: torch.dtype, tolerance: float
) -> None:
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(300, 32, generator=generator).to(dtype)
    weight = (torch.randn(64, 32, generator=generator) / 6).to(dtype)
    with torch.no_grad():
        fused = linear_activated(x, weight, activation)
    expected = activate(torch.nn.functional.linear(x, weight), activation)
    assert fused.dtype == dtype and (fused < 0).any() == (activation != "relu")
    torch.testing.assert_close(fused.float(), expected.float(), rtol=tolerance, atol=tolerance)


def test_linear_activated_reads_transposed_rows() -> None:
    """One image's planar features arrive as a transposed view (kpn.mlp_forward_planar)."""
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(32, 500, generator=generator).T
    weight = torch.randn(64, 32, generator=generator) / 6
    with torch.no_grad():
        fused = linear_activated(x, weight, "leaky_relu")
    expected = activate(torch.nn.functional.linear(x, weight), "leaky_relu")
    torch.testing.assert_close(fused, expected, rtol=1e-6, atol=1e-6)


def test_linear_activated_keeps_gradients() -> None:
    """With gradients wanted it is autograd's product and activation, bit for bit."""
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(20, 32, generator=generator)
    weight = torch.randn(64, 32, generator=generator).requires_grad_()
    out = linear_activated(x, weight, "leaky_relu")
    assert out.grad_fn is not None
    assert torch.equal(out, activate(torch.nn.functional.linear(x, weight), "leaky_relu"))


def test_fused_linear_is_probed() -> None:
    """Where this torch has oneDNN's fused product it passes the probe (else None: the
    separate product and activation, everywhere)."""
    if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        assert fused_linear() is not None
    else:
        assert fused_linear() is None
