"""Tests for kpn.model.pyramid: expansions, details and vkdt's post_diff smoothing
(docs/design.md §1, §5). Sizes, reductions, mips and the operators' shared family are in
test_pyramid.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from kpn.model.pyramid import (
    coarse_size,
    details,
    down_box2,
    mip_pyramid,
    smooth_post_diff,
    up_bilinear,
    up_bspline,
    upsample,
)

from model_shared import SMALL_SIZES, as_np, mirror, rand

# ------------------------------------------------------- independent numpy references


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


EVEN_SIZES = [(2, 2), (4, 6), (8, 2), (6, 8)]
ODD_SIZES = [(1, 5), (3, 5), (5, 4), (4, 7), (7, 7)]


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
