"""Tests for kpn.model.apply (docs/design.md §4): kernel weights, the 15-tap star convolution
and alpha."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck
from torch.testing import assert_close

from kpn.model.apply import (
    alpha_weight,
    apply_kernel_padded,
    apply_kernel_vkdt,
    kernel_factors,
    kernel_weights,
)
from kpn.model.reference import apply_kernel

from conftest import SPEC_STAR15_CENTRE, SPEC_STAR15_TAPS

NAN = math.nan
INF = math.inf


def pixel_logits(values: list[float], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """15 logits of one pixel as ``[1,15,1,1]``."""
    assert len(values) == 15
    return torch.tensor(values, dtype=dtype).view(1, 15, 1, 1)


def one_hot_weights(tap: int, batch: int, height: int, width: int, dtype=torch.float32):
    weights = torch.zeros(batch, 15, height, width, dtype=dtype)
    weights[:, tap] = 1.0
    return weights


def mirrored_shift(x: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """X(x+dx, y+dy) with numpy's ``symmetric`` padding (mirror including the edge pixel)."""
    height, width = x.shape[-2:]
    padded = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(2, 2), (2, 2)], mode="symmetric")
    return padded[..., 2 + dy : 2 + dy + height, 2 + dx : 2 + dx + width]


# ---------------------------------------------------------------- kernel_weights: softmax


