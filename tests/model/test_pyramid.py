"""Tests for kpn.model.pyramid: sizes, reductions and mips (docs/design.md §1, §10), and
the operators' shared family (shapes, layout, gradcheck), expansions included. The
expansions, details and smooth_post_diff one by one are in test_pyramid_up.py.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import Tensor
from torch.testing import assert_close

from kpn.model.pyramid import (
    coarse_size,
    details,
    down_binomial5,
    down_binomial5_vkdt,
    down_box2,
    level_sizes,
    mip_pyramid,
    mips_box2_vkdt,
    smooth_post_diff,
    up_bilinear,
    up_bspline,
)

from model_shared import SMALL_SIZES, as_np, mirror, rand

# ------------------------------------------------------- independent numpy references


def half(n: int) -> int:
    return (n + 1) // 2


def ref_box2(fine: np.ndarray) -> np.ndarray:
    """Design §1 box2: coarse(x,y) = mean of fine(2x..2x+1, 2y..2y+1), mirrored."""
    height, width = fine.shape[-2:]
    out = np.zeros((*fine.shape[:-2], half(height), half(width)))
    for y in range(half(height)):
        for x in range(half(width)):
            for j in (0, 1):
                for i in (0, 1):
                    out[..., y, x] += fine[..., mirror(2 * y + j, height), mirror(2 * x + i, width)]
    return out / 4


def ref_binomial5(fine: np.ndarray) -> np.ndarray:
    """Design §1 binomial5: sum over i,j in -2..2 of b[i] b[j] fine(2x+i, 2y+j), mirrored."""
    b = np.array([1, 4, 6, 4, 1]) / 16
    height, width = fine.shape[-2:]
    out = np.zeros((*fine.shape[:-2], half(height), half(width)))
    for y in range(half(height)):
        for x in range(half(width)):
            for j in range(-2, 3):
                for i in range(-2, 3):
                    tap = fine[..., mirror(2 * y + j, height), mirror(2 * x + i, width)]
                    out[..., y, x] += b[i + 2] * b[j + 2] * tap
    return out


def ref_vkdt_mips(image: np.ndarray, count: int) -> list[np.ndarray]:
    """Design §10, read literally: M1 = 2x2 mean of M0; M2 = 2x2 mean at offset (2,2) of each
    4x4 block of M0; M3 = at offset (6,6) of each 8x8 block of M0; all mirrored at M0's edge.
    M4..M6 the same again from M3 (block 2, 4, 8 with offsets 0, 2, 6)."""
    mips = [image]
    sizes = [image.shape[-2:]]
    for level in range(1, count):
        sizes.append((half(sizes[-1][0]), half(sizes[-1][1])))
        base_level = 3 * ((level - 1) // 3)
        base = mips[base_level]
        block = 2 ** (level - base_level)
        offset = block - 2
        base_h, base_w = base.shape[-2:]
        out_h, out_w = sizes[level]
        out = np.zeros((*image.shape[:-2], out_h, out_w))
        for y in range(out_h):
            for x in range(out_w):
                for j in (0, 1):
                    for i in (0, 1):
                        by = mirror(block * y + offset + j, base_h)
                        bx = mirror(block * x + offset + i, base_w)
                        out[..., y, x] += base[..., by, bx] / 4
        mips.append(out)
    return mips


# ------------------------------------------------------------------------- fixtures


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(36)


def grid3x3() -> Tensor:
    """[[1,2,3],[4,5,6],[7,8,9]] in every channel of a [1,3,3,3] image (scaled per channel)."""
    base = torch.arange(1.0, 10.0, dtype=torch.float64).view(3, 3)
    return torch.stack([base, 2 * base, -base]).unsqueeze(0)


# ---------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    ("size", "expected"),
    [((1, 1), (1, 1)), ((2, 2), (1, 1)), ((3, 8), (2, 4)), ((5, 7), (3, 4)), ((17, 13), (9, 7))],
)
def test_coarse_size(size, expected):
    # (w+1)//2 per axis: 3 -> 2, 5 -> 3, 7 -> 4, 17 -> 9, 13 -> 7
    assert coarse_size(*size) == expected


def test_level_sizes():
    # 17 -> 9 -> 5 -> 3 -> 2 -> 1 -> 1 and 13 -> 7 -> 4 -> 2 -> 1 -> 1 -> 1
    assert level_sizes(17, 13, 7) == [(17, 13), (9, 7), (5, 4), (3, 2), (2, 1), (1, 1), (1, 1)]
    assert level_sizes(64, 48, 1) == [(64, 48)]
    assert level_sizes(64, 48, 4) == [(64, 48), (32, 24), (16, 12), (8, 6)]


# ---------------------------------------------------------------- down_box2


def test_down_box2_golden_3x3():
    out = down_box2(grid3x3())
    # (0,0) = (1+2+4+5)/4 = 3
    # (1,0): column 3 mirrors to column 2: (3+3+6+6)/4 = 4.5   (torch reflect would give 4)
    # (0,1): row 3 mirrors to row 2: (7+8+7+8)/4 = 7.5
    # (1,1): only pixel 9, four times = 9
    expected = torch.tensor([[3.0, 4.5], [7.5, 9.0]], dtype=torch.float64)
    assert_close(out, torch.stack([expected, 2 * expected, -expected]).unsqueeze(0))


def test_down_box2_golden_1x5():
    row = torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0], dtype=torch.float64).view(1, 1, 1, 5)
    # (1+2)/2, (4+8)/2, (16+16)/2; the single row is its own mirror
    assert down_box2(row).flatten().tolist() == [1.5, 6.0, 16.0]


@pytest.mark.parametrize("size", SMALL_SIZES)
def test_down_box2_matches_reference(size, generator):
    x = rand(generator, 2, 3, *size)
    assert_close(down_box2(x), torch.from_numpy(ref_box2(as_np(x))))


# ---------------------------------------------------------------- down_binomial5


def test_down_binomial5_golden_separable_3x3():
    # image(x, y) = f(x) * g(y) with f = [1, 2, 4] and g = [1, 3, 9]; the result is the
    # product of the 1-D results.
    # f mirrored: f(-2)=f(1)=2, f(-1)=f(0)=1, f(3)=f(2)=4, f(4)=f(1)=2
    #   c_f(0) = (1*2 + 4*1 + 6*1 + 4*2 + 1*4)/16 = 24/16 = 1.5
    #   c_f(1) = (1*1 + 4*2 + 6*4 + 4*4 + 1*2)/16 = 51/16 = 3.1875
    # g the same way:
    #   c_g(0) = (1*3 + 4*1 + 6*1 + 4*3 + 1*9)/16 = 34/16 = 2.125
    #   c_g(1) = (1*1 + 4*3 + 6*9 + 4*9 + 1*3)/16 = 106/16 = 6.625
    f = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    g = torch.tensor([1.0, 3.0, 9.0], dtype=torch.float64)
    image = (g.view(3, 1) * f.view(1, 3)).view(1, 1, 3, 3)
    expected = torch.tensor([2.125, 6.625]).view(2, 1) * torch.tensor([1.5, 3.1875]).view(1, 2)
    assert_close(down_binomial5(image)[0, 0], expected.double())


@pytest.mark.parametrize("size", SMALL_SIZES)
def test_down_binomial5_matches_reference(size, generator):
    x = rand(generator, 2, 3, *size)
    assert_close(down_binomial5(x), torch.from_numpy(ref_binomial5(as_np(x))))


@pytest.mark.parametrize("down", [down_box2, down_binomial5])
def test_down_keeps_constants(down):
    x = torch.full((2, 3, 5, 7), 0.25, dtype=torch.float64)
    assert_close(down(x), torch.full((2, 3, 3, 4), 0.25, dtype=torch.float64))


# ---------------------------------------------------------------- mips_box2_vkdt


def linear_image(height: int, width: int) -> Tensor:
    """value(x, y) = x + 10*y: the mean over any set of pixels is mean(x) + 10*mean(y)."""
    ys = torch.arange(height, dtype=torch.float64).view(height, 1)
    xs = torch.arange(width, dtype=torch.float64).view(1, width)
    return (xs + 10 * ys).expand(1, 3, height, width).clone()


def test_mips_box2_vkdt_golden_8x8():
    mips = mips_box2_vkdt(linear_image(8, 8), 4)
    # M1(0,0): true 2x2 mean of x 0..1, y 0..1 = 0.5 + 10*0.5 = 5.5
    assert mips[1][0, 0, 0, 0].item() == 5.5
    # M2(0,0): 2x2 at offset (2,2) of the 4x4 block: x 2..3, y 2..3 = 2.5 + 25 = 27.5
    # (a true 4x4 mean would be 1.5 + 15 = 16.5)
    assert mips[2][0, 0, 0, 0].item() == 27.5
    # M2(1,0): x 6..7, y 2..3 = 6.5 + 25 = 31.5
    assert mips[2][0, 0, 0, 1].item() == 31.5
    # M3(0,0): offset (6,6) of the 8x8 block: x 6..7, y 6..7 = 6.5 + 65 = 71.5 (true: 38.5)
    assert mips[3][0, 0, 0, 0].item() == 71.5


def test_mips_box2_vkdt_golden_mirrored_5x5():
    mips = mips_box2_vkdt(linear_image(5, 5), 4)
    # sizes 5 -> 3 -> 2 -> 1
    assert [m.shape[-1] for m in mips] == [5, 3, 2, 1]
    # M1(2,0): x 4..5 -> 4, 4 ; y 0..1 -> 4 + 10*0.5 = 9
    assert mips[1][0, 0, 0, 2].item() == 9.0
    # M2(1,0): x 6..7 mirror at M0's edge (W=5) to 3, 2 -> 2.5 ; y 2..3 -> 25 ; = 27.5
    # (torch reflect would read x 2, 1 -> 1.5)
    assert mips[2][0, 0, 0, 1].item() == 27.5
    # M3(0,0): x 6..7 -> 3, 2 and y 6..7 -> 3, 2 : 2.5 + 25 = 27.5
    assert mips[3][0, 0, 0, 0].item() == 27.5


@pytest.mark.parametrize("size", [(16, 16), (17, 13), (13, 17), (70, 45)])
def test_mips_box2_vkdt_matches_spec_sentence(size, generator):
    x = rand(generator, 1, 3, *size)
    mips = mips_box2_vkdt(x, 7)
    expected = ref_vkdt_mips(as_np(x), 7)
    assert [tuple(m.shape[-2:]) for m in mips] == level_sizes(*size, 7)
    for level, (ours, theirs) in enumerate(zip(mips, expected, strict=True)):
        assert_close(ours, torch.from_numpy(theirs), msg=f"level {level}")


def test_mips_box2_vkdt_first_level_is_true_box2_then_aliases(generator):
    x = rand(generator, 2, 3, 32, 32)
    mips = mips_box2_vkdt(x, 7)
    true = mip_pyramid(x, 7, "box2")
    assert mips[0] is x
    assert_close(mips[1], true[1])
    for level in (2, 3, 5, 6):
        assert not torch.allclose(mips[level], true[level])
    # M4 is the true 2x2 mean of M3 (the vkdt M3, not the true one)
    assert_close(mips[4], down_box2(mips[3]))


# ---------------------------------------------------------------- mip_pyramid


@pytest.mark.parametrize(("down", "reduce"), [("box2", down_box2), ("binomial5", down_binomial5)])
def test_mip_pyramid_applies_reduction_level_after_level(down, reduce, generator):
    x = rand(generator, 2, 3, 11, 6)
    mips = mip_pyramid(x, 4, down)
    assert len(mips) == 4
    assert mips[0] is x
    for fine, coarse in itertools.pairwise(mips):
        assert_close(coarse, reduce(fine))
    assert [tuple(m.shape[-2:]) for m in mips] == [(11, 6), (6, 3), (3, 2), (2, 1)]


def test_mip_pyramid_box2_vkdt_dispatch(generator):
    x = rand(generator, 1, 3, 9, 9)
    for ours, theirs in zip(mip_pyramid(x, 5, "box2_vkdt"), mips_box2_vkdt(x, 5), strict=True):
        assert_close(ours, theirs)


def test_mip_pyramid_single_level_is_the_image(generator):
    x = rand(generator, 1, 3, 4, 4)
    assert len(mip_pyramid(x, 1, "binomial5")) == 1


# ------------------------------------------------------- shared family: shapes, layout, grad


def _up_half(fn: Callable[[Tensor, int, int], Tensor]) -> Callable[[Tensor], Tensor]:
    """Expand an image of size (h, w) to (2h - 1, 2w): the fine size has an odd height."""
    return lambda x: fn(x, 2 * x.shape[-2] - 1, 2 * x.shape[-1])


OPERATORS = {
    "down_box2": down_box2,
    "down_binomial5": down_binomial5,
    "up_bspline": _up_half(up_bspline),
    "up_bilinear": _up_half(up_bilinear),
    "smooth_post_diff": smooth_post_diff,
    "mips_box2_vkdt": lambda x: tuple(mips_box2_vkdt(x, 4)),
    "details_bilinear": lambda x: tuple(details(mip_pyramid(x, 3, "binomial5"), "bilinear")),
    "details_bspline": lambda x: tuple(details(mip_pyramid(x, 3, "box2"), "bspline")),
}


def _as_tuple(out: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("name", OPERATORS)
@pytest.mark.parametrize("batch", [1, 2, 5])
def test_shapes_and_per_image_independence(name, batch, generator):
    op = OPERATORS[name]
    x = rand(generator, batch, 3, 7, 6)
    outs = _as_tuple(op(x))
    for out in outs:
        assert out.shape[:2] == (batch, 3)
        assert out.dtype == torch.float64
    for b in range(batch):
        single = _as_tuple(op(x[b : b + 1]))
        for out, alone in zip(outs, single, strict=True):
            assert_close(out[b : b + 1], alone)


@pytest.mark.parametrize("name", OPERATORS)
def test_output_sizes(name):
    outs = _as_tuple(OPERATORS[name](torch.zeros(1, 3, 7, 6)))
    sizes = [tuple(o.shape[-2:]) for o in outs]
    expected = {
        "down_box2": [(4, 3)],
        "down_binomial5": [(4, 3)],
        "up_bspline": [(13, 12)],
        "up_bilinear": [(13, 12)],
        "smooth_post_diff": [(7, 6)],
        "mips_box2_vkdt": [(7, 6), (4, 3), (2, 2), (1, 1)],
        "details_bilinear": [(7, 6), (4, 3)],
        "details_bspline": [(7, 6), (4, 3)],
    }[name]
    assert sizes == expected


@pytest.mark.parametrize("name", OPERATORS)
def test_noncontiguous_and_channels_last(name, generator):
    op = OPERATORS[name]
    base = rand(generator, 2, 3, 6, 7)
    reference = _as_tuple(op(base.transpose(-1, -2).contiguous()))
    transposed = base.transpose(-1, -2)
    assert not transposed.is_contiguous()
    for out, ref in zip(_as_tuple(op(transposed)), reference, strict=True):
        assert_close(out, ref, rtol=0, atol=0)
    x = rand(generator, 2, 3, 7, 5)
    channels_last = x.to(memory_format=torch.channels_last)
    for out, ref in zip(_as_tuple(op(channels_last)), _as_tuple(op(x)), strict=True):
        assert_close(out, ref, rtol=1e-15, atol=1e-15)


def test_float32_stays_float32(generator):
    x = torch.rand(1, 3, 5, 5, generator=generator)
    for op in OPERATORS.values():
        for out in _as_tuple(op(x)):
            assert out.dtype == torch.float32


@pytest.mark.parametrize("name", OPERATORS)
def test_gradcheck(name, generator):
    x = rand(generator, 1, 2, 5, 3).requires_grad_()
    assert torch.autograd.gradcheck(OPERATORS[name], (x,))


def test_down_binomial5_vkdt_sums_in_sub_comp_order() -> None:
    """One float32 sum of the 25 taps, j (rows) outer, i inner, each term b[j] b[i] * x
    rounded, as vkdt's sub.comp: scalar numpy float32 arithmetic says what each output is,
    bit for bit; the separable filter rounds elsewhere (same value in exact arithmetic)."""
    rng = np.random.default_rng(5)
    fine = rng.random((1, 1, 7, 9), dtype=np.float32) * np.float32(3.7)
    got = down_binomial5_vkdt(torch.from_numpy(fine))
    padded = np.pad(fine[0, 0], ((2, 2 + 1), (2, 2 + 1)), mode="symmetric")  # 7, 9: odd
    taps = [np.float32(t) for t in (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)]
    expected = np.zeros((4, 5), np.float32)
    for y, x in itertools.product(range(4), range(5)):
        total = np.float32(0)
        for j, i in itertools.product(range(5), range(5)):
            total = np.float32(total + np.float32(taps[j] * taps[i]) * padded[2 * y + j, 2 * x + i])
        expected[y, x] = total
    np.testing.assert_array_equal(got[0, 0].numpy(), expected)
    separable = down_binomial5(torch.from_numpy(fine))
    assert not torch.equal(separable, got)
    assert_close(separable, got, rtol=1e-6, atol=0.0)
    exact = down_binomial5(torch.from_numpy(fine).double())
    assert_close(down_binomial5_vkdt(torch.from_numpy(fine).double()), exact, rtol=1e-15, atol=0)
