"""Tests for kpn.model.blend: one level of the coarse-to-fine reconstruction (docs/design.md §5),
then the blends through the whole network: ``add`` with an identity kernel reconstructs
its input, a golden ``mix`` by hand, and every level's output from the recurrence.
"""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
from torch.autograd import gradcheck
from torch.testing import assert_close

from kpn.model.blend import alpha_slope, blend_level
from kpn.model.mlp import load_weights
from kpn.model.network import KPN, kpn_forward
from kpn.model.pyramid import smooth_box2_bspline, smooth_post_diff, upsample

from conftest import SPEC_STAR15_CENTRE
from model_shared import (
    ALPHA,
    CONSTANT,
    F64,
    TIGHT,
    model_config,
    noise_profiles,
    random_image,
    routed_weights,
    vkdt_init_weights,
)

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


@pytest.mark.parametrize("vkdt_border", [False, True])  # the same on even sizes
def test_post_diff_golden(vkdt_border: bool) -> None:
    # I(x, y) = x on 4x4. down = 2x2 mean: coarse texels -1..2 (fine -2..5 mirrored to
    # 1 0 | 0 1 2 3 | 3 2) are [0.5, 0.5, 2.5, 2.5]. B-spline up: even x uses [5,10,1]/16 on
    # coarse x//2-1..x//2+1, odd x [1,10,5]/16:
    #   x=0: (5*0.5 + 10*0.5 + 2.5)/16 = 0.625   x=1: (0.5 + 5 + 12.5)/16 = 1.125
    #   x=2: (2.5 + 25 + 2.5)/16 = 1.875         x=3: (0.5 + 25 + 12.5)/16 = 2.375
    # I - smooth = [-0.625, -0.125, 0.125, 0.625]; with up = 1 and a = 0.5:
    # O = 1 + 0.5*(I - smooth) = [0.6875, 0.9375, 1.0625, 1.3125] on every row and channel
    filtered = torch.arange(4.0).expand(1, 3, 4, 4)
    out = blend_level(constant(1.0), filtered, constant(0.5, 1), "post_diff", vkdt_border)
    expected = torch.tensor([0.6875, 0.9375, 1.0625, 1.3125]).expand(1, 3, 4, 4)
    assert_close(out, expected)


@pytest.mark.parametrize(
    ("vkdt_border", "smooth"), [(False, smooth_box2_bspline), (True, smooth_post_diff)]
)
def test_post_diff_matches_formula(level, vkdt_border: bool, smooth) -> None:
    coarse_up, filtered, alpha = level  # 5x6: odd height, where the two smoothings differ
    expected = coarse_up + alpha * (filtered - smooth(filtered))
    assert_close(blend_level(coarse_up, filtered, alpha, "post_diff", vkdt_border), expected)
    other = blend_level(coarse_up, filtered, alpha, "post_diff", not vkdt_border)
    assert (other - expected).abs().max() > 1e-3


@pytest.mark.parametrize("vkdt_border", [False, True])
@pytest.mark.parametrize("blend", BLENDS)
def test_alpha_slope_is_the_blends_change_per_unit_alpha(level, blend: str, vkdt_border) -> None:
    coarse_up, filtered, alpha = level
    slope = alpha_slope(coarse_up, filtered, blend, vkdt_border)
    at = functools.partial(blend_level, coarse_up, filtered, blend=blend, vkdt_border=vkdt_border)
    assert_close(slope, at(alpha=1.0) - at(alpha=0.0))
    assert_close(at(alpha=alpha), at(alpha=0.0) + alpha * slope)


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


# ----------------------------------------------------- add: identity reconstructs


