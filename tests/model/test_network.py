"""Tests for kpn.model.network: the whole multilevel KPN (docs/design.md §2-§5 and §10).

kornia's family for the whole network: smoke and shapes, a golden case computed by hand,
the exact-reconstruction invariant of ``add``, the vkdt-specific switches (block transpose,
denoise_levels, gradient stop, float16 emulation, noise luminance, level override),
batch independence, non-contiguous input, bad input, gradcheck, module == function and
torch.compile.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import pytest
import torch
from torch import Tensor

from kpn.config import ModelConfig
from kpn.errors import KpnError
from kpn.model.mlp import load_weights
from kpn.model.network import KPN, KPNOutput, kpn_forward
from kpn.model.pyramid import mip_pyramid, smooth_post_diff, upsample

from conftest import SPEC_STAR15_CENTRE, SPEC_STAR15_TAPS, assert_one_line_error

F64 = torch.float64
ALPHA = 15  # K[15] is alpha (design §3)
CONSTANT = 31  # star15 channel 31 is 1.0 (design §2)
SIGMA = 30  # star15 channel 30 is the noise sigma (design §2)


# ----------------------------------------------------------------------------- helpers


def model_config(**changes: object) -> ModelConfig:
    """``ModelConfig`` with ``changes``; mlp_input follows blend unless given (design §5).

    The input is vkdt's star15 unless given: the routed networks below read its channels.
    """
    changes.setdefault("features", "star15")
    if "blend" in changes and "mlp_input" not in changes:
        changes["mlp_input"] = "detail" if changes["blend"] == "add" else "mip"
    config = dataclasses.replace(ModelConfig(), **changes)
    config.validate("test")
    return config


def zero_weights(config: ModelConfig, dtype: torch.dtype = F64) -> list[Tensor]:
    """All-zero matrices shaped like ``KPN(config).mlp.weights``."""
    width = config.width
    return (
        [torch.zeros(width, config.in_features, dtype=dtype)]
        + [torch.zeros(width, width, dtype=dtype) for _ in range(config.n_hidden - 1)]
        + [torch.zeros(16, width, dtype=dtype)]
    )


def routed_weights(
    config: ModelConfig,
    source: int = CONSTANT,
    outputs: dict[int, float] | None = None,
    dtype: torch.dtype = F64,
) -> list[Tensor]:
    """star15 weights that carry input channel ``source`` on hidden unit 0 to the outputs.

    W0 row 0 is one-hot on ``source``, every hidden matrix has [0,0] = 1 and W_out[k,0] =
    outputs[k]; everything else is 0. A non-negative input passes every leaky relu
    unchanged, so K_k = outputs[k] * input[source] and every other K is 0.
    """
    weights = zero_weights(config, dtype)
    weights[0][0, source] = 1.0
    for hidden in weights[1:-1]:
        hidden[0, 0] = 1.0
    for k, value in (outputs or {SPEC_STAR15_CENTRE: 1.0}).items():
        weights[-1][k, 0] = value
    return weights


def random_weights(config: ModelConfig, seed: int, scale: float, dtype=F64) -> list[Tensor]:
    """Matrices uniform in +-scale, from a fixed seed."""
    generator = torch.Generator().manual_seed(seed)
    return [
        (2 * torch.rand(w.shape, generator=generator, dtype=dtype) - 1) * scale
        for w in zero_weights(config, dtype)
    ]


def vkdt_init_weights(config: ModelConfig, seed: int, dtype=F64) -> list[Tensor]:
    """vkdt's initialisation (design §3): uniform in +-sqrt(6/(W+W))."""
    return random_weights(config, seed, math.sqrt(6.0 / (2 * config.width)), dtype)


def smooth_weights(config: ModelConfig, seed: int) -> list[Tensor]:
    """Small random weights plus a path that keeps the kernel sum near 1, K15 near 0.5.

    Keeps the plain kernel's normalising sum near 1 (far from max(0.001, sum)), every K far
    from the +-10 replacement and a clamped alpha inside (0, 1): the network stays smooth
    for gradcheck. star15 feeds the path from its constant channel; patch8x8 (no constant)
    from the mean luminance of the 8x8 patch, which is positive on positive images.
    """
    weights = random_weights(config, seed, 0.1)
    if config.features == "star15":
        weights[0][0] = torch.nn.functional.one_hot(torch.tensor(CONSTANT), 32).to(F64)
    else:
        weights[0][0] = 1.0 / 64
    for hidden in weights[1:-1]:
        hidden[0] = 0.0
        hidden[0, 0] = 1.0
    weights[-1][:ALPHA, 0] += 1.0 / 15  # every tap about 1/15: sums near 1 even when
    weights[-1][SPEC_STAR15_CENTRE, 0] += 0.5  # the block transpose mixes pixels' outputs
    weights[-1][ALPHA, 0] += 0.5
    return weights


