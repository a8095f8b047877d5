"""Tests for kpn.model.precision (docs/design.md §10): the emulation of vkdt's float16.

round_f16 against numpy's float16 (round to nearest, ties to even) over ties, overflow
and subnormals; both matrix paths against float64 references that round to float16 at
exactly the points the module documents (once per 16-wide slice; after every product and
every addition), on operands whose float64 sums are exact; and golden values by hand
that tell the two paths and a plain float32 product apart.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from kpn.model.precision import matmul_f16, matmul_f16_fallback, round_f16

F16_MAX = 65504.0  # the largest finite float16
SUBNORMAL = 2.0**-24  # float16's smallest subnormal, its spacing below 2**-14
MIN_NORMAL = 2.0**-14
SLICE = 16  # the inner dimension of vkdt's 16x16x16 cooperative matrices


def f16(values: np.ndarray) -> np.ndarray:
    """float64 values rounded to float16 by numpy (to nearest, ties to even), as float64."""
    with np.errstate(over="ignore"):  # beyond 65520: inf, as float16 hardware gives
        return values.astype(np.float16).astype(np.float64)


def coopmat_reference(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``x @ weight.T`` in float64, the accumulator rounded to float16 after each 16-wide
    slice of the inner dimension has been added to it. ``[N,in], [out,in] -> [N,out]``"""
    accumulator = np.zeros((x.shape[0], weight.shape[0]))
    for start in range(0, x.shape[1], SLICE):
        block = x[:, start : start + SLICE] @ weight[:, start : start + SLICE].T
        accumulator = f16(accumulator + block)
    return accumulator