class TestKernelWeightsSoftmax:
    @pytest.mark.parametrize("batch", [1, 2, 3])
    def test_shape_and_sum(self, batch: int) -> None:
        torch.manual_seed(0)
        logits = 20.0 * torch.randn(batch, 15, 5, 4)
        weights = kernel_weights(logits, "softmax")
        assert weights.shape == (batch, 15, 5, 4)
        assert weights.dtype == logits.dtype
        assert_close(weights.sum(1), torch.ones(batch, 5, 4))
        assert bool((weights >= 0).all()) and bool((weights <= 1).all())

    def test_golden(self) -> None:
        # K = [10, 0, -10 x 13]; max K = 10, so w_0 = exp(0) = 1, w_1 = exp(0.1*(0-10)) = e^-1,
        # w_k = exp(0.1*(-10-10)) = e^-2; sum = 1 + e^-1 + 13 e^-2 = 3.12723...
        weights = kernel_weights(pixel_logits([10.0, 0.0] + [-10.0] * 13), "softmax")
        expected = pixel_logits(
            [0.3197709802033154, 0.11763716950004002] + [0.043276296176664966] * 13
        )
        assert_close(weights, expected)

    def test_scale_is_a_tenth(self) -> None:
        # two taps: K = [0, 10, -1e4 ...]: w = [e^-1, 1, 0 ...] / (1 + e^-1); e^-1/(1+e^-1) =
        # 0.2689414213699951. torch.softmax without the 0.1 gives 4.5e-5 here.
        weights = kernel_weights(pixel_logits([0.0, 10.0] + [-1e4] * 13), "softmax")
        assert_close(weights[0, 0, 0, 0].item(), 0.2689414213699951)
        assert_close(weights[0, 1, 0, 0].item(), 1.0 - 0.2689414213699951)
        assert weights[0, 2:].abs().max().item() == 0.0

    @pytest.mark.parametrize("constant", [-55.0, 3.25, 37.0])
    def test_invariant_to_adding_a_constant(self, constant: float) -> None:
        torch.manual_seed(1)
        logits = 10.0 * torch.randn(2, 15, 3, 3, dtype=torch.float64)
        assert_close(
            kernel_weights(logits + constant, "softmax"), kernel_weights(logits, "softmax")
        )

    def test_nan_tap_gives_factor_one(self) -> None:
        # K = [10, NaN, 0 x 13]: max over the non-NaN taps is 10; w_0 = 1, the NaN tap gives 1,
        # the rest exp(0.1*(0-10)) = e^-1; sum = 2 + 13 e^-1 = 6.78240...
        weights = kernel_weights(pixel_logits([10.0, NAN] + [0.0] * 13), "softmax")
        expected = pixel_logits(
            [0.14743972244735767, 0.14743972244735767] + [0.054240042700406506] * 13
        )
        assert_close(weights, expected)

    def test_nan_and_plus_inf(self) -> None:
        # max K = +inf; inf - inf = NaN -> factor 1; NaN tap -> 1; finite - inf -> exp(-inf) = 0
        weights = kernel_weights(pixel_logits([3.0, INF, 1.0, NAN] + [0.0] * 11), "softmax")
        expected = pixel_logits([0.0, 0.5, 0.0, 0.5] + [0.0] * 11)
        assert_close(weights, expected)

    def test_minus_inf_tap_gets_zero(self) -> None:
        # exp(0.1*(-inf - 0)) = 0; the 14 others have equal logits: 1/14 each
        weights = kernel_weights(pixel_logits([-INF] + [0.0] * 14), "softmax")
        assert_close(weights, pixel_logits([0.0] + [1.0 / 14.0] * 14))

    def test_all_nan(self) -> None:
        # every tap gives factor 1: the plain mean, 1/15 each
        weights = kernel_weights(pixel_logits([NAN] * 15), "softmax")
        assert_close(weights, pixel_logits([1.0 / 15.0] * 15))

    def test_nan_stays_in_its_pixel(self) -> None:
        logits = torch.zeros(1, 15, 2, 2)
        logits[0, 3, 1, 0] = NAN
        weights = kernel_weights(logits, "softmax")
        assert_close(weights, torch.full_like(logits, 1.0 / 15.0))

    @pytest.mark.parametrize(
        "bad",
        [[NAN], [NAN, INF], [INF, INF], [NAN] * 15],
        ids=["nan", "nan+inf", "2inf", "all-nan"],
    )
    def test_gradient_finite_next_to_bad_taps(self, bad: list[float]) -> None:
        # vkdt's dapply.comp treats a NaN tap's factor 1 as a constant: the gradient of every
        # finite logit stays finite, and the next pixel is not affected at all
        values = [2.0, 0.5, -1.0, 3.0, 0.0, 1.0, -2.0, 0.25, 1.5, -0.5, 2.5, 0.75, -1.5, 0.1, 0.2]
        logits = torch.tensor([bad + values[len(bad) :], values], dtype=torch.float64)
        logits = logits.T.reshape(1, 15, 1, 2).requires_grad_(True)
        weights = kernel_weights(logits, "softmax")
        (weights * torch.arange(15.0, dtype=torch.float64).view(1, 15, 1, 1)).sum().backward()
        finite = torch.isfinite(logits.detach())
        assert bool(torch.isfinite(logits.grad[finite]).all()), logits.grad[0, :, 0]

    def test_non_contiguous(self) -> None:
        torch.manual_seed(2)
        logits = torch.randn(2, 6, 15, 5).permute(0, 2, 3, 1)  # [2,15,5,6], strided
        assert not logits.is_contiguous()
        assert_close(
            kernel_weights(logits, "softmax"), kernel_weights(logits.contiguous(), "softmax")
        )

    def test_gradcheck(self) -> None:
        torch.manual_seed(3)
        logits = (5.0 * torch.randn(1, 15, 2, 2, dtype=torch.float64)).requires_grad_(True)
        assert gradcheck(lambda k: kernel_weights(k, "softmax"), (logits,))


# ---------------------------------------------------------------- kernel_weights: plain


