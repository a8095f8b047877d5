"""Tests for kpn.model.pyramid: reductions, expansions, mips, details (docs/design.md §1, §10)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
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
    upsample,
)

# ------------------------------------------------------- independent numpy references


def mirror(index: int, size: int) -> int:
    """MIRRORED_REPEAT by repeated folding at -0.5 and size-0.5 (edge pixel included)."""
    while index < 0 or index >= size:
        index = -1 - index if index < 0 else 2 * size - 1 - index
    return index


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


def ref_bspline(coarse: np.ndarray, height: int, width: int) -> np.ndarray:
    """Design §1 bspline: sum u_x[i] u_y[j] C(x//2+i, y//2+j), u even [5,10,1]/16, odd
    [1,10,5]/16."""
    u = {0: np.array([5, 10, 1]) / 16, 1: np.array([1, 10, 5]) / 16}
    coarse_h, coarse_w = coarse.shape[-2:]
    out = np.zeros((*coarse.shape[:-2], height, width))
    for y in range(height):
        for x in range(width):
            for j in (-1, 0, 1):
                for i in (-1, 0, 1):
                    tap = coarse[..., mirror(y // 2 + j, coarse_h), mirror(x // 2 + i, coarse_w)]
                    out[..., y, x] += u[x % 2][i + 1] * u[y % 2][j + 1] * tap
    return out


def ref_bilinear(coarse: np.ndarray, height: int, width: int) -> np.ndarray:
    """Design §1 bilinear: C sampled at texel ((x+1)*Wc/W - 0.5, (y+1)*Hc/H - 0.5), mirrored."""
    coarse_h, coarse_w = coarse.shape[-2:]
    out = np.zeros((*coarse.shape[:-2], height, width))
    for y in range(height):
        cy = (y + 1) * coarse_h / height - 0.5
        y0, fy = math.floor(cy), cy - math.floor(cy)
        for x in range(width):
            cx = (x + 1) * coarse_w / width - 0.5
            x0, fx = math.floor(cx), cx - math.floor(cx)
            for j, wy in ((0, 1 - fy), (1, fy)):
                for i, wx in ((0, 1 - fx), (1, fx)):
                    tap = coarse[..., mirror(y0 + j, coarse_h), mirror(x0 + i, coarse_w)]
                    out[..., y, x] += wx * wy * tap
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


def ref_smooth_post_diff(image: np.ndarray) -> np.ndarray:
    """vkdt's up.comp POST_MLP_DIFF: the coarse texel c is the bilinear fetch at fine
    position 2c+1 (uv = (2c+1)/W), i.e. mean of fine 2c, 2c+1 mirrored at the *fine* edge."""
    u = {0: np.array([5, 10, 1]) / 16, 1: np.array([1, 10, 5]) / 16}
    height, width = image.shape[-2:]
    out = np.zeros_like(image)
    for y in range(height):
        for x in range(width):
            for j in (-1, 0, 1):
                for i in (-1, 0, 1):
                    cy, cx = y // 2 + j, x // 2 + i
                    mean = 0.0
                    for fy in (2 * cy, 2 * cy + 1):
                        for fx in (2 * cx, 2 * cx + 1):
                            mean = mean + image[..., mirror(fy, height), mirror(fx, width)] / 4
                    out[..., y, x] += u[x % 2][i + 1] * u[y % 2][j + 1] * mean
    return out


# ------------------------------------------------------------------------- fixtures


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(36)


def rand(generator: torch.Generator, *shape: int) -> Tensor:
    return torch.rand(*shape, generator=generator, dtype=torch.float64)


def as_np(x: Tensor) -> np.ndarray:
    return x.detach().numpy()


SMALL_SIZES = [(1, 1), (1, 5), (3, 3), (3, 5), (4, 4), (5, 7), (6, 1), (7, 4), (8, 8), (2, 3)]
EVEN_SIZES = [(2, 2), (4, 6), (8, 2), (6, 8)]
ODD_SIZES = [(1, 5), (3, 5), (5, 4), (4, 7), (7, 7)]


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


# ---------------------------------------------------------------- up_bspline


def test_up_bspline_golden_2x2_to_4x4_and_3x3():
    coarse = torch.tensor([[1.0, 3.0], [5.0, 7.0]], dtype=torch.float64).view(1, 1, 2, 2)
    # along x, row [1, 3] with mirrored ends C(-1)=1, C(2)=3:
    #   x=0 even: (5*1 + 10*1 + 1*3)/16 = 18/16 = 1.125
    #   x=1 odd:  (1*1 + 10*1 + 5*3)/16 = 26/16 = 1.625
    #   x=2 even: (5*1 + 10*3 + 1*3)/16 = 38/16 = 2.375
    #   x=3 odd:  (1*1 + 10*3 + 5*3)/16 = 46/16 = 2.875
    # along y, rows r0 and r1 = r0 + 4 with mirrored ends: the weights on r1 are
    #   y=0: 1/16, y=1: 5/16, y=2: 11/16, y=3: 15/16, i.e. r0 + 0.25, 1.25, 2.75, 3.75
    row = torch.tensor([1.125, 1.625, 2.375, 2.875], dtype=torch.float64)
    add = torch.tensor([0.25, 1.25, 2.75, 3.75], dtype=torch.float64)
    expected = row.view(1, 4) + add.view(4, 1)
    assert_close(up_bspline(coarse, 4, 4)[0, 0], expected)
    # a 3x3 fine image has the same 2x2 coarse level: its first 3 rows and columns
    assert_close(up_bspline(coarse, 3, 3)[0, 0], expected[:3, :3])


def test_up_bspline_constant_in_constant_out():
    coarse = torch.full((2, 3, 3, 4), -0.75, dtype=torch.float64)
    assert_close(up_bspline(coarse, 5, 7), torch.full((2, 3, 5, 7), -0.75, dtype=torch.float64))


def test_up_bspline_linear_ramp_interior():
    # C(k) = k. even x = 2k: (5(k-1) + 10k + (k+1))/16 = k - 1/4
    #           odd x = 2k+1: ((k-1) + 10k + 5(k+1))/16 = k + 1/4
    # so fine(x) = x/2 - 1/4 away from the edges (coarse k sits at fine 2k + 1/2)
    coarse = torch.arange(8, dtype=torch.float64).view(1, 1, 1, 8).expand(1, 1, 3, 8)
    fine = up_bspline(coarse, 6, 16)
    interior = torch.arange(2, 14, dtype=torch.float64) / 2 - 0.25
    assert_close(fine[0, 0, :, 2:14], interior.expand(6, -1))
    # the left edge mirrors C(-1) = C(0) = 0: x=0 gives (0 + 0 + 1)/16, x=1 (0 + 0 + 5)/16
    assert_close(fine[0, 0, 0, :2], torch.tensor([1 / 16, 5 / 16], dtype=torch.float64))


@pytest.mark.parametrize("size", SMALL_SIZES)
def test_up_bspline_matches_reference(size, generator):
    coarse = rand(generator, 2, 3, *coarse_size(*size))
    assert_close(up_bspline(coarse, *size), torch.from_numpy(ref_bspline(as_np(coarse), *size)))


# ---------------------------------------------------------------- up_bilinear


def test_up_bilinear_even_width_maps_2k_to_k():
    coarse = torch.tensor([1.0, 3.0, 9.0], dtype=torch.float64).view(1, 1, 1, 3)
    out = up_bilinear(coarse, 1, 6)
    # texel (x+1)*3/6 - 0.5 = x/2: fine 2k on coarse k, 2k+1 halfway between k and k+1;
    # x=5 lands on 2.5, between C(2) and the mirrored C(3) = C(2) = 9
    assert out.flatten().tolist() == [1.0, 2.0, 3.0, 6.0, 9.0, 9.0]


def test_up_bilinear_odd_width_golden():
    coarse = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64).view(1, 1, 1, 3)
    out = up_bilinear(coarse, 1, 5)
    # texel (x+1)*3/5 - 0.5 = 0.1, 0.7, 1.3, 1.9, 2.5
    #   0.1: 0.9*1 + 0.1*2 = 1.1 ; 0.7: 0.3*1 + 0.7*2 = 1.7 ; 1.3: 0.7*2 + 0.3*4 = 2.6
    #   1.9: 0.1*2 + 0.9*4 = 3.8 ; 2.5: between C(2) and mirrored C(3) = C(2): 4
    assert_close(out.flatten(), torch.tensor([1.1, 1.7, 2.6, 3.8, 4.0], dtype=torch.float64))


def test_up_bilinear_odd_height_golden():
    coarse = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64).view(1, 1, 3, 1)
    out = up_bilinear(coarse.expand(1, 2, 3, 2), 5, 3)
    assert_close(out[0, 1, :, 1], torch.tensor([1.1, 1.7, 2.6, 3.8, 4.0], dtype=torch.float64))


@pytest.mark.parametrize("size", [*SMALL_SIZES, (9, 14)])
def test_up_bilinear_matches_reference(size, generator):
    coarse = rand(generator, 2, 3, *coarse_size(*size))
    assert_close(up_bilinear(coarse, *size), torch.from_numpy(ref_bilinear(as_np(coarse), *size)))


@pytest.mark.parametrize("size", [(4, 6), (5, 7), (8, 3), (9, 14)])
def test_up_bilinear_matches_grid_sample_reflection(size, generator):
    height, width = size
    coarse = rand(generator, 2, 3, *coarse_size(height, width))
    # uv = ((x+1)/W, (y+1)/H) -> grid_sample's normalised 2*uv - 1
    gx = 2 * (torch.arange(width, dtype=torch.float64) + 1) / width - 1
    gy = 2 * (torch.arange(height, dtype=torch.float64) + 1) / height - 1
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1).expand(2, -1, -1, -1)
    theirs = F.grid_sample(
        coarse, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )
    assert_close(up_bilinear(coarse, height, width), theirs)


def test_up_bilinear_constant_in_constant_out():
    coarse = torch.full((1, 3, 4, 2), 2.5, dtype=torch.float64)
    assert_close(up_bilinear(coarse, 7, 3), torch.full((1, 3, 7, 3), 2.5, dtype=torch.float64))


def test_upsample_dispatch(generator):
    coarse = rand(generator, 1, 3, 3, 2)
    assert_close(upsample(coarse, 5, 4, "bspline"), up_bspline(coarse, 5, 4))
    assert_close(upsample(coarse, 5, 4, "bilinear"), up_bilinear(coarse, 5, 4))
    assert not torch.allclose(upsample(coarse, 5, 4, "bspline"), upsample(coarse, 5, 4, "bilinear"))


# ---------------------------------------------------------------- details


def test_details_golden_1x4():
    row = torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=torch.float64).view(1, 1, 1, 4)
    mips = mip_pyramid(row, 2, "box2")  # M1 = [1.5, 6]
    # bilinear up of [1.5, 6] to 4: x/2 -> 1.5, 3.75, 6, 6 (x=3 at 1.5 -> mirrored C(2)=6)
    #   D = [1-1.5, 2-3.75, 4-6, 8-6] = [-0.5, -1.75, -2, 2]
    (d_bilinear,) = details(mips, "bilinear")
    assert_close(d_bilinear.flatten(), torch.tensor([-0.5, -1.75, -2.0, 2.0], dtype=torch.float64))
    # bspline up, C(-1)=1.5, C(2)=6:
    #   x=0: (5*1.5 + 10*1.5 + 6)/16 = 28.5/16 = 1.78125 ; x=1: (1.5 + 15 + 30)/16 = 2.90625
    #   x=2: (7.5 + 60 + 6)/16 = 4.59375               ; x=3: (1.5 + 60 + 30)/16 = 5.71875
    (d_bspline,) = details(mips, "bspline")
    expected = torch.tensor([1 - 1.78125, 2 - 2.90625, 4 - 4.59375, 8 - 5.71875])
    assert_close(d_bspline.flatten(), expected.double())


@pytest.mark.parametrize("up", ["bspline", "bilinear"])
@pytest.mark.parametrize("down", ["box2", "binomial5", "box2_vkdt"])
def test_details_definition_and_reconstruction(up, down, generator):
    x = rand(generator, 2, 3, 13, 10)
    mips = mip_pyramid(x, 5, down)
    ds = details(mips, up)
    assert len(ds) == 4
    for level, d in enumerate(ds):
        fine, coarse = mips[level], mips[level + 1]
        assert d.shape == fine.shape
        assert_close(d, fine - upsample(coarse, *fine.shape[-2:], up))
    # add blend with identity: from the residual low-pass back to the image
    out = mips[-1]
    for d in reversed(ds):
        out = upsample(out, *d.shape[-2:], up) + d
    assert_close(out, x)


def test_details_of_constant_are_zero():
    mips = mip_pyramid(torch.full((1, 3, 7, 5), 3.0, dtype=torch.float64), 4, "binomial5")
    for up in ("bspline", "bilinear"):
        for d in details(mips, up):
            assert_close(d, torch.zeros_like(d))


# ---------------------------------------------------------------- smooth_post_diff


@pytest.mark.parametrize("size", EVEN_SIZES)
def test_smooth_post_diff_equals_up_down_on_even_sizes(size, generator):
    x = rand(generator, 2, 3, *size)
    assert_close(smooth_post_diff(x), up_bspline(down_box2(x), *size))


@pytest.mark.parametrize("size", ODD_SIZES)
def test_smooth_post_diff_differs_on_odd_sizes(size, generator):
    x = rand(generator, 2, 3, *size)
    assert not torch.allclose(smooth_post_diff(x), up_bspline(down_box2(x), *size))


@pytest.mark.parametrize("size", SMALL_SIZES + ODD_SIZES)
def test_smooth_post_diff_matches_vkdt_reference(size, generator):
    x = rand(generator, 2, 3, *size)
    assert_close(smooth_post_diff(x), torch.from_numpy(ref_smooth_post_diff(as_np(x))))


def test_smooth_post_diff_golden_1x5():
    f = torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0], dtype=torch.float64).view(1, 1, 1, 5)
    # coarse texel c = mean of fine 2c, 2c+1 mirrored at the fine edge (W=5, Wc=3):
    #   c=-1: fine -2,-1 -> 1,0 : (2+1)/2 = 1.5     c=0: (1+2)/2 = 1.5
    #   c=1: (4+8)/2 = 6      c=2: fine 4,5 -> 4,4 : 16
    #   c=3: fine 6,7 -> 3,2 : (8+4)/2 = 6   <- up_bspline(down_box2) mirrors coarse: C(3)=C(2)=16
    # x=0 even: (5*1.5 + 10*1.5 + 6)/16 = 28.5/16 = 1.78125
    # x=1 odd:  (1.5 + 10*1.5 + 5*6)/16 = 46.5/16 = 2.90625
    # x=2 even: (5*1.5 + 10*6 + 16)/16 = 83.5/16 = 5.21875
    # x=3 odd:  (1.5 + 10*6 + 5*16)/16 = 141.5/16 = 8.84375
    # x=4 even: (5*6 + 10*16 + 6)/16 = 196/16 = 12.25  (up_bspline(down_box2): 206/16 = 12.875)
    expected = torch.tensor([1.78125, 2.90625, 5.21875, 8.84375, 12.25], dtype=torch.float64)
    assert_close(smooth_post_diff(f).flatten(), expected, rtol=0, atol=1e-12)
    other = up_bspline(down_box2(f), 1, 5).flatten()
    assert_close(other, torch.tensor([1.78125, 2.90625, 5.21875, 8.84375, 12.875]).double())


def test_smooth_post_diff_golden_3x5_separable():
    # image(x,y) = g(y) * f(x): the operator is separable, so the result is S(g)[y] * S(f)[x]
    # with S(f) from the 1x5 case above and, for g = [1, 2, 4] (H=3, Hc=2):
    #   c=-1: (2+1)/2 = 1.5, c=0: 1.5, c=1: rows 2,3 -> 2,2: 4, c=2: rows 4,5 -> 1,0: 1.5
    #   y=0: (5*1.5 + 10*1.5 + 4)/16 = 26.5/16 = 1.65625
    #   y=1: (1.5 + 10*1.5 + 5*4)/16 = 36.5/16 = 2.28125
    #   y=2: (5*1.5 + 10*4 + 1.5)/16 = 49/16 = 3.0625
    f = torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0], dtype=torch.float64)
    g = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    image = (g.view(3, 1) * f.view(1, 5)).view(1, 1, 3, 5)
    s_f = torch.tensor([1.78125, 2.90625, 5.21875, 8.84375, 12.25], dtype=torch.float64)
    s_g = torch.tensor([1.65625, 2.28125, 3.0625], dtype=torch.float64)
    assert_close(smooth_post_diff(image)[0, 0], s_g.view(3, 1) * s_f.view(1, 5))


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