def fallback_reference(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``x @ weight.T`` in float64 as coopmat.glsl's fallback: every product rounded to
    float16, then added to the accumulator and rounded again, k = 0, 1, ... in order."""
    accumulator = np.zeros((x.shape[0], weight.shape[0]))
    for k in range(x.shape[1]):
        accumulator = f16(accumulator + f16(np.outer(x[:, k], weight[:, k])))
    return accumulator


def eighths(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Multiples of 1/8 in -8..8: float16 values whose products (multiples of 1/64, at most
    64) and sums over 64 of them (below 2**12, 18 bits) stay exact in float32 and float64,
    while a float16 accumulator (11 bits) rounds."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(-64, 65, shape, generator=generator).float() / 8


# ---------------------------------------------------------------- round_f16

# (value, its float16 by hand)
ROUNDING_CASES = {
    "exact": (1.5, 1.5),
    "tie_down_to_even": (1 + 2**-11, 1.0),  # halfway to 1 + 2**-10: the even mantissa
    "tie_up_to_even": (1 + 3 * 2**-11, 1 + 2**-9),
    "above_tie": (1 + 2**-11 + 2**-20, 1 + 2**-10),
    "integer_tie_down": (2049.0, 2048.0),  # float16's step is 2 from 2048 on
    "integer_tie_up": (2051.0, 2052.0),
    "tenth": (0.1, 0.0999755859375),
    "largest_finite": (F16_MAX, F16_MAX),
    "below_overflow": (65519.99, F16_MAX),
    "overflow_tie": (65520.0, math.inf),  # halfway to 2**16: to even, which is inf
    "overflow": (1e6, math.inf),
    "negative_overflow": (-65520.0, -math.inf),
    "smallest_subnormal": (SUBNORMAL, SUBNORMAL),
    "subnormal_exact": (1023 * SUBNORMAL, 1023 * SUBNORMAL),  # the largest subnormal
    "subnormal_tie_to_zero": (2.0**-25, 0.0),
    "subnormal_tie_up": (3 * 2.0**-25, 2 * SUBNORMAL),
    "subnormal_above_half": (3 * 2.0**-26, SUBNORMAL),
    "subnormal_to_normal": (MIN_NORMAL - 2.0**-25, MIN_NORMAL),  # 1023.5 steps: to 1024
    "underflow": (1e-8, 0.0),
    "negative_underflow": (-1e-8, -0.0),
}


@pytest.mark.parametrize("case", list(ROUNDING_CASES))
def test_round_f16_by_hand(case: str) -> None:
    value, expected = ROUNDING_CASES[case]
    rounded = round_f16(torch.tensor([value]))
    assert rounded.dtype == torch.float32
    assert rounded.item() == expected
    assert math.copysign(1.0, rounded.item()) == math.copysign(1.0, expected)  # -0 stays -0


def test_round_f16_matches_numpy_everywhere() -> None:
    """Magnitudes from float16's underflow to past its overflow, both signs, and every
    tie between neighbouring float16 values of one binade and of the subnormals."""
    generator = torch.Generator().manual_seed(1)
    spread = torch.randn(20000, generator=generator, dtype=torch.float64)
    spread = spread * torch.logspace(-9, 6, 20000, dtype=torch.float64)
    binade = 1 + torch.arange(1024, dtype=torch.float64) * 2**-10  # the float16 values in [1, 2)
    subnormals = torch.arange(1024, dtype=torch.float64) * SUBNORMAL
    ties = torch.cat((binade + 2**-11, subnormals + 2.0**-25, -(binade + 2**-11)))
    x = torch.cat((spread, ties)).float()
    assert torch.equal(x.double(), torch.cat((spread.float().double(), ties)))  # ties exact
    rounded = round_f16(x)
    expected = f16(x.double().numpy())
    np.testing.assert_array_equal(rounded.double().numpy(), expected)
    assert rounded.isinf().any() and (rounded == 0).any()  # it reached both ends


def test_round_f16_nan_stays_nan() -> None:
    rounded = round_f16(torch.tensor([math.nan, -math.inf, math.inf]))
    assert rounded[0].isnan() and rounded[1:].tolist() == [-math.inf, math.inf]


def test_round_f16_keeps_float64() -> None:
    x = torch.tensor([1.0 / 3.0, 1e-3, 12345.678], dtype=torch.float64)
    rounded = round_f16(x)
    assert rounded.dtype == torch.float64
    assert torch.equal(rounded, x.half().double())
    np.testing.assert_array_equal(rounded.numpy(), f16(x.numpy()))


def test_round_f16_rounds_float64_through_float32() -> None:
    """torch converts float64 to float16 through float32, as vkdt's float32 values reach
    float16: 1 + 2**-11 + 2**-40 is 1 + 2**-11 in float32, a tie, so 1; numpy's direct
    rounding gives 1 + 2**-10. Only values within 2**-24 of a tie differ."""
    x = torch.tensor([1 + 2**-11 + 2**-40], dtype=torch.float64)
    assert round_f16(x).item() == 1.0
    assert f16(x.numpy()).item() == 1 + 2**-10


def test_round_f16_straight_through_gradient() -> None:
    generator = torch.Generator().manual_seed(17)
    x = torch.randn(4, 5, generator=generator).requires_grad_(True)
    upstream = torch.randn(4, 5, generator=generator)
    rounded = round_f16(x)
    assert torch.equal(rounded.detach(), x.detach().half().float())
    (rounded * upstream).sum().backward()
    assert torch.equal(x.grad, upstream)
    with torch.no_grad():  # no bookkeeping where no gradient is wanted
        assert not round_f16(x).requires_grad


# ---------------------------------------------------------------- the two matrix paths


@pytest.mark.parametrize("in_width", [16, 40, 64])
def test_matmul_f16_matches_float64_reference(in_width: int) -> None:
    """40: a last slice 8 wide. The accumulator grows to hundreds in steps of 1/64, so
    the float16 rounding after each slice acts (the float32 product differs)."""
    x, weight = eighths((9, in_width), seed=in_width), eighths((5, in_width), seed=in_width + 1)
    out = matmul_f16(x, weight)
    expected = coopmat_reference(x.double().numpy(), weight.double().numpy())
    np.testing.assert_array_equal(out.double().numpy(), expected)
    if in_width > SLICE:
        assert not torch.equal(out, x @ weight.T)


@pytest.mark.parametrize("in_width", [16, 40, 64])
def test_matmul_f16_fallback_matches_float64_reference(in_width: int) -> None:
    """Any float16 operands: a float16 product or sum computed in float32 and rounded once
    is the correctly rounded one, so the emulation is exact against float64."""
    generator = torch.Generator().manual_seed(in_width)
    scales = torch.logspace(-3, 2, in_width)
    x = round_f16(torch.randn(7, in_width, generator=generator) * scales)
    weight = round_f16(torch.randn(5, in_width, generator=generator))
    out = matmul_f16_fallback(x, weight)
    expected = fallback_reference(x.double().numpy(), weight.double().numpy())
    np.testing.assert_array_equal(out.double().numpy(), expected)
    assert not torch.equal(out, matmul_f16(x, weight))  # the paths round differently


def test_paths_keep_leading_dimensions() -> None:
    """``[..., N, in]``: each image of a batch is its own product."""
    x, weight = eighths((2, 3, 6, 32), seed=5), eighths((16, 32), seed=6)
    for product in (matmul_f16, matmul_f16_fallback):
        out = product(x, weight)
        assert out.shape == (2, 3, 6, 16)
        assert torch.equal(out[1, 2], product(x[1, 2], weight))


def test_paths_agree_with_float32_when_nothing_rounds() -> None:
    """Small integers: every partial sum is a float16 value, so both paths give the
    float32 product."""
    generator = torch.Generator().manual_seed(18)
    x = torch.randint(-3, 4, (20, 48), generator=generator).float()
    weight = torch.randint(-3, 4, (16, 48), generator=generator).float()
    assert torch.equal(matmul_f16(x, weight), x @ weight.T)
    assert torch.equal(matmul_f16_fallback(x, weight), x @ weight.T)


@pytest.mark.parametrize("product", [matmul_f16, matmul_f16_fallback])
def test_paths_overflow_to_inf(product) -> None:
    """A sum past float16's range is inf in the accumulator, as on the GPU."""
    x = torch.full((1, 32), 4096.0)
    weight = torch.full((2, 32), 1.0)
    weight[1] = -1.0
    assert product(x, weight).tolist() == [[math.inf, -math.inf]]


@pytest.mark.parametrize("product", [matmul_f16, matmul_f16_fallback])
def test_paths_gradient_is_the_float32_one(product) -> None:
    """Straight-through rounding: the gradients of the plain product."""
    generator = torch.Generator().manual_seed(19)
    x = round_f16(torch.randn(6, 32, generator=generator)).requires_grad_(True)
    weight = round_f16(torch.randn(4, 32, generator=generator)).requires_grad_(True)
    upstream = torch.randn(6, 4, generator=generator)
    (product(x, weight) * upstream).sum().backward()
    assert_close(x.grad, upstream @ weight.detach())
    assert_close(weight.grad, upstream.T @ x.detach())


# ---------------------------------------------------------------- golden values by hand
MATMUL_CASES = {
    # name: (nonzero inputs {index: value}, in width, f16 result, f32 result); weights all 1
    # first slice 16*128 = 2048, second adds 1: f16 2048 + 1 = 2049 rounds to 2048 (ties to
    # even); one float32 product gives 2049
    "slice_then_one": ({**{i: 128.0 for i in range(16)}, 16: 1.0}, 32, 2048.0, 2049.0),
    # first slice 2048 + 1 = 2049 -> 2048, second slice + 1 -> 2049 -> 2048; rounding the
    # float32 product once would give 2050 (a representable value)
    "rounds_each_slice": ({0: 2048.0, 1: 1.0, 16: 1.0}, 32, 2048.0, 2050.0),
    # 2048 + 1 + 1 inside one 16-wide slice is 2050 exactly: no rounding between 8-wide halves
    "slice_is_16_wide": ({0: 2048.0, 1: 1.0, 8: 1.0}, 32, 2050.0, 2050.0),
    # three slices, the last one 8 wide: 2048 -> +1 -> 2048 -> +1 -> 2048
    "three_slices": ({0: 2048.0, 16: 1.0, 39: 1.0}, 40, 2048.0, 2050.0),
}


def golden_product(entries: dict[int, float], in_width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A golden case's operands: pixel 0 holds ``entries`` (index -> value), pixel 1 a
    single 3 (3 * 1 = 3, no rounding); outputs 0 and 1 sum every input, output 2 none."""
    x = torch.zeros(2, in_width)
    for index, value in entries.items():
        x[0, index] = value
    x[1, 0] = 3.0
    weight = torch.ones(3, in_width)
    weight[2] = 0.0
    return x, weight


@pytest.mark.parametrize("case", list(MATMUL_CASES))
def test_matmul_f16_golden(case: str) -> None:
    entries, in_width, f16_result, f32_result = MATMUL_CASES[case]
    x, weight = golden_product(entries, in_width)
    out = matmul_f16(x, weight)
    assert out.shape == (2, 3)
    assert out[0].tolist() == [f16_result, f16_result, 0.0]
    assert out[1].tolist() == [3.0, 3.0, 0.0]
    assert (x @ weight.T)[0, 0].item() == f32_result


# name: (nonzero inputs {index: value}, in width, fallback result, coopmat result, f32 result);
# weights all 1, so the result is the inputs' sum in each path's order and rounding
FALLBACK_CASES = {
    # 2048 + 1 = 2049 rounds to 2048 (ties to even, f16 spacing 2 there), twice: 2048;
    # the cooperative-matrix slice sums 2048 + 1 + 1 = 2050 first (representable)
    "rounds_after_each_product": ({0: 2048.0, 1: 1.0, 2: 1.0}, 16, 2048.0, 2050.0, 2050.0),
    # in order: 1, 2, then + 2048 = 2050 (exact): the same inputs later in the sum
    "small_first": ({0: 1.0, 1: 1.0, 16: 2048.0}, 32, 2050.0, 2050.0, 2050.0),
    # 2048 first, then 1 and 1 in the next slice: 2049 -> 2048 twice; coopmat adds the
    # slice's 2 at once: 2050
    "large_first_across_slices": ({0: 2048.0, 16: 1.0, 17: 1.0}, 32, 2048.0, 2050.0, 2050.0),
}


@pytest.mark.parametrize("case", list(FALLBACK_CASES))
def test_matmul_f16_fallback_golden(case: str) -> None:
    entries, in_width, fallback, coopmat, f32 = FALLBACK_CASES[case]
    x, weight = golden_product(entries, in_width)
    out = matmul_f16_fallback(x, weight)
    assert out.shape == (2, 3)
    assert out[0].tolist() == [fallback, fallback, 0.0]
    assert out[1].tolist() == [3.0, 3.0, 0.0]
    assert matmul_f16(x, weight)[0, 0].item() == coopmat
    assert (x @ weight.T)[0, 0].item() == f32


def test_matmul_f16_fallback_rounds_each_product() -> None:
    """(1 + 2**-10) * (1 + 3 * 2**-10) = 1 + 2**-8 + 3 * 2**-20; float16's step at 1 is
    2**-10, so the float16 product is 1 + 2**-8. Adding -1 * 1 leaves 2**-8 exactly. The
    cooperative-matrix slice sums in float32: 2**-8 + 3 * 2**-20, and float16's step at
    2**-8 is 2**-18, so 3 * 2**-20 (3/4 of it) rounds up: 2**-8 + 2**-18."""
    x = torch.tensor([[1 + 2**-10, -1.0]])
    weight = torch.tensor([[1 + 3 * 2**-10, 1.0]])
    assert matmul_f16_fallback(x, weight).item() == 2**-8
    assert matmul_f16(x, weight).item() == 2**-8 + 2**-18
    assert (x.double() @ weight.double().T).item() == 2**-8 + 3 * 2**-20
