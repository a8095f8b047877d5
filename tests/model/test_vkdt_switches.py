"""Tests for kpn.model.network under vkdt's switches (docs/design.md §2, §4 and §10):
denoise_levels, the gradient stop, the float16 emulation of vkdt's graph and the noise
luminance. The block transpose is in test_level_filter.py.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import Tensor

from kpn.config import ModelConfig
from kpn.model.network import kpn_forward
from kpn.model.pyramid import mip_pyramid, smooth_post_diff, upsample

from conftest import SPEC_STAR15_CENTRE, SPEC_STAR15_TAPS
from model_shared import (
    ALPHA,
    F64,
    SIGMA,
    TIGHT,
    model_config,
    noise_profiles,
    random_image,
    routed_weights,
    smooth_weights,
    vkdt_init_weights,
    zero_weights,
)

# ---------------------------------------------------------------- denoise_levels


class TestDenoiseLevels:
    @pytest.mark.parametrize("denoise_levels", [1, 2, 3])
    def test_coarse_levels_pass_through(self, denoise_levels: int) -> None:
        config = model_config(
            width=32, n_hidden=2, levels=4, blend="add", denoise_levels=denoise_levels
        )
        out = kpn_forward(
            random_image(2, 20, 18), noise_profiles(2), vkdt_init_weights(config, 1), config
        )
        for index, level in enumerate(out.levels):
            if index < denoise_levels:
                assert level.kernel is not None
                assert (level.filtered - level.x).abs().max() > 1e-4
            else:
                assert level.kernel is None
                torch.testing.assert_close(level.alpha, torch.ones_like(level.alpha))
                torch.testing.assert_close(level.filtered, level.x, rtol=0.0, atol=0.0)

    def test_passed_through_levels_are_not_clamped(self) -> None:
        """Design §4: passed-through levels are X unchanged, not clamped to +-65000."""
        config = model_config(width=32, n_hidden=1, levels=2, denoise_levels=1)
        noisy = torch.full((1, 3, 4, 4), 1e5, dtype=F64)
        out = kpn_forward(noisy, noise_profiles(1), vkdt_init_weights(config, 0), config)
        torch.testing.assert_close(out.levels[1].filtered, torch.full((1, 3, 2, 2), 1e5, dtype=F64))

    def test_zero_filters_every_level(self) -> None:
        config = model_config(width=32, n_hidden=1, levels=5, denoise_levels=0)
        out = kpn_forward(
            random_image(1, 20, 18), noise_profiles(1), vkdt_init_weights(config, 1), config
        )
        assert all(level.kernel is not None for level in out.levels)

    def test_denoise_levels_above_levels_filters_every_level(self) -> None:
        config = model_config(width=32, n_hidden=1, levels=2, denoise_levels=5)
        out = kpn_forward(
            random_image(1, 8, 8), noise_profiles(1), vkdt_init_weights(config, 1), config
        )
        assert all(level.kernel is not None for level in out.levels)


# ---------------------------------------------------------------- gradient stop


class TestGradientStop:
    """Design §10: vkdt's training stops the gradient from level 0 into the coarser levels."""

    @staticmethod
    def weight_gradient(config: ModelConfig, noisy: Tensor) -> list[Tensor]:
        weights = [w.requires_grad_() for w in smooth_weights(config, 8)]
        reference = random_image(*noisy.shape[:1], *noisy.shape[2:], seed=9)
        out = kpn_forward(noisy, noise_profiles(noisy.shape[0]), weights, config).output
        return list(torch.autograd.grad((out * reference).sum(), weights))

    def test_only_level_zero_reaches_the_weights(self) -> None:
        """add: O_0 = up(O_1) + a_0 I_0. With the stop, d O_0 / d W is the gradient of
        a_0 I_0 alone, which is what a network that filters only level 0 gets."""
        base = {"width": 32, "n_hidden": 2, "levels": 3, "blend": "add"}
        noisy = random_image(2, 9, 10)
        stopped = self.weight_gradient(model_config(**base, gradient_stop=True), noisy)
        level0 = self.weight_gradient(model_config(**base, denoise_levels=1), noisy)
        flowing = self.weight_gradient(model_config(**base), noisy)
        for g_stop, g_level0 in zip(stopped, level0, strict=True):
            torch.testing.assert_close(g_stop, g_level0, **TIGHT)
        difference = max((f - s).abs().max().item() for f, s in zip(flowing, stopped, strict=True))
        assert difference > 1e-6  # without the stop, coarse levels contribute

    @pytest.mark.parametrize("blend", ["mix", "add", "post_diff"])
    def test_forward_values_unchanged(self, blend: str) -> None:
        config = model_config(width=32, n_hidden=2, levels=3, blend=blend)
        weights = vkdt_init_weights(config, 2)
        noisy = random_image(2, 9, 10)
        free = kpn_forward(noisy, noise_profiles(2), weights, config).output
        stop = dataclasses.replace(config, gradient_stop=True)
        stopped = kpn_forward(noisy, noise_profiles(2), weights, stop).output
        torch.testing.assert_close(stopped, free, rtol=0.0, atol=0.0)

    @pytest.mark.parametrize("blend", ["mix", "add"])
    def test_no_gradient_into_coarse_output(self, blend: str) -> None:
        """d O_0 / d O_1 = 0. For add, O_0 = up(O_1) + a_0 I_0, so with the stop the
        input gradient of O_0 is that of a_0 I_0 alone; for mix, O_0 = (1 - a_0) up(O_1)
        + a_0 I_0, so it is that of the same sum with up(O_1) held constant.
        Without the stop the coarse path adds to it."""
        gradients = []
        for stop in (True, False):
            config = model_config(width=32, n_hidden=2, levels=3, blend=blend, gradient_stop=stop)
            noisy = random_image(1, 9, 10).requires_grad_()
            out = kpn_forward(noisy, noise_profiles(1), smooth_weights(config, 3), config)
            level0, level1 = out.levels[0], out.levels[1]
            coarse_up = upsample(level1.output, 9, 10, config.up).detach()
            local = level0.alpha * level0.filtered
            if blend == "mix":
                local = local + (1 - level0.alpha) * coarse_up
            grad_total = torch.autograd.grad(out.output.sum(), noisy, retain_graph=True)[0]
            grad_local = torch.autograd.grad(local.sum(), noisy)[0]
            gradients.append((grad_total, grad_local))
        (stop_total, stop_local), (free_total, free_local) = gradients
        torch.testing.assert_close(stop_total, stop_local, **TIGHT)
        torch.testing.assert_close(free_local, stop_local, **TIGHT)
        assert (free_total - stop_total).abs().max() > 1e-3