def noise_profiles(batch: int) -> Tensor:
    """Distinct (a, b) per image, on the 0..65535 scale of design §8."""
    return torch.tensor([[1e5 * (i + 1), 100.0 / (i + 1)] for i in range(batch)], dtype=F64)


def random_image(batch: int, height: int, width: int, seed: int = 0, dtype=F64) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.1 + 0.9 * torch.rand(batch, 3, height, width, generator=generator, dtype=dtype)


TIGHT = {"rtol": 0.0, "atol": 1e-12}


# ----------------------------------------------------------------- smoke and shapes


class TestShapes:
    @pytest.mark.parametrize("batch", [1, 2, 5])
    def test_output_and_level_shapes(self, batch: int) -> None:
        config = model_config(width=32, n_hidden=2, levels=4)
        out = kpn_forward(
            random_image(batch, 23, 37), noise_profiles(batch), vkdt_init_weights(config, 0), config
        )
        assert isinstance(out, KPNOutput)
        assert out.output.shape == (batch, 3, 23, 37)
        assert out.residual is None  # mix: no residual low-pass
        # coarse size ((w+1)//2, (h+1)//2): 37x23 -> 19x12 -> 10x6 -> 5x3
        sizes = [(23, 37), (12, 19), (6, 10), (3, 5)]
        assert len(out.levels) == 4
        for level, (height, width) in zip(out.levels, sizes, strict=True):
            assert level.mip.shape == (batch, 3, height, width)
            assert level.x.shape == (batch, 3, height, width)
            assert level.kernel is not None
            assert level.kernel.shape == (batch, 16, height, width)
            assert level.alpha.shape == (batch, 1, height, width)
            assert level.filtered.shape == (batch, 3, height, width)
            assert level.output.shape == (batch, 3, height, width)
            assert torch.isfinite(level.output).all()
        assert out.output is out.levels[0].output

    def test_add_has_residual_one_level_coarser(self) -> None:
        config = model_config(width=32, n_hidden=1, levels=4, blend="add")
        out = kpn_forward(
            random_image(2, 23, 37), noise_profiles(2), vkdt_init_weights(config, 0), config
        )
        assert out.residual is not None
        assert out.residual.shape == (2, 3, 2, 3)  # M_4: 5x3 -> 3x2

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_dtype_is_kept(self, dtype: torch.dtype) -> None:
        config = model_config(width=32, n_hidden=1, levels=2)
        out = kpn_forward(
            random_image(1, 4, 5, dtype=dtype),
            noise_profiles(1).to(dtype),
            vkdt_init_weights(config, 0, dtype),
            config,
        )
        assert out.output.dtype == dtype


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
                    expected = up + a * (filtered - smooth_post_diff(filtered))
                torch.testing.assert_close(level.output, expected, **TIGHT)
            coarse = level.output


# ---------------------------------------------------------------- batch independence

VARIANTS = {
    "design": {},
    "add-binomial5-bilinear": {
        "blend": "add",
        "down": "binomial5",
        "up": "bilinear",
        "kernel_activation": "plain",
        "alpha_activation": "const",
        "denoise_levels": 2,
        "gradient_stop": True,
    },
    "post_diff-box2_vkdt": {"blend": "post_diff", "down": "box2_vkdt", "alpha_activation": "plain"},
    "star15-transpose": {"block_transpose": True, "alpha_activation": "clamped"},
    "patch8x8-transpose": {
        "features": "patch8x8",
        "width": 64,
        "n_hidden": 1,
        "block_transpose": True,
        "blend": "add",
    },
    "vkdt-f16": {"precision": "vkdt-f16", "blend": "add", "block_transpose": True},
    "lowpass-noise": {"noise_luminance": "lowpass", "blend": "add", "activation": "relu"},
}