class TestKernelWeightsPlain:
    @pytest.mark.parametrize("batch", [1, 2, 3])
    def test_shape_and_sum(self, batch: int) -> None:
        torch.manual_seed(0)
        logits = 0.1 + 4.0 * torch.rand(batch, 15, 4, 5)  # sums > 1.5: no guard
        weights = kernel_weights(logits, "plain")
        assert weights.shape == (batch, 15, 4, 5)
        assert_close(weights.sum(1), torch.ones(batch, 4, 5))
        assert_close(weights, logits / logits.sum(1, keepdim=True))

    def test_random_signed_logits_sum_to_one_above_guard(self) -> None:
        torch.manual_seed(4)
        logits = 18.0 * torch.rand(3, 15, 6, 6) - 9.0
        sums = kernel_weights(logits, "plain").sum(1)
        raw = logits.sum(1)
        assert bool((raw > 0.001).any()) and bool((raw < 0.001).any())
        assert_close(sums[raw > 0.001], torch.ones_like(sums[raw > 0.001]))
        # below the guard: divided by 0.001, so the sum is raw / 0.001
        assert_close(sums[raw <= 0.001], raw[raw <= 0.001] / 0.001)

    def test_golden(self) -> None:
        # K = [1, 2, 10, -10, 10.5, NaN, inf, -inf, 3, 9.5, -9.5, 0, 0, 0, 0]
        # not in the open interval (-10, 10) or NaN -> 0.001 (six of them: +-10 exactly too);
        # sum = 1 + 2 + 6*0.001 + 3 + 9.5 - 9.5 = 6.006
        logits = pixel_logits([1, 2, 10, -10, 10.5, NAN, INF, -INF, 3, 9.5, -9.5, 0, 0, 0, 0])
        a = 0.0001665001665001665  # 0.001 / 6.006
        expected = pixel_logits(
            [
                0.1665001665001665,  # 1 / 6.006
                0.333000333000333,  # 2 / 6.006
                *[a] * 6,
                0.49950049950049946,  # 3 / 6.006
                1.5817515817515817,  # 9.5 / 6.006
                -1.5817515817515817,
                *[0.0] * 4,
            ]
        )
        weights = kernel_weights(logits, "plain")
        assert_close(weights, expected)
        assert_close(weights.sum().item(), 1.0)

    def test_just_inside_the_limit_is_kept(self) -> None:
        # 9.999 and -9.999 are inside (-10, 10): kept; sum = 9.999 - 9.999 + 1 = 1
        weights = kernel_weights(pixel_logits([9.999, -9.999, 1.0] + [0.0] * 12), "plain")
        assert_close(weights, pixel_logits([9.999, -9.999, 1.0] + [0.0] * 12))

    def test_negative_sum_hits_the_guard(self) -> None:
        # K = [-5, 1, 0 ...]: sum = -4 -> divided by max(0.001, -4) = 0.001: [-5000, 1000, 0 ...]
        weights = kernel_weights(pixel_logits([-5.0, 1.0] + [0.0] * 13), "plain")
        assert_close(weights, pixel_logits([-5000.0, 1000.0] + [0.0] * 13))

    def test_small_positive_sum_hits_the_guard(self) -> None:
        # sum = 0.0005 < 0.001: 0.0005 / 0.001 = 0.5
        weights = kernel_weights(pixel_logits([0.0005] + [0.0] * 14), "plain")
        assert_close(weights, pixel_logits([0.5] + [0.0] * 14))

    def test_all_nan(self) -> None:
        # every tap 0.001, sum 0.015: 1/15 each
        weights = kernel_weights(pixel_logits([NAN] * 15), "plain")
        assert_close(weights, pixel_logits([1.0 / 15.0] * 15))

    def test_non_contiguous(self) -> None:
        torch.manual_seed(5)
        logits = (4.0 * torch.rand(2, 15, 5, 6)).transpose(-1, -2)
        assert not logits.is_contiguous()
        assert_close(kernel_weights(logits, "plain"), kernel_weights(logits.contiguous(), "plain"))

    def test_gradcheck(self) -> None:
        torch.manual_seed(6)
        logits = (0.2 + 3.0 * torch.rand(1, 15, 2, 2, dtype=torch.float64)).requires_grad_(True)
        assert gradcheck(lambda k: kernel_weights(k, "plain"), (logits,))

    def test_gradcheck_guarded(self) -> None:
        # sum below the guard: plain division by the constant 0.001
        logits = torch.tensor([-5.0, 1.0, 2.5] + [0.25] * 12, dtype=torch.float64)
        logits = logits.view(1, 15, 1, 1).requires_grad_(True)
        assert gradcheck(lambda k: kernel_weights(k, "plain"), (logits,))


# ---------------------------------------------------------------- apply_kernel