# ------------------------------------------------------------------- precision


def assert_f16(tensor: Tensor, what: str) -> None:
    assert torch.equal(tensor, tensor.half().to(tensor.dtype)), f"{what} is not float16-valued"


def is_f16(tensor: Tensor) -> bool:
    return torch.equal(tensor, tensor.half().to(tensor.dtype))


def feeders(texel: int, level: int, sizes: list[int]) -> list[int]:
    """The base texels whose mean is ``texel`` of ``level`` when each level is the 2x2 mean
    of the one before mirrored at its own edge (``sizes[k]``: level k's length)."""
    if level == 0:
        return [texel]
    count = sizes[level - 1]
    children = [c if c < count else 2 * count - 1 - c for c in (2 * texel, 2 * texel + 1)]
    return [t for child in children for t in feeders(child, level - 1, sizes)]


def mirrored_block_mean(base: torch.Tensor, depth: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Level ``depth`` of ``base``: the mean of its feeders, each a float32 tree of pairwise
    means along x, then along y."""
    height, width = shape
    sizes_y, sizes_x = [base.shape[-2]], [base.shape[-1]]
    for _ in range(depth):
        sizes_y.append((sizes_y[-1] + 1) // 2)
        sizes_x.append((sizes_x[-1] + 1) // 2)
    rows = [t for y in range(height) for t in feeders(y, depth, sizes_y)]
    columns = [t for x in range(width) for t in feeders(x, depth, sizes_x)]
    image = base.numpy()[..., rows, :][..., columns]
    while image.shape[-1] > width:
        image = (image[..., 0::2] + image[..., 1::2]) / np.float32(2)
    while image.shape[-2] > height:
        image = (image[..., 0::2, :] + image[..., 1::2, :]) / np.float32(2)
    return torch.from_numpy(image)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"blend": "add", "kernel_activation": "plain", "alpha_activation": "const"},
        {
            "blend": "post_diff",
            "alpha_activation": "plain",
            "denoise_levels": 2,
            "vkdt_post_diff_border": True,  # up.comp's, as vkdt's graph runs it
        },
        {"features": "patch8x8", "width": 64, "n_hidden": 1, "blend": "add"},
        {"blend": "add", "down": "box2_vkdt", "up": "bspline"},
    ],
    ids=["mix", "add", "post_diff", "patch8x8", "box2_vkdt"],
)
def test_vkdt_f16_stores_as_vkdt_graph(changes: dict[str, object]) -> None:
    """Design §10 and vkdt's kpn/main.c: M_0 (the module's input) and O_0 (its output) are
    float32, every other image (M, D, I, O, a) and K float16; each mip is reduced from the
    stored float16 base (mip.comp: each three levels from their stored base)."""
    config = model_config(
        **{"width": 32, "n_hidden": 2, "levels": 4, "precision": "vkdt-f16", **changes}
    )
    weights = [w.float() for w in smooth_weights(config, 7)]
    noisy = random_image(2, 29, 27, dtype=torch.float32)
    assert not is_f16(noisy)  # so that rounding it would show
    out = kpn_forward(noisy, noise_profiles(2).float(), weights, config)
    assert out.levels[0].mip is noisy  # M_0 is the input itself
    assert not is_f16(out.output), "O_0 must stay float32 (vkdt's o-pfm reads rgba:f32)"
    if out.residual is not None:
        assert_f16(out.residual, "residual")
    for i, level in enumerate(out.levels):
        names = ["alpha", "filtered"]
        names += ["mip", "output"] if i > 0 else []
        names += ["x"] if i > 0 or config.mlp_input == "detail" else []
        for name in names:
            assert_f16(getattr(level, name), f"level {i} {name}")
        if level.kernel is not None:
            assert_f16(level.kernel, f"level {i} kernel")
    # mip.comp makes three levels at once from a stored base (M_1..M_3 from the float32
    # input): box2_vkdt as it is, box2 as patches 0003 and 0010 make it, the 2^k x 2^k
    # mean of the base with each level mirrored at its own edge, in float32, stored
    stored = [noisy]
    for level in range(1, len(out.levels)):
        base = stored[(level - 1) // 3 * 3]
        depth = (level - 1) % 3 + 1
        if config.down == "box2_vkdt":
            mip = mip_pyramid(base, depth + 1, config.down)[-1]
        else:
            mip = mirrored_block_mean(base, depth, out.levels[level].mip.shape[-2:])
        stored.append(mip.half().float())
        torch.testing.assert_close(out.levels[level].mip, stored[-1], rtol=0.0, atol=0.0)
    # O_0 is the blend of the stored parts, not rounded itself
    if config.blend != "mix" or len(out.levels) > 1:
        coarse = out.levels[1].output
        up = upsample(coarse, *noisy.shape[-2:], config.up)
        level = out.levels[0]
        blend = {
            "add": lambda: up + level.alpha * level.filtered,
            "mix": lambda: (1 - level.alpha) * up + level.alpha * level.filtered,
            "post_diff": lambda: (
                up + level.alpha * (level.filtered - smooth_post_diff(level.filtered))
            ),
        }[config.blend]()
        torch.testing.assert_close(out.output, blend, rtol=1e-6, atol=1e-6)
    full = kpn_forward(
        noisy, noise_profiles(2).float(), weights, dataclasses.replace(config, precision="fp32")
    )
    # float16 rounding apart, the same network, up to the edges of this odd-sized image
    torch.testing.assert_close(out.output, full.output, rtol=0.0, atol=0.05)


U = 2.0**-20  # a float32 step well below float16's at 1 (2**-10)


def f16_add_config(levels: int, down: str) -> ModelConfig:
    """vkdt-f16 ``add`` with bilinear up, plain kernels and alpha 1: the two golden cases
    below, which differ in depth and down filter."""
    return model_config(
        width=32,
        n_hidden=1,
        levels=levels,
        blend="add",
        down=down,
        up="bilinear",
        kernel_activation="plain",
        alpha_activation="const",
        precision="vkdt-f16",
    )


def test_vkdt_f16_first_mip_from_the_float32_input() -> None:
    """Every 2x2 block of M_0 holds 1 + 460u three times and 1 + 920u once (u = 2**-20,
    float16's step at 1 is 1024u). vkdt's sub/mip pass reads the float32 input: M_1 =
    f16(1 + (3*460 + 920)/4 u) = f16(1 + 575u) = 1 + 1024u (575u is past half a step).
    Rounding M_0 first would give f16(1 + 460u) = 1 three times and f16(1 + 920u) =
    1 + 1024u once, mean 1 + 256u, rounded 1: M_1 = 1. With a zero network (plain
    kernels: every tap weight 0, I = 0 / max(0.001, 0) = 0) O_0 = up(O_1) + 0, unrounded."""
    config = f16_add_config(levels=2, down="box2")
    block = torch.tensor([[1 + 460 * U, 1 + 460 * U], [1 + 460 * U, 1 + 920 * U]])
    noisy = block.repeat(4, 4).expand(1, 3, 8, 8).contiguous()
    out = kpn_forward(noisy, torch.zeros(1, 2), zero_weights(config, torch.float32), config)
    assert torch.equal(out.levels[1].mip, torch.full((1, 3, 4, 4), 1 + 1024 * U))
    assert torch.equal(out.levels[0].mip, noisy)
    assert torch.equal(out.levels[0].filtered, torch.zeros(1, 3, 8, 8))
    torch.testing.assert_close(
        out.output, upsample(out.levels[1].output, 8, 8, "bilinear"), rtol=0.0, atol=0.0
    )


def test_vkdt_f16_output_is_float32() -> None:
    """Identity kernels (plain, all weight on the centre tap) and alpha 1 with add: O_0 =
    up(O_1) + D_0, D_0 = f16(M_0 - up(M_1)). On a constant image 1 + 460u (u = 2**-20)
    every coarser level is f16(1 + 460u) = 1, D_0 = f16(460u) = 460u exactly (a small
    number float16 holds: 460 * 2**-20 = 115 * 2**-18), so O_0 = 1 + 460u: the input, which
    float16 cannot hold (it would be 1)."""
    config = f16_add_config(levels=3, down="binomial5")
    weights = routed_weights(config, outputs={SPEC_STAR15_CENTRE: 1.0}, dtype=torch.float32)
    noisy = torch.full((1, 3, 8, 8), 1 + 460 * U)
    out = kpn_forward(noisy, torch.zeros(1, 2), weights, config)
    for level in out.levels[1:]:
        assert torch.equal(level.mip, torch.ones_like(level.mip))
    assert torch.equal(out.levels[0].x, torch.full((1, 3, 8, 8), 460 * U))
    assert torch.equal(out.output, noisy)


# ------------------------------------------------------------- noise luminance


class TestNoiseLuminance:
    """Channel 30 = 0.5**i * sqrt(a + 65535*max(lum,0)*b) / 65535, lum of X or of M_i."""

    @staticmethod
    def sigma_config(blend: str, noise_luminance: str, **changes: object) -> ModelConfig:
        """Three levels whose alpha ("plain") is K15 as the network computes it."""
        return model_config(
            width=32,
            n_hidden=2,
            levels=3,
            blend=blend,
            alpha_activation="plain",
            noise_luminance=noise_luminance,
            **changes,
        )

    @staticmethod
    def sigma_network(config: ModelConfig) -> list[Tensor]:
        # alpha "plain" then reads K15 = channel 30 (sigma >= 0 passes leaky relu)
        return routed_weights(config, source=SIGMA, outputs={ALPHA: 1.0})

    @pytest.mark.parametrize("noise_luminance", ["x", "lowpass"])
    @pytest.mark.parametrize("blend", ["mix", "add"])
    def test_golden_sigma_per_level(self, blend: str, noise_luminance: str) -> None:
        """Image 0 is white (lum = 0.2627002+0.6779981+0.0593017 = 1) with (a, b) =
        (0, 65535): sigma_i = 0.5**i * sqrt(65535*65535)/65535 = 0.5**i. Image 1 is
        black (lum 0) with a = (0.3*65535)**2: sigma_i = 0.3 * 0.5**i. For add, X is the
        detail D_i = 0 of a constant image: with "x" image 0's sigma is sqrt(0) = 0."""
        config = self.sigma_config(blend, noise_luminance, kernel_activation="plain")
        noisy = torch.cat((torch.ones(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))).to(F64)
        noise_ab = torch.tensor([[0.0, 65535.0], [(0.3 * 65535) ** 2, 7.0]], dtype=F64)
        out = kpn_forward(noisy, noise_ab, self.sigma_network(config), config)
        white = [0.0, 0.0, 0.0] if (blend, noise_luminance) == ("add", "x") else [1, 0.5, 0.25]
        black = [0.3, 0.15, 0.075]
        for i, level in enumerate(out.levels):
            torch.testing.assert_close(
                level.alpha[:, 0],
                torch.tensor([white[i], black[i]], dtype=F64)
                .view(2, 1, 1)
                .expand(2, 8 >> i, 8 >> i),
                **TIGHT,
            )

    @pytest.mark.parametrize("noise_luminance", ["x", "lowpass"])
    @pytest.mark.parametrize("blend", ["mix", "add"])
    def test_sigma_of_random_images(self, blend: str, noise_luminance: str) -> None:
        """The formula written out, lum from Rec.2020 weights; "x" and "lowpass" agree
        for mip input (X = M_i) and differ for detail input, whose lum goes negative."""
        config = self.sigma_config(blend, noise_luminance)
        noise_ab = noise_profiles(2)
        out = kpn_forward(random_image(2, 16, 12), noise_ab, self.sigma_network(config), config)
        a, b = noise_ab[:, 0].view(2, 1, 1), noise_ab[:, 1].view(2, 1, 1)
        for i, level in enumerate(out.levels):
            image = level.mip if noise_luminance == "lowpass" else level.x
            lum = 0.2627002 * image[:, 0] + 0.6779981 * image[:, 1] + 0.0593017 * image[:, 2]
            sigma = 0.5**i * torch.sqrt(a + 65535 * lum.clamp(min=0) * b) / 65535
            torch.testing.assert_close(level.alpha[:, 0], sigma, rtol=1e-12, atol=0.0)
            if blend == "add":
                detail_lum = (
                    0.2627002 * level.x[:, 0]
                    + 0.6779981 * level.x[:, 1]
                    + 0.0593017 * level.x[:, 2]
                )
                assert (detail_lum < 0).any() and (detail_lum > 0).any()
                mip_lum = (
                    0.2627002 * level.mip[:, 0]
                    + 0.6779981 * level.mip[:, 1]
                    + 0.0593017 * level.mip[:, 2]
                )
                assert ((detail_lum - mip_lum).abs() > 1e-3).all()

    def test_only_the_sigma_channel_changes(self) -> None:
        """A network blind to channel 30 gives the same output for both choices."""
        noisy = random_image(2, 16, 12)
        outputs = []
        for noise_luminance in ("x", "lowpass"):
            config = model_config(
                width=32, n_hidden=2, levels=3, blend="add", noise_luminance=noise_luminance
            )
            weights = vkdt_init_weights(config, 4)
            weights[0][:, SIGMA] = 0.0
            outputs.append(kpn_forward(noisy, noise_profiles(2), weights, config).output)
        torch.testing.assert_close(outputs[0], outputs[1], rtol=0.0, atol=0.0)


# ---------------------------------------------------------------- dapply's softmax slope


@pytest.mark.parametrize("precision", ["fp32", "vkdt-f16"])
def test_vkdt_softmax_grad_is_ten_times_the_kernel_gradient(precision: str) -> None:
    """kpn-t's dapply differentiates exp(K), where apply's factors are exp(0.1 K): the
    image is the same, d loss / dK ten times the true one (defect 16)."""
    from kpn.model.level_filter import kernel_filter_for

    slab = random_image(1, 9, 11, seed=3, dtype=torch.float32)
    logits = torch.randn(1, 15, 5, 7, generator=torch.Generator().manual_seed(4)) * 5
    results = []
    for switch in (False, True):
        config = model_config(precision=precision, vkdt_softmax_grad=switch)
        leaf = logits.clone().requires_grad_()
        image = kernel_filter_for(config, native_loops=False)(slab, leaf)
        (image * torch.linspace(-1, 1, image.numel()).view_as(image)).sum().backward()
        results.append((image.detach(), leaf.grad))
    (plain, plain_grad), (vkdt, vkdt_grad) = results
    torch.testing.assert_close(vkdt, plain, rtol=0, atol=0)
    torch.testing.assert_close(vkdt_grad, 10 * plain_grad, rtol=1e-6, atol=0)


def test_vkdt_kernel_grad_switches_follow_the_activation() -> None:
    """Each switch is its activation's: a preset's switch stays harmless under a .lut whose
    trailer names the other activation (kpn import --preset)."""
    from kpn.model.level_filter import kernel_filter_for

    slab = random_image(1, 9, 11, seed=7, dtype=torch.float32)
    logits = torch.randn(1, 15, 5, 7, generator=torch.Generator().manual_seed(8))
    for activation, other in (("softmax", "vkdt_plain_grad"), ("plain", "vkdt_softmax_grad")):
        grads = []
        for switch in (False, True):
            config = model_config(kernel_activation=activation, **{other: switch})
            config.validate("x.toml")
            leaf = logits.clone().requires_grad_()
            kernel_filter_for(config, native_loops=False)(slab, leaf).sum().backward()
            grads.append(leaf.grad)
        torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=0)