@pytest.mark.parametrize("changes", VARIANTS.values(), ids=VARIANTS.keys())
def test_batch_independence(changes: dict[str, object]) -> None:
    """Each image's output is the one it gets alone, with its own noise profile."""
    config = model_config(**{"width": 32, "n_hidden": 2, "levels": 3, **changes})
    weights = vkdt_init_weights(config, 11)
    noisy = random_image(3, 7, 5, seed=1)  # 35 pixels: a partial block of 16
    noise_ab = noise_profiles(3)
    batched = kpn_forward(noisy, noise_ab, weights, config)
    for i in range(3):
        alone = kpn_forward(noisy[i : i + 1], noise_ab[i : i + 1], weights, config)
        torch.testing.assert_close(batched.output[i : i + 1], alone.output, **TIGHT)
        for level_b, level_a in zip(batched.levels, alone.levels, strict=True):
            torch.testing.assert_close(level_b.alpha[i : i + 1], level_a.alpha, **TIGHT)


def test_noise_profile_is_per_image() -> None:
    """The same image twice with different (a, b): star15 outputs differ, patch8x8 not."""
    image = random_image(1, 8, 8).expand(2, 3, 8, 8)
    noise_ab = torch.tensor([[1e5, 100.0], [1e3, 1.0]], dtype=F64)
    star = model_config(width=32, n_hidden=2, levels=2)
    out = kpn_forward(image, noise_ab, vkdt_init_weights(star, 0), star).output
    assert (out[0] - out[1]).abs().max() > 1e-6
    patch = model_config(features="patch8x8", width=64, n_hidden=1, levels=2)
    out = kpn_forward(image, noise_ab, vkdt_init_weights(patch, 0), patch).output
    torch.testing.assert_close(out[0], out[1], rtol=0.0, atol=0.0)


# ------------------------------------------------------------------- block transpose