class TestApplyKernel:
    @pytest.mark.parametrize("batch", [1, 2, 3])
    @pytest.mark.parametrize(("height", "width"), [(1, 1), (2, 3), (5, 4), (7, 8)])
    def test_identity_kernel_is_exact(self, batch: int, height: int, width: int) -> None:
        torch.manual_seed(7)
        x = 100.0 * torch.randn(batch, 3, height, width)
        out = apply_kernel(x, one_hot_weights(SPEC_STAR15_CENTRE, batch, height, width))
        assert out.shape == x.shape
        assert torch.equal(out, x)

    @pytest.mark.parametrize("activation", ["softmax", "plain"])
    def test_identity_through_kernel_weights(self, activation: str) -> None:
        # plain: K = one-hot 1 at tap 7 -> w = 1/1; softmax: K = 0 at tap 7, -1e4 elsewhere ->
        # exp(0.1*(-1e4)) = 0 exactly. Both give the input bit for bit.
        torch.manual_seed(8)
        x = torch.randn(2, 3, 5, 4)
        logits = torch.full((2, 15, 5, 4), 0.0 if activation == "plain" else -1e4)
        logits[:, SPEC_STAR15_CENTRE] = 1.0 if activation == "plain" else 0.0
        assert torch.equal(apply_kernel(x, kernel_weights(logits, activation)), x)

    @pytest.mark.parametrize("tap", range(15))
    @pytest.mark.parametrize(("height", "width"), [(4, 5), (2, 2), (1, 3)])
    def test_one_hot_tap_shifts_with_mirrored_edges(self, tap: int, height: int, width: int):
        # the 5x4 image of the brief (W=5, H=4), plus sizes where a 2-tap reaches past both
        # edges; numpy's symmetric padding is the reference (torch's reflect would differ)
        x = torch.arange(2 * 3 * height * width, dtype=torch.float32).view(2, 3, height, width)
        dx, dy = SPEC_STAR15_TAPS[tap]
        out = apply_kernel(x, one_hot_weights(tap, 2, height, width))
        expected = torch.from_numpy(np.ascontiguousarray(mirrored_shift(x.numpy(), dx, dy)))
        assert torch.equal(out, expected), (tap, dx, dy)

    def test_one_hot_tap_literal(self) -> None:
        # 5 wide, 4 high, X(x, y) = x + 10 y. Tap 0 is (0, -2): row y reads row y-2, mirrored:
        # -2 -> 1, -1 -> 0. Tap 14 is (0, 2): rows 2, 3 read 4 -> 3 and 5 -> 2.
        x = (torch.arange(5.0) + 10.0 * torch.arange(4.0).view(4, 1)).view(1, 1, 4, 5)
        up = apply_kernel(x, one_hot_weights(0, 1, 4, 5))[0, 0, :, 0]
        down = apply_kernel(x, one_hot_weights(14, 1, 4, 5))[0, 0, :, 0]
        assert up.tolist() == [10.0, 0.0, 0.0, 10.0]
        assert down.tolist() == [20.0, 30.0, 30.0, 20.0]
        # tap 5 is (2, -1): at pixel (4, 0) it reads x = 6 -> 3, y = -1 -> 0: value 3
        assert apply_kernel(x, one_hot_weights(5, 1, 4, 5))[0, 0, 0, 4].item() == 3.0

    def test_golden_corner_pixel(self) -> None:
        # X(x, y) = x + 10 y on a 4 wide, 3 high image; pixel (0, 0);
        # w = 0.5 on tap 0 (0,-2): reads (0, 1) = 10   [reflect would read (0, 2) = 20]
        #     0.25 on tap 1 (-2,-1): reads (1, 0) = 1
        #     0.25 on tap 13 (2, 1): reads (2, 1) = 12
        # I = 0.5*10 + 0.25*1 + 0.25*12 = 8.25
        x = (torch.arange(4.0) + 10.0 * torch.arange(3.0).view(3, 1)).view(1, 1, 3, 4)
        weights = torch.zeros(1, 15, 3, 4)
        weights[0, 0], weights[0, 1], weights[0, 13] = 0.5, 0.25, 0.25
        out = apply_kernel(x, weights)
        assert out[0, 0, 0, 0].item() == 8.25
        # and at the opposite corner (3, 2): tap 0 reads (3, 0) = 3; tap 1 reads (1, 1) = 11;
        # tap 13 reads x = 5 -> 2, y = 3 -> 2: (2, 2) = 22; 1.5 + 2.75 + 5.5 = 9.75
        assert out[0, 0, 2, 3].item() == 9.75

    def test_weights_broadcast_over_channels(self) -> None:
        # the same per-pixel weights apply to r, g and b
        torch.manual_seed(9)
        x = torch.randn(2, 3, 4, 5)
        weights = kernel_weights(torch.randn(2, 15, 4, 5), "softmax")
        out = apply_kernel(x, weights)
        for c in range(3):
            assert_close(out[:, c : c + 1], apply_kernel(x[:, c : c + 1], weights))

    def test_clamp_to_f16_range(self) -> None:
        x = torch.tensor([[1e5, -1e5], [64999.0, -3.0]]).view(1, 1, 2, 2)
        out = apply_kernel(x, one_hot_weights(SPEC_STAR15_CENTRE, 1, 2, 2))
        assert out.flatten().tolist() == [65000.0, -65000.0, 64999.0, -3.0]
        # the clamp acts on the sum, not on the input: 2 * 40000 = 80000 -> 65000
        doubled = apply_kernel(torch.full((1, 1, 1, 1), 40000.0), 2.0 * one_hot_weights(7, 1, 1, 1))
        assert doubled.item() == 65000.0
        # and a weighted sum of unclamped inputs may come back inside: 0.5*1e5 - 0.5*1e5 = 0
        pair = torch.tensor([[1e5, -1e5]]).view(1, 1, 1, 2)
        weights = torch.zeros(1, 15, 1, 2)
        weights[0, SPEC_STAR15_CENTRE], weights[0, 8] = 0.5, 0.5  # (0,0) and (1,0)
        assert apply_kernel(pair, weights)[0, 0, 0, 0].item() == 0.0

    def test_non_contiguous(self) -> None:
        torch.manual_seed(10)
        x = torch.randn(2, 5, 4, 3).permute(0, 3, 2, 1)  # [2,3,4,5]
        weights = kernel_weights(torch.randn(2, 5, 4, 15).permute(0, 3, 2, 1), "softmax")
        assert not x.is_contiguous() and not weights.is_contiguous()
        assert_close(apply_kernel(x, weights), apply_kernel(x.contiguous(), weights.contiguous()))

    def test_gradcheck(self) -> None:
        torch.manual_seed(11)
        x = torch.randn(2, 3, 3, 4, dtype=torch.float64, requires_grad=True)
        weights = torch.randn(2, 15, 3, 4, dtype=torch.float64, requires_grad=True)
        assert gradcheck(apply_kernel, (x, weights))

    def test_gradcheck_through_softmax(self) -> None:
        torch.manual_seed(12)
        x = torch.randn(1, 3, 3, 3, dtype=torch.float64, requires_grad=True)
        logits = (5.0 * torch.randn(1, 15, 3, 3, dtype=torch.float64)).requires_grad_(True)
        assert gradcheck(lambda a, k: apply_kernel(a, kernel_weights(k, "softmax")), (x, logits))


