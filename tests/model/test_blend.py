"""Tests for kpn.model.blend: one level of the coarse-to-fine reconstruction (docs/design.md §5)."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck
from torch.testing import assert_close

from kpn.model.blend import blend_level
from kpn.model.pyramid import smooth_post_diff

BLENDS = ["mix", "add", "post_diff"]


@pytest.fixture
def level() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(up(O_{i+1}), I_i, a_i) for a 2-image batch of 5x6 pixels."""
    generator = torch.Generator().manual_seed(0)
    coarse_up = torch.randn(2, 3, 5, 6, generator=generator)
    filtered = torch.randn(2, 3, 5, 6, generator=generator)
    alpha = torch.rand(2, 1, 5, 6, generator=generator)
    return coarse_up, filtered, alpha


def constant(value: float, channels: int = 3, height: int = 4, width: int = 4) -> torch.Tensor:
    return torch.full((1, channels, height, width), value)


@pytest.mark.parametrize("blend", BLENDS)
@pytest.mark.parametrize("batch", [1, 2, 3])
@pytest.mark.parametrize(("height", "width"), [(1, 1), (3, 5), (4, 4)])
def test_shape(blend: str, batch: int, height: int, width: int) -> None:
    coarse_up = torch.randn(batch, 3, height, width)
    out = blend_level(
        coarse_up, torch.randn_like(coarse_up), torch.rand(batch, 1, height, width), blend
    )
    assert out.shape == (batch, 3, height, width)
    assert out.dtype == coarse_up.dtype


def test_mix_golden() -> None:
    # (1 - a) up + a I = 0.75*2 + 0.25*6 = 3
    out = blend_level(constant(2.0), constant(6.0), constant(0.25, 1), "mix")
    assert_close(out, constant(3.0))


def test_add_golden() -> None:
    # up + a I = 2 + 0.25*6 = 3.5
    out = blend_level(constant(2.0), constant(6.0), constant(0.25, 1), "add")
    assert_close(out, constant(3.5))


def test_alpha_is_per_pixel_and_shared_by_channels() -> None:
    # pixel (x, y) gets a = x/4 for all of r, g, b; mix of up = 0 and I = [1, 2, 3] per channel
    alpha = (torch.arange(4.0) / 4.0).expand(1, 1, 2, 4)
    filtered = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1).expand(1, 3, 2, 4)
    out = blend_level(torch.zeros(1, 3, 2, 4), filtered, alpha, "mix")
    # channel c at column x: (c+1) * x / 4
    assert_close(out[0, 2, 1], torch.tensor([0.0, 0.75, 1.5, 2.25]))
    assert_close(out[0, 0, 0], torch.tensor([0.0, 0.25, 0.5, 0.75]))


def test_post_diff_golden() -> None:
    # I(x, y) = x on 4x4. down = 2x2 mean: coarse texels -1..2 (fine -2..5 mirrored to
    # 1 0 | 0 1 2 3 | 3 2) are [0.5, 0.5, 2.5, 2.5]. B-spline up: even x uses [5,10,1]/16 on
    # coarse x//2-1..x//2+1, odd x [1,10,5]/16:
    #   x=0: (5*0.5 + 10*0.5 + 2.5)/16 = 0.625   x=1: (0.5 + 5 + 12.5)/16 = 1.125
    #   x=2: (2.5 + 25 + 2.5)/16 = 1.875         x=3: (0.5 + 25 + 12.5)/16 = 2.375
    # I - smooth = [-0.625, -0.125, 0.125, 0.625]; with up = 1 and a = 0.5:
    # O = 1 + 0.5*(I - smooth) = [0.6875, 0.9375, 1.0625, 1.3125] on every row and channel
    filtered = torch.arange(4.0).expand(1, 3, 4, 4)
    out = blend_level(constant(1.0), filtered, constant(0.5, 1), "post_diff")
    expected = torch.tensor([0.6875, 0.9375, 1.0625, 1.3125]).expand(1, 3, 4, 4)
    assert_close(out, expected)


def test_post_diff_matches_formula(level) -> None:
    coarse_up, filtered, alpha = level
    expected = coarse_up + alpha * (filtered - smooth_post_diff(filtered))
    assert_close(blend_level(coarse_up, filtered, alpha, "post_diff"), expected)


def test_post_diff_ignores_a_constant_filtered_image() -> None:
    # a flat I has no detail: I - up(down(I)) = 0, so O = up whatever alpha is (odd size too)
    coarse_up = torch.randn(1, 3, 5, 7)
    out = blend_level(coarse_up, constant(4.0, 3, 5, 7), torch.rand(1, 1, 5, 7), "post_diff")
    assert_close(out, coarse_up)


@pytest.mark.parametrize("blend", BLENDS)
def test_alpha_zero_returns_up_exactly(blend: str, level) -> None:
    coarse_up, filtered, _ = level
    out = blend_level(coarse_up, filtered, torch.zeros(2, 1, 5, 6), blend)
    assert torch.equal(out, coarse_up)


def test_mix_alpha_one_returns_filtered_exactly(level) -> None:
    coarse_up, filtered, _ = level
    assert torch.equal(blend_level(coarse_up, filtered, torch.ones(2, 1, 5, 6), "mix"), filtered)


def test_add_alpha_one_is_the_sum(level) -> None:
    coarse_up, filtered, _ = level
    assert_close(
        blend_level(coarse_up, filtered, torch.ones(2, 1, 5, 6), "add"), coarse_up + filtered
    )


def test_modes_differ(level) -> None:
    # a plausible bug is a mode name that falls through to another formula
    coarse_up, filtered, alpha = level
    outs = [blend_level(coarse_up, filtered, alpha, blend) for blend in BLENDS]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not torch.allclose(outs[i], outs[j]), (BLENDS[i], BLENDS[j])


@pytest.mark.parametrize("blend", BLENDS)
def test_non_contiguous(blend: str) -> None:
    generator = torch.Generator().manual_seed(1)
    coarse_up = torch.randn(2, 6, 5, 3, generator=generator).permute(0, 3, 2, 1)
    filtered = torch.randn(2, 6, 5, 3, generator=generator).permute(0, 3, 2, 1)
    alpha = torch.rand(2, 6, 5, 1, generator=generator).permute(0, 3, 2, 1)
    assert not coarse_up.is_contiguous() and not filtered.is_contiguous()
    out = blend_level(coarse_up, filtered, alpha, blend)
    expected = blend_level(coarse_up.contiguous(), filtered.contiguous(), alpha.contiguous(), blend)
    assert_close(out, expected)


@pytest.mark.parametrize("blend", BLENDS)
@pytest.mark.parametrize(("height", "width"), [(4, 4), (3, 5)])
def test_gradcheck(blend: str, height: int, width: int) -> None:
    generator = torch.Generator().manual_seed(2)
    shape = (1, 3, height, width)
    coarse_up = torch.randn(shape, generator=generator, dtype=torch.float64).requires_grad_(True)
    filtered = torch.randn(shape, generator=generator, dtype=torch.float64).requires_grad_(True)
    alpha = torch.rand(1, 1, height, width, generator=generator, dtype=torch.float64)
    alpha.requires_grad_(True)
    assert gradcheck(lambda u, i, a: blend_level(u, i, a, blend), (coarse_up, filtered, alpha))