@pytest.mark.parametrize("precision", ["fp32", "vkdt-f16"])
def test_vkdt_plain_grad_is_the_unnormalised_sums(precision: str) -> None:
    """kpn-t's dapply takes dI/dK_k = X(p + tap_k) for plain kernels inside (-10, 10), 0
    outside, leaving out apply's division by the weights' sum (defect 17)."""
    from kpn.model.level_filter import kernel_filter_for

    slab = random_image(1, 9, 11, seed=5, dtype=torch.float32)
    logits = torch.randn(1, 15, 5, 7, generator=torch.Generator().manual_seed(6))
    logits[0, 3, 1, 2], logits[0, 9, 4, 6] = 12.0, -30.0  # outside the window: no gradient
    upstream = torch.linspace(-1, 1, 3 * 5 * 7).view(1, 3, 5, 7)
    images = []
    for switch in (False, True):
        config = model_config(
            precision=precision, kernel_activation="plain", vkdt_plain_grad=switch
        )
        leaf = logits.clone().requires_grad_()
        image = kernel_filter_for(config, native_loops=False)(slab, leaf)
        (image * upstream).sum().backward()
        images.append(image.detach())
    torch.testing.assert_close(images[1], images[0], rtol=0, atol=0)
    expected = torch.zeros_like(logits)
    for k, (dx, dy) in enumerate(SPEC_STAR15_TAPS):
        tap = slab[..., 2 + dy : 2 + dy + 5, 2 + dx : 2 + dx + 7]
        expected[:, k] = (upstream * tap).sum(1)
    expected[0, 3, 1, 2] = expected[0, 9, 4, 6] = 0.0
    torch.testing.assert_close(leaf.grad, expected)