class TestAddReconstruction:
    """Design §5: with an identity kernel and a = 1, ``add`` reconstructs its input exactly.

    O_N-1 = up(M_N) + D_N-1 = M_N-1, and so on down: O_0 = M_0 = the input. A wrong up in
    either the details or the reconstruction, a dropped level or a mix-style (1 - a)
    breaks it.
    """

    @pytest.mark.parametrize("levels", [1, 2, 3, 4, 5, 6])
    @pytest.mark.parametrize("size", [(1, 1), (2, 3), (23, 37), (64, 64)], ids=str)
    @pytest.mark.parametrize("down", ["box2", "binomial5", "box2_vkdt"])
    @pytest.mark.parametrize("up", ["bspline", "bilinear"])
    def test_identity_kernel_reconstructs(
        self, up: str, down: str, size: tuple[int, int], levels: int
    ) -> None:
        config = model_config(
            levels=levels,
            down=down,
            up=up,
            blend="add",
            kernel_activation="plain",
            alpha_activation="const",
        )
        noisy = random_image(2, *size, seed=levels)
        out = kpn_forward(noisy, noise_profiles(2), routed_weights(config), config)
        torch.testing.assert_close(out.output, noisy, **TIGHT)
        # every intermediate level reconstructs its mip too
        for level in out.levels:
            torch.testing.assert_close(level.output, level.mip, **TIGHT)
            torch.testing.assert_close(level.filtered, level.x, **TIGHT)

    def test_through_module_and_load_weights(self) -> None:
        config = model_config(
            blend="add", kernel_activation="plain", alpha_activation="const", levels=4
        )
        model = KPN(config).double()
        load_weights(model.mlp, routed_weights(config))
        noisy = random_image(3, 23, 37)
        torch.testing.assert_close(model(noisy, noise_profiles(3)), noisy, **TIGHT)

    def test_passed_through_levels_keep_reconstruction(self) -> None:
        """vkdt's denoise_levels = 2: levels >= 2 are D_i with a = 1, still exact."""
        config = model_config(
            blend="add",
            down="binomial5",
            up="bilinear",
            kernel_activation="plain",
            alpha_activation="const",
            denoise_levels=2,
            levels=5,
        )
        noisy = random_image(2, 23, 37)
        out = kpn_forward(noisy, noise_profiles(2), routed_weights(config), config)
        torch.testing.assert_close(out.output, noisy, **TIGHT)

    def test_non_identity_kernel_does_not_reconstruct(self) -> None:
        """The invariant is not vacuous: weight on tap (1,0) instead shifts the image."""
        config = model_config(blend="add", kernel_activation="plain", alpha_activation="const")
        noisy = random_image(1, 16, 16)
        weights = routed_weights(config, outputs={SPEC_STAR15_CENTRE + 1: 1.0})
        out = kpn_forward(noisy, noise_profiles(1), weights, config)
        assert (out.output - noisy).abs().max() > 0.05


class TestPostDiffReconstruction:
    """Design §5: with an identity kernel and a = 1, ``post_diff`` on the box2 / bspline
    pyramid gives back its input, O_i = up(M_{i+1}) + M_i - up(down(M_i)) = M_i, on any
    size; vkdt's smoothing (``vkdt_post_diff_border``) only where every level is even."""

    def config(self, levels: int, vkdt_border: bool):
        return model_config(
            levels=levels,
            blend="post_diff",
            kernel_activation="plain",
            alpha_activation="const",
            vkdt_post_diff_border=vkdt_border,
        )

    @pytest.mark.parametrize("levels", [2, 4])
    @pytest.mark.parametrize("size", [(1, 1), (2, 3), (23, 37), (64, 64)], ids=str)
    def test_identity_kernel_reconstructs(self, size: tuple[int, int], levels: int) -> None:
        config = self.config(levels, vkdt_border=False)
        noisy = random_image(2, *size, seed=levels)
        out = kpn_forward(noisy, noise_profiles(2), routed_weights(config), config)
        torch.testing.assert_close(out.output, noisy, **TIGHT)

    def test_vkdts_smoothing_does_not_on_odd_sizes(self) -> None:
        """... but does where all levels are even (16, 8, 4, 2): the invariant holds."""
        config = self.config(4, vkdt_border=True)
        for size, exact in (((16, 16), True), ((23, 37), False)):
            noisy = random_image(1, *size)
            out = kpn_forward(noisy, noise_profiles(1), routed_weights(config), config)
            error = (out.output - noisy).abs()
            assert bool(error.max() < 1e-12) == exact, size
            if not exact:  # only next to the last row and column: the odd levels' edges
                assert error[..., :-8, :-8].max() < 1e-12


# --------------------------------------------------------------------- mix blend