# ---------------------------------------------------------------- alpha_weight


class TestAlphaWeight:
    raw = torch.tensor([0.0, 1.0, -3.0, 0.3, 1.7, -0.5, 1000.0, 65504.0]).view(1, 1, 2, 4)

    @pytest.mark.parametrize("batch", [1, 2, 3])
    @pytest.mark.parametrize("activation", ["const", "plain", "clamped", "sigmoid"])
    def test_shape(self, batch: int, activation: str) -> None:
        out = alpha_weight(torch.randn(batch, 1, 3, 5), activation)
        assert out.shape == (batch, 1, 3, 5)

    def test_const(self) -> None:
        # vkdt's default: 1 whatever the network says, NaN included
        raw = torch.tensor([0.0, -7.0, NAN, INF]).view(1, 1, 2, 2)
        assert torch.equal(alpha_weight(raw, "const"), torch.ones(1, 1, 2, 2))

    def test_plain(self) -> None:
        assert torch.equal(alpha_weight(self.raw, "plain"), self.raw)

    def test_clamped(self) -> None:
        expected = [0.0, 1.0, 0.0, 0.3, 1.0, 0.0, 1.0, 1.0]
        assert_close(alpha_weight(self.raw, "clamped").flatten().tolist(), expected)

    def test_sigmoid_golden(self) -> None:
        # 0.5 x / sqrt(1 + x^2) + 0.5:
        #   x = 0: 0.5; x = 1: 0.5/sqrt(2) + 0.5 = 0.8535533905932737;
        #   x = -3: 0.5 - 1.5/sqrt(10) = 0.025658350974743116;
        #   x = 0.3: 0.5 + 0.15/sqrt(1.09) = 0.6436739427831727;
        #   x = 1.7: 0.5 + 0.85/sqrt(3.89) = 0.9309671075788848; x = -0.5: 0.5 - 0.25/sqrt(1.25)
        #   = 0.2763932022500210; x = 1000: 0.5 + 500/sqrt(1000001) = 0.9999997500001875;
        #   x = 65504 (f16 max): 1 - 5.8e-11 -> 1.0 in float32
        expected = torch.tensor(
            [
                0.5,
                0.8535533905932737,
                0.025658350974743116,
                0.6436739427831727,
                0.9309671075788848,
                0.2763932022500210,
                0.9999997500001875,
                1.0,
            ]
        ).view(1, 1, 2, 4)
        assert_close(alpha_weight(self.raw, "sigmoid"), expected)
        # the logistic function would give 0.731 at x = 1, not 0.854
        assert abs(alpha_weight(torch.ones(1, 1, 1, 1), "sigmoid").item() - 0.7311) > 0.1

    def test_sigmoid_symmetry(self) -> None:
        x = torch.linspace(-50.0, 50.0, 101, dtype=torch.float64).view(1, 1, 1, 101)
        assert_close(alpha_weight(x, "sigmoid") + alpha_weight(-x, "sigmoid"), torch.ones_like(x))

    def test_non_contiguous(self) -> None:
        raw = torch.randn(2, 1, 5, 4).transpose(-1, -2)
        for activation in ("plain", "clamped", "sigmoid"):
            assert_close(alpha_weight(raw, activation), alpha_weight(raw.contiguous(), activation))

    @pytest.mark.parametrize("activation", ["plain", "clamped", "sigmoid"])
    def test_gradcheck(self, activation: str) -> None:
        # values away from the clamp's corners at 0 and 1
        raw = torch.tensor([-2.0, -0.4, 0.2, 0.5, 0.8, 1.5], dtype=torch.float64)
        raw = raw.view(1, 1, 2, 3).requires_grad_(True)
        assert gradcheck(lambda a: alpha_weight(a, activation), (raw,))


