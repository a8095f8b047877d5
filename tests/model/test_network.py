"""Tests for kpn.model.network: the whole multilevel KPN (docs/design.md §2-§5 and §10).

kornia's family for the whole network: smoke and shapes, batch independence, the level
override, gradcheck, module == function, non-contiguous input, bad input and
torch.compile. The blends level by level are in test_blend.py, the block transpose in
test_level_filter.py, vkdt's other switches (denoise_levels, gradient stop, float16
emulation, noise luminance) in test_vkdt_switches.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
import torch
from torch import Tensor

from kpn.config import ModelConfig
from kpn.errors import KpnError
from kpn.model.features import STAR15_PADDING, guide_features, luminance
from kpn.model.features import star15_snr_features_padded as star15_snr
from kpn.model.mlp import load_weights, mlp_forward_planar
from kpn.model.network import KPN, KPNOutput, kpn_forward
from kpn.model.pyramid import upsample
from kpn.model.sampling import pad_symmetric

from conftest import assert_one_line_error
from model_shared import (
    F64,
    TIGHT,
    model_config,
    noise_profiles,
    random_image,
    smooth_weights,
    vkdt_init_weights,
    zero_weights,
)

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
    "fine_passes-2": {"blend": "post_diff", "fine_passes": 2},
    "chroma_kernel-post_diff": {"blend": "post_diff", "chroma_kernel": True},
    "chroma_input-guide": {
        "features": "star15_snr",
        "chroma_input": True,
        "guide": "centre",
        "width": 64,
        "n_hidden": 1,
    },
    "chroma_kernel-mix-plain": {"chroma_kernel": True, "kernel_activation": "plain"},
    "star21-chroma_kernel-post_diff": {
        "blend": "post_diff",
        "chroma_kernel": True,
        "kernel_taps": "star21",
    },
    "star21-plain-fine_passes-2": {
        "kernel_taps": "star21",
        "kernel_activation": "plain",
        "fine_passes": 2,
    },
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
    "guide": {"features": "star15_snr", "guide": "centre", "width": 48},
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
        taps = config.kernel_outputs - 1
        for first in range(0, config.outputs, taps + 1):  # each kernel (chroma_kernel: two)
            logits, raw_alpha = level.kernel[:, first : first + taps], level.kernel[:, first + taps]
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


# ---------------------------------------------------------------------------- the guide


def test_guide_reads_the_expanded_coarser_output() -> None:
    """Each level's network reads star15_snr of its mip and the guide channels of
    up(O_{k+1}) against it (design §16); the coarsest, without a coarser output, reads
    its own mip as guide: zero channels."""
    config = model_config(features="star15_snr", guide="centre", width=48, n_hidden=2)
    weights = smooth_weights(config, 5)
    noisy, noise_ab = random_image(2, 13, 11, seed=4), noise_profiles(2)
    out = kpn_forward(noisy, noise_ab, weights, config)
    for level, result in enumerate(out.levels):
        lum = luminance(result.mip)
        star = star15_snr(pad_symmetric(result.mip, *STAR15_PADDING), noise_ab, level, lum)
        if level + 1 < len(out.levels):
            height, width = result.mip.shape[-2:]
            guide = upsample(out.levels[level + 1].output, height, width, config.up)
            guided = guide_features(guide, result.mip, noise_ab, level, lum)
            assert guided.abs().amax() > 0.1  # the test reads something
        else:
            guided = star.new_zeros(2, 2, *star.shape[-2:])
        inputs = torch.cat((star, guided), dim=1).flatten(2)
        expected = mlp_forward_planar(inputs, weights, config.activation)
        assert result.kernel is not None
        torch.testing.assert_close(result.kernel.flatten(2), expected, **TIGHT)


def test_guide_changes_the_output() -> None:
    """The same weights with the guide channels' columns zeroed are the unguided network."""
    config = model_config(features="star15_snr", guide="centre", width=48, n_hidden=2)
    weights = smooth_weights(config, 5)
    noisy, noise_ab = random_image(1, 16, 16, seed=4), noise_profiles(1)
    blind = [weights[0].clone(), *weights[1:]]
    blind[0][:, 32:] = 0
    unguided = model_config(features="star15_snr", width=48, n_hidden=2)
    plain = kpn_forward(noisy, noise_ab, [blind[0][:, :32], *blind[1:]], unguided).output
    torch.testing.assert_close(kpn_forward(noisy, noise_ab, blind, config).output, plain, **TIGHT)
    assert (kpn_forward(noisy, noise_ab, weights, config).output - plain).abs().amax() > 1e-6