class TestMix:
    def test_golden_two_levels_sigmoid_alpha(self) -> None:
        """Identity kernel, K15 = 0.75 -> vkdt sigmoid a = 0.5*0.75/sqrt(1+0.5625) + 0.5
        = 0.5*0.75/1.25 + 0.5 = 0.8. Two levels of a 2x2 image, box2 down, bspline up:
        M_1 = mean, O_1 = I_1 = M_1, up(O_1) is M_1 everywhere (a 1x1 image mirrored), so
        O_0 = 0.2 * mean + 0.8 * M_0.
        """
        config = model_config(
            levels=2, down="box2", up="bspline", kernel_activation="plain"
        )  # alpha sigmoid, blend mix are the design defaults
        assert (config.blend, config.alpha_activation) == ("mix", "sigmoid")
        noisy = torch.tensor(
            [
                [[1.0, 2.0], [3.0, 4.0]],  # mean 2.5
                [[0.0, 0.0], [0.0, 4.0]],  # mean 1
                [[8.0, 0.0], [0.0, 0.0]],  # mean 2
            ],
            dtype=F64,
        ).unsqueeze(0)
        weights = routed_weights(config, outputs={SPEC_STAR15_CENTRE: 1.0, ALPHA: 0.75})
        out = kpn_forward(noisy, noise_profiles(1), weights, config)
        expected = torch.tensor(
            [
                [[1.3, 2.1], [2.9, 3.7]],  # 0.5 + 0.8 x
                [[0.2, 0.2], [0.2, 3.4]],  # 0.2 + 0.8 x
                [[6.8, 0.4], [0.4, 0.4]],  # 0.4 + 0.8 x
            ],
            dtype=F64,
        ).unsqueeze(0)
        torch.testing.assert_close(out.levels[0].alpha, torch.full((1, 1, 2, 2), 0.8, dtype=F64))
        torch.testing.assert_close(
            out.levels[1].output, torch.tensor([[[[2.5]], [[1.0]], [[2.0]]]], dtype=F64)
        )
        torch.testing.assert_close(out.output, expected, **TIGHT)

    @pytest.mark.parametrize(("alpha_activation", "raw"), [("plain", 1.0), ("clamped", 3.0)])
    def test_alpha_one_returns_level_zero_filtered(self, alpha_activation: str, raw: float) -> None:
        """a_0 = 1: O_0 = 0 * up(O_1) + 1 * I_0 = I_0, whatever the coarse levels hold."""
        config = model_config(levels=4, alpha_activation=alpha_activation, width=32, n_hidden=3)
        weights = vkdt_init_weights(config, 3)
        # hidden unit 0 carries the constant 1 through every layer, W_out row 15 reads it only
        weights[0][0] = 0.0
        weights[0][0, CONSTANT] = 1.0
        for hidden in weights[1:-1]:
            hidden[0] = 0.0
            hidden[0, 0] = 1.0
        weights[-1][ALPHA] = 0.0
        weights[-1][ALPHA, 0] = raw
        noisy = random_image(2, 13, 11)
        model = KPN(config).double()
        load_weights(model.mlp, weights)
        out = model.inspect(noisy, noise_profiles(2))
        torch.testing.assert_close(out.levels[0].alpha, torch.ones(2, 1, 13, 11, dtype=F64))
        torch.testing.assert_close(out.output, out.levels[0].filtered, rtol=0.0, atol=0.0)
        # the kernel really filtered (I_0 != X_0) and the coarse output really differs
        assert (out.levels[0].filtered - noisy).abs().max() > 1e-3
        coarse_up = upsample(out.levels[1].output, 13, 11, config.up)
        assert (coarse_up - out.output).abs().max() > 1e-3
        # so the coarse levels cannot matter: another down filter gives the same O_0
        other = dataclasses.replace(config, down="binomial5")
        torch.testing.assert_close(
            kpn_forward(noisy, noise_profiles(2), weights, other).output, out.output, **TIGHT
        )

    @pytest.mark.parametrize("blend", ["mix", "add", "post_diff"])
    def test_recurrence_of_every_level(self, blend: str) -> None:
        """O_i from up(O_{i+1}), I_i and a_i as design §5 writes each blend, coarsest too."""
        config = model_config(levels=4, blend=blend, width=32, n_hidden=2)
        out = kpn_forward(
            random_image(2, 23, 37), noise_profiles(2), vkdt_init_weights(config, 5), config
        )
        coarsest = out.levels[-1]
        if blend == "add":
            assert out.residual is not None
            coarse = out.residual
        else:
            torch.testing.assert_close(coarsest.output, coarsest.filtered, **TIGHT)
            coarse = None
        for level in reversed(out.levels):
            if coarse is not None:
                up = upsample(coarse, *level.x.shape[-2:], config.up)
                a, filtered = level.alpha, level.filtered
                if blend == "mix":
                    expected = (1 - a) * up + a * filtered
                elif blend == "add":
                    expected = up + a * filtered
                else:
                    expected = up + a * (filtered - smooth_box2_bspline(filtered))
                torch.testing.assert_close(level.output, expected, **TIGHT)
            coarse = level.output