def test_apply_kernel_vkdt_sums_in_apply_comp_order() -> None:
    """vkdt-f16's apply: sum_k w_k X_k and sum_k w_k, each accumulated in tap order in
    float32, then their quotient (apply.comp); scalar numpy float32 arithmetic says what
    each output is, bit for bit. kpn's float32 path (weights normalised first) rounds
    elsewhere: plain kernels near a zero sum are where it shows."""
    rng = np.random.default_rng(11)
    x = rng.random((1, 1, 9, 10), dtype=np.float32)
    logits = rng.normal(0, 3, (1, 15, 5, 6)).astype(np.float32)
    factors, floor = kernel_factors(torch.from_numpy(logits), "plain")
    assert floor == 0.001
    got = apply_kernel_vkdt(torch.from_numpy(x), factors, floor, limit=65000.0)
    w = factors.numpy()
    expected = np.zeros((5, 6), np.float32)
    for y in range(5):
        for col in range(6):
            filtered, total = np.float32(0), np.float32(0)
            for k, (dx, dy) in enumerate(SPEC_STAR15_TAPS):
                term = np.float32(w[0, k, y, col] * x[0, 0, y + 2 + dy, col + 2 + dx])
                filtered = term if k == 0 else np.float32(filtered + term)
                total = w[0, k, y, col] if k == 0 else np.float32(total + w[0, k, y, col])
            expected[y, col] = np.float32(filtered / max(total, np.float32(floor)))
    np.testing.assert_array_equal(got[0, 0].numpy(), np.clip(expected, -65000, 65000))
    normalised_first = apply_kernel_padded(
        torch.from_numpy(x), kernel_weights(torch.from_numpy(logits), "plain"), 65000.0
    )
    assert not torch.equal(normalised_first, got)