def transposed_by_formula(padded: Tensor, pixels: int) -> Tensor:
    """Design §10, one pixel and output at a time: apply's weight for pixel p, output k is
    output p % 16 of pixel 16*(p//16) + k. ``padded``: [B,16,P'] raw network outputs with
    the pixels past the end, P' a multiple of 16. -> [B,16,pixels]
    """
    result = torch.empty(padded.shape[0], 16, pixels, dtype=padded.dtype)
    for p in range(pixels):
        for k in range(16):
            result[:, k, p] = padded[:, p % 16, 16 * (p // 16) + k]
    return result


def transposed_by_gather(padded: Tensor, pixels: int) -> Tensor:
    """The same formula with index tensors, for images too big for a python loop."""
    p = torch.arange(pixels).view(-1, 1)
    k = torch.arange(16).view(1, -1)
    return padded[:, p % 16, 16 * (p // 16) + k].transpose(1, 2)  # [B,P,16] -> [B,16,P]


def test_gather_formula_matches_loop() -> None:
    padded = torch.randn(2, 16, 48, dtype=F64)
    torch.testing.assert_close(
        transposed_by_gather(padded, 35), transposed_by_formula(padded, 35), rtol=0.0, atol=0.0
    )


def mirrored_extension(image: Tensor, extra_rows: int) -> Tensor:
    """``image`` with rows H, H+1, ... appended as the mirrored sampler reads them:
    row H + j is row H - 1 - j (design §0)."""
    height = image.shape[-2]
    rows = list(range(height)) + [height - 1 - j for j in range(extra_rows)]
    return image[:, :, rows]


class TestBlockTranspose:
    """Design §10: the kernel of pixel p, output k is output p % 16 of pixel 16*(p//16)+k,
    pixels in scanline order padded to a multiple of 16."""

    def test_star15_small_image_explicit_loop(self) -> None:
        """5x7 = 35 pixels: blocks 0..15, 16..31 and a partial block 32..34."""
        config = model_config(width=32, n_hidden=2, levels=1)
        weights = vkdt_init_weights(config, 2)
        noisy = random_image(2, 5, 7)
        raw = kpn_forward(noisy, noise_profiles(2), weights, config).levels[0].kernel
        transposed_config = dataclasses.replace(config, block_transpose=True)
        out = kpn_forward(noisy, noise_profiles(2), weights, transposed_config)
        kernel = out.levels[0].kernel.reshape(2, 16, 35)
        # star15 padding pixels have all-zero input, so (no biases) all-zero output
        padded = torch.cat((raw.reshape(2, 16, 35), torch.zeros(2, 16, 13, dtype=F64)), dim=2)
        torch.testing.assert_close(kernel, transposed_by_formula(padded, 35), **TIGHT)
        # the last partial block: pixel p in 32..34, output k reads pixel 32 + k, which is
        # past the end (>= 35) for k >= 3: zero there, real outputs for k < 3
        assert (kernel[:, 3:, 32:] == 0).all()
        assert (kernel[:, :3, 32:] != 0).all()
        # not the identity: the full blocks are really transposed
        assert (kernel[:, :, :32] - raw.reshape(2, 16, 35)[:, :, :32]).abs().max() > 1e-3

    @pytest.mark.parametrize("features", ["star15", "patch8x8"])
    @pytest.mark.parametrize(
        ("batch", "height", "width"),
        [(2, 5, 7), (1, 130, 131), (3, 130, 131)],
        ids=["5x7", "131x130-b1", "131x130-b3"],
    )
    def test_matches_formula(self, features: str, batch: int, height: int, width: int) -> None:
        """Small and large levels (the large ones are processed in several bands, whose
        boundaries move with the batch size) against the gathered formula. The padding
        pixels: star15 all-zero outputs; patch8x8 the outputs of the rows past the end,
        read through the mirrored sampler, i.e. of a mirrored extension of the image
        (its patches reach 3 rows below their pixel, never the extension's own edge).
        """
        pixels = height * width
        padding = -pixels % 16
        wide = {"width": 64, "n_hidden": 1} if features == "patch8x8" else {"n_hidden": 2}
        config = model_config(**{"width": 32, "levels": 1, "features": features, **wide})
        weights = vkdt_init_weights(config, 4)
        noisy = random_image(batch, height, width)
        noise_ab = noise_profiles(batch)
        raw = kpn_forward(noisy, noise_ab, weights, config).levels[0].kernel
        raw = raw.reshape(batch, 16, pixels)
        if features == "star15":
            past_end = torch.zeros(batch, 16, padding, dtype=F64)
        else:
            extended = mirrored_extension(noisy, -(-padding // width) + 4)
            raw_ext = kpn_forward(extended, noise_ab, weights, config).levels[0].kernel
            raw_ext = raw_ext.reshape(batch, 16, -1)
            torch.testing.assert_close(raw_ext[..., :pixels], raw, **TIGHT)
            past_end = raw_ext[..., pixels : pixels + padding]
            assert (past_end != 0).all()
        padded = torch.cat((raw, past_end), dim=2)
        transposed_config = dataclasses.replace(config, block_transpose=True)
        out = kpn_forward(noisy, noise_ab, weights, transposed_config)
        kernel = out.levels[0].kernel.reshape(batch, 16, pixels)
        torch.testing.assert_close(kernel, transposed_by_gather(padded, pixels), **TIGHT)

    def test_patch8x8_padding_reaches_real_pixels(self) -> None:
        """5x7: pixels 35..47 lie in rows 5 and 6; rows 0..9 of the mirrored extension of
        a 5-row image are rows [0,1,2,3,4,4,3,2,1,0]. Pixel p in 32..34, output k >= 3
        reads those padding pixels' outputs: not zero as with star15."""
        config = model_config(features="patch8x8", width=64, n_hidden=1, levels=1)
        weights = vkdt_init_weights(config, 4)
        noisy = random_image(2, 5, 7)
        extended = noisy[:, :, [0, 1, 2, 3, 4, 4, 3, 2, 1, 0]]
        raw_ext = kpn_forward(extended, noise_profiles(2), weights, config).levels[0].kernel
        padded = raw_ext.reshape(2, 16, 70)[..., :48]
        transposed_config = dataclasses.replace(config, block_transpose=True)
        out = kpn_forward(noisy, noise_profiles(2), weights, transposed_config)
        kernel = out.levels[0].kernel.reshape(2, 16, 35)
        torch.testing.assert_close(kernel, transposed_by_formula(padded, 35), **TIGHT)
        assert (kernel[:, 3:, 32:] != 0).all()

    def test_apply_uses_the_transposed_kernel(self) -> None:
        """I_0 and a_0 come from the kernel as apply reads it, not the untransposed one."""
        config = model_config(
            width=32, n_hidden=2, levels=2, block_transpose=True, alpha_activation="plain"
        )
        weights = vkdt_init_weights(config, 6)
        noisy = random_image(1, 5, 7)
        out = kpn_forward(noisy, noise_profiles(1), weights, config)
        torch.testing.assert_close(out.levels[0].alpha, out.levels[0].kernel[:, 15:], **TIGHT)
        tap_weights = torch.softmax(0.1 * out.levels[0].kernel[:, :15], dim=1)
        torch.testing.assert_close(
            out.levels[0].filtered[:, :, 2, 3],  # interior pixel (3, 2): no mirroring
            torch.einsum(
                "bk,bck->bc",
                tap_weights[:, :, 2, 3],
                torch.stack([noisy[:, :, 2 + dy, 3 + dx] for dx, dy in SPEC_STAR15_TAPS], dim=2),
            ),
            **TIGHT,
        )
        plain = dataclasses.replace(config, block_transpose=False)
        untransposed = kpn_forward(noisy, noise_profiles(1), weights, plain)
        assert (untransposed.levels[0].filtered - out.levels[0].filtered).abs().max() > 1e-4


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


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"blend": "add", "kernel_activation": "plain", "alpha_activation": "const"},
        {"blend": "post_diff", "alpha_activation": "plain", "denoise_levels": 2},
        {"features": "patch8x8", "width": 64, "n_hidden": 1, "blend": "add"},
        {"blend": "add", "down": "box2_vkdt", "up": "bspline"},
    ],
    ids=["mix", "add", "post_diff", "patch8x8", "box2_vkdt"],
)
def test_vkdt_f16_stores_as_vkdt_graph(changes: dict[str, object]) -> None:
    """Design §10 and vkdt's kpn/main.c: M_0 (the module's input) and O_0 (its output) are
    float32, every other image (M, D, I, O, a) and K float16; each mip is reduced from the
    stored float16 mip before it (box2_vkdt: each three levels from their stored base)."""
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
    # every mip comes from the stored one before it, M_1 from the float32 input
    stored = [noisy]
    for level in range(1, len(out.levels)):
        base = stored[(level - 1) // 3 * 3] if config.down == "box2_vkdt" else stored[-1]
        depth = (level - 1) % 3 + 2 if config.down == "box2_vkdt" else 2
        stored.append(mip_pyramid(base, depth, config.down)[-1].half().float())
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
    torch.testing.assert_close(out.output, full.output, rtol=0.0, atol=0.05)


U = 2.0**-20  # a float32 step well below float16's at 1 (2**-10)


def test_vkdt_f16_first_mip_from_the_float32_input() -> None:
    """Every 2x2 block of M_0 holds 1 + 460u three times and 1 + 920u once (u = 2**-20,
    float16's step at 1 is 1024u). vkdt's sub/mip pass reads the float32 input: M_1 =
    f16(1 + (3*460 + 920)/4 u) = f16(1 + 575u) = 1 + 1024u (575u is past half a step).
    Rounding M_0 first would give f16(1 + 460u) = 1 three times and f16(1 + 920u) =
    1 + 1024u once, mean 1 + 256u, rounded 1: M_1 = 1. With a zero network (plain
    kernels: every tap weight 0, I = 0 / max(0.001, 0) = 0) O_0 = up(O_1) + 0, unrounded."""
    config = model_config(
        width=32,
        n_hidden=1,
        levels=2,
        blend="add",
        down="box2",
        up="bilinear",
        kernel_activation="plain",
        alpha_activation="const",
        precision="vkdt-f16",
    )
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
    config = model_config(
        width=32,
        n_hidden=1,
        levels=3,
        blend="add",
        down="binomial5",
        up="bilinear",
        kernel_activation="plain",
        alpha_activation="const",
        precision="vkdt-f16",
    )
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
        config = model_config(
            width=32,
            n_hidden=2,
            levels=3,
            blend=blend,
            alpha_activation="plain",
            kernel_activation="plain",
            noise_luminance=noise_luminance,
        )
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
        config = model_config(
            width=32,
            n_hidden=2,
            levels=3,
            blend=blend,
            alpha_activation="plain",
            noise_luminance=noise_luminance,
        )
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


# ---------------------------------------------------------------- level override


ADD_VKDT = {
    "blend": "add",
    "down": "binomial5",
    "up": "bilinear",
    "kernel_activation": "plain",
    "alpha_activation": "const",
    "denoise_levels": 2,
    "levels": 4,
}


class TestLevelOverride:
    def test_train_four_infer_six_agree(self) -> None:
        """Design §10: with denoise_levels 2 and add, O_2 = M_2, so 4 and 6 levels agree."""
        config = model_config(width=32, n_hidden=2, **ADD_VKDT)
        weights = vkdt_init_weights(config, 3)
        noisy = random_image(2, 23, 37)
        four = kpn_forward(noisy, noise_profiles(2), weights, config)
        six = kpn_forward(noisy, noise_profiles(2), weights, config, levels=6)
        assert len(four.levels) == 4 and len(six.levels) == 6
        assert six.residual is not None and six.residual.shape == (2, 3, 1, 1)  # 37x23 -> M_6
        torch.testing.assert_close(six.output, four.output, rtol=0.0, atol=1e-12)
        torch.testing.assert_close(six.levels[2].output, six.levels[2].mip, **TIGHT)
        # and the module forwards the override
        model = KPN(config).double()
        load_weights(model.mlp, weights)
        torch.testing.assert_close(model(noisy, noise_profiles(2), levels=6), six.output, **TIGHT)

    def test_override_changes_a_fully_filtered_mix(self) -> None:
        config = model_config(width=32, n_hidden=2, levels=4)
        weights = vkdt_init_weights(config, 3)
        noisy = random_image(1, 23, 37)
        four = kpn_forward(noisy, noise_profiles(1), weights, config).output
        two = kpn_forward(noisy, noise_profiles(1), weights, config, levels=2)
        assert len(two.levels) == 2
        assert (two.output - four).abs().max() > 1e-5

    @pytest.mark.parametrize("levels", [0, -1, 17])
    def test_bad_override(self, levels: int) -> None:
        config = model_config(width=32, n_hidden=1)
        with pytest.raises(KpnError) as error:
            kpn_forward(
                random_image(1, 4, 4), noise_profiles(1), zero_weights(config), config, levels
            )
        assert_one_line_error(error, levels)


# ---------------------------------------------------------------------- gradcheck

GRADCHECK_VARIANTS = {
    "design": {},
    "down-binomial5": {"down": "binomial5"},
    "down-box2_vkdt": {"down": "box2_vkdt"},
    "up-bilinear": {"up": "bilinear"},
    "add-detail": {"blend": "add"},
    "post_diff-mip": {"blend": "post_diff"},
    "patch8x8": {"features": "patch8x8", "width": 64, "n_hidden": 1},
    "patch8x8-add-transpose": {
        "features": "patch8x8",
        "width": 64,
        "n_hidden": 1,
        "blend": "add",
        "block_transpose": True,
    },
    "kernel-plain": {"kernel_activation": "plain"},
    "alpha-const": {"alpha_activation": "const"},
    "alpha-plain": {"alpha_activation": "plain"},
    "alpha-clamped": {"alpha_activation": "clamped"},
    "block_transpose": {"block_transpose": True},
    "denoise_levels-1": {"denoise_levels": 1},
    "relu": {"activation": "relu"},
    "no-activation": {"activation": "none"},
    "lowpass-noise-add": {"blend": "add", "noise_luminance": "lowpass"},
    "vkdt-head-w32-in-fp32": {
        "blend": "add",
        "down": "binomial5",
        "up": "bilinear",
        "kernel_activation": "plain",
        "alpha_activation": "const",
        "denoise_levels": 2,
        "block_transpose": True,
    },
}


def check_smooth_point(out: KPNOutput, config: ModelConfig) -> None:
    """Guard: the point is away from apply's non-smooth places, so gradcheck is valid."""
    for level in out.levels:
        if level.kernel is None:
            continue
        logits, raw_alpha = level.kernel[:, :15], level.kernel[:, 15]
        if config.kernel_activation == "plain":
            assert logits.abs().max() < 9.0  # far from the +-10 replacement
            assert (logits.sum(1) - 0.001).abs().min() > 0.05  # and from max(0.001, sum)
        if config.alpha_activation == "clamped":
            assert 0.05 < raw_alpha.min() and raw_alpha.max() < 0.95


@pytest.mark.parametrize("changes", GRADCHECK_VARIANTS.values(), ids=GRADCHECK_VARIANTS.keys())
def test_gradcheck(changes: dict[str, object]) -> None:
    """float64 gradcheck w.r.t. the MLP weights and the noisy image (fast mode: a random
    projection of the Jacobian, which any wrong backward formula fails). vkdt-f16 is
    left out: its straight-through rounding is by design not the numerical derivative."""
    config = model_config(**{"width": 32, "n_hidden": 2, "levels": 3, **changes})
    weights = [w.requires_grad_() for w in smooth_weights(config, 21)]
    noisy = random_image(2, 5, 6, seed=2).requires_grad_()
    noise_ab = noise_profiles(2)
    check_smooth_point(kpn_forward(noisy, noise_ab, weights, config), config)

    def forward(image: Tensor, *matrices: Tensor) -> Tensor:
        return kpn_forward(image, noise_ab, matrices, config).output

    assert torch.autograd.gradcheck(forward, (noisy, *weights), fast_mode=True)


@pytest.mark.parametrize("blend", ["mix", "add"])
def test_gradcheck_gradient_stop(blend: str) -> None:
    """With gradient_stop the gradient is deliberately not the derivative of the output,
    except where the coarse levels do not depend on the inputs checked: the weights with
    only level 0 filtered."""
    config = model_config(
        width=32, n_hidden=2, levels=3, blend=blend, gradient_stop=True, denoise_levels=1
    )
    weights = [w.requires_grad_() for w in smooth_weights(config, 21)]
    noisy = random_image(2, 5, 6, seed=2)

    def forward(*matrices: Tensor) -> Tensor:
        return kpn_forward(noisy, noise_profiles(2), matrices, config).output

    assert torch.autograd.gradcheck(forward, tuple(weights), fast_mode=True)


def test_gradcheck_full_jacobian_small() -> None:
    """One full (not fast-mode) gradcheck: every entry of the Jacobian w.r.t. a 3x4 image
    through a three-level add network with block transpose."""
    config = model_config(
        width=32, n_hidden=1, levels=3, blend="add", block_transpose=True, up="bilinear"
    )
    weights = smooth_weights(config, 5)
    noisy = random_image(1, 3, 4, seed=3).requires_grad_()

    def forward(image: Tensor) -> Tensor:
        return kpn_forward(image, noise_profiles(1), weights, config).output

    assert torch.autograd.gradcheck(forward, (noisy,))


# ------------------------------------------------- module == function, memory layout


class TestModule:
    @pytest.mark.parametrize("changes", VARIANTS.values(), ids=VARIANTS.keys())
    def test_module_equals_function(self, changes: dict[str, object]) -> None:
        config = model_config(**{"width": 32, "n_hidden": 2, "levels": 3, **changes})
        torch.manual_seed(0)
        model = KPN(config)
        noisy = random_image(2, 7, 5, dtype=torch.float32)
        noise_ab = noise_profiles(2).float()
        with torch.no_grad():  # inference: one path, bit for bit
            expected = kpn_forward(noisy, noise_ab, model.mlp.weights, config).output
            assert torch.equal(model(noisy, noise_ab), expected)
            assert torch.equal(model.inspect(noisy, noise_ab).output, expected)
        # training: the module runs kpn.model.band where it applies, and unfused products
        torch.testing.assert_close(model(noisy, noise_ab), expected, rtol=1e-6, atol=1e-6)

    def test_module_holds_vkdt_initialised_weights(self) -> None:
        config = model_config(width=32, n_hidden=6)
        model = KPN(config)
        shapes = [tuple(w.shape) for w in model.mlp.weights]
        assert shapes == [(32, 32)] * 6 + [(16, 32)]
        bound = math.sqrt(6.0 / 64)  # design §3: +-sqrt(6/(W+W))
        assert all(w.abs().max() <= bound for w in model.mlp.weights)
        assert all(w.abs().max() > 0.9 * bound for w in model.mlp.weights)

    def test_module_refuses_invalid_config(self) -> None:
        with pytest.raises(KpnError) as error:
            KPN(ModelConfig(width=40))
        assert_one_line_error(error, "40")

    @pytest.mark.parametrize("changes", VARIANTS.values(), ids=VARIANTS.keys())
    def test_non_contiguous_and_channels_last(self, changes: dict[str, object]) -> None:
        config = model_config(**{"width": 32, "n_hidden": 2, "levels": 3, **changes})
        weights = vkdt_init_weights(config, 9)
        noisy = random_image(2, 9, 7)
        noise_ab = noise_profiles(2)
        expected = kpn_forward(noisy, noise_ab, weights, config).output
        transposed = noisy.transpose(-1, -2).contiguous().transpose(-1, -2)
        assert not transposed.is_contiguous()
        sliced = random_image(4, 18, 7)[::2, :, ::2].clone()
        sliced[:] = noisy
        strided = torch.zeros(2, 3, 18, 14, dtype=F64)[:, :, ::2, ::2]
        strided.copy_(noisy)
        channels_last = noisy.contiguous(memory_format=torch.channels_last)
        profile_view = noise_ab.T.contiguous().T
        assert not profile_view.is_contiguous()
        for image in (transposed, strided, channels_last):
            actual = kpn_forward(image, profile_view, weights, config).output
            torch.testing.assert_close(actual, expected, **TIGHT)


# ---------------------------------------------------------------------- bad input


BAD_INPUTS = {
    "three-dims": (torch.ones(3, 4, 4), torch.ones(1, 2), "shape"),
    "four-channels": (torch.ones(1, 4, 4, 4), torch.ones(1, 2), "shape"),
    "one-channel": (torch.ones(1, 1, 4, 4), torch.ones(1, 2), "shape"),
    "profile-b3": (torch.ones(2, 3, 4, 4), torch.ones(2, 3), "noise profile"),
    "profile-flat": (torch.ones(2, 3, 4, 4), torch.ones(2), "noise profile"),
    "profile-batch": (torch.ones(2, 3, 4, 4), torch.ones(3, 2), "noise profile"),
    "nan-image": (
        torch.ones(1, 3, 4, 4).index_fill(2, torch.tensor([1]), math.nan),
        torch.ones(1, 2),
        "NaN",
    ),
    "inf-image": (
        torch.ones(1, 3, 4, 4).index_fill(3, torch.tensor([3]), -math.inf),
        torch.ones(1, 2),
        "Inf",
    ),
    "negative-a": (torch.ones(1, 3, 4, 4), torch.tensor([[-1.0, 1.0]]), "noise profile"),
    "nan-b": (torch.ones(1, 3, 4, 4), torch.tensor([[1.0, math.nan]]), "noise profile"),
    "inf-a": (torch.ones(1, 3, 4, 4), torch.tensor([[math.inf, 1.0]]), "noise profile"),
    "zero-height": (torch.ones(1, 3, 0, 4), torch.ones(1, 2), "empty"),
    "zero-batch": (torch.ones(0, 3, 4, 4), torch.ones(0, 2), "empty"),
    "integer": (torch.ones(1, 3, 4, 4, dtype=torch.int64), torch.ones(1, 2), "floating point"),
    "not-a-tensor": (torch.ones(1, 3, 4, 4).numpy(), torch.ones(1, 2), "tensor"),
}


class UntouchableWeights(Sequence[Tensor]):
    """Weights that fail loudly when anything reads them."""

    def __len__(self) -> int:
        raise AssertionError("the weights were read before the input was checked")

    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        raise AssertionError("the weights were read before the input was checked")


@pytest.mark.parametrize(("noisy", "noise_ab", "words"), BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input(noisy: Tensor, noise_ab: Tensor, words: str) -> None:
    """One-line KpnError before any work: the weights are never read."""
    config = model_config(width=32, n_hidden=1)
    with pytest.raises(KpnError) as error:
        kpn_forward(noisy, noise_ab, UntouchableWeights(), config)
    assert_one_line_error(error, words)
    model = KPN(config)
    with pytest.raises(KpnError):
        model(noisy, noise_ab)


def test_good_input_reads_the_weights() -> None:
    """The counterpart of test_bad_input: a valid input gets as far as the weights."""
    config = model_config(width=32, n_hidden=1)
    with pytest.raises(AssertionError, match="weights were read"):
        kpn_forward(torch.ones(1, 3, 4, 4), torch.ones(1, 2), UntouchableWeights(), config)


def test_shape_message_names_what_came() -> None:
    with pytest.raises(KpnError) as error:
        kpn_forward(torch.ones(2, 4, 5, 6), torch.ones(2, 2), [], model_config())
    assert_one_line_error(error, "[2, 4, 5, 6]")


# ----------------------------------------------------------------- torch.compile


def test_torch_compile_matches_eager() -> None:
    """Graph capture of the whole forward (dynamo + AOT autograd). The ``aot_eager``
    backend keeps this under a few seconds; inductor compiles C++ for ~40 s on CPU."""
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        pytest.skip("torch.compile (dynamo) is not supported on this Python/platform")
    torch._dynamo.reset()
    config = model_config(width=32, n_hidden=1, levels=2, block_transpose=True)
    torch.manual_seed(0)
    model = KPN(config)
    noisy = random_image(2, 5, 7, dtype=torch.float32)
    noise_ab = noise_profiles(2).float()
    compiled = torch.compile(model, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(noisy, noise_ab), model(noisy, noise_ab))
