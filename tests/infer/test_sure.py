"""kpn.infer.sure: the SURE blend towards the input, against its closed form, against the blend
weight that knows the clean image, and at its limits (no noise, a network that does
nothing); at one pass (infer.sure_divergence), the blend of a derivative is the two-pass
blend where the finite difference is exact, and within 0.02 dB of it for the shipped
design network, chosen by the Denoiser unless a model's block transpose rules it out."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from kpn.config import InferConfig, config_from_dict, load_config
from kpn.errors import KpnError
from kpn.infer.denoiser import Denoiser
from kpn.infer.sure import (
    PROBE_STEP,
    U16,
    _blend,
    _window_mean,
    noise_variance,
    probe,
    probe_step,
    risk_sums,
    sure_blend,
    sure_blend_one_pass,
    weight_of_sums,
)
from kpn.infer.weights import SHIPPED_DIR, load_weights
from kpn.metrics import psnr
from kpn.model.network import KPN
from kpn.model.tiling import plan_tiles

from infer_shared import ROOT

pytestmark = pytest.mark.usefixtures("one_thread")  # small images


def box3(image: np.ndarray) -> np.ndarray:
    """A 3x3 mean, circular at the edges: linear, each output's weight on its own input
    exactly 1/9 (the divergence SURE needs)."""
    return sum(np.roll(image, (dy, dx), (0, 1)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9


def scene(size: int = 256) -> np.ndarray:
    """``[size,size,3]`` linear image: a smooth gradient left, fine stripes right."""
    y, x = np.mgrid[0:size, 0:size] / size
    smooth = 0.2 + 0.3 * x + 0.1 * y
    stripes = 0.3 + 0.15 * ((np.arange(size) % 2)[None, :] * 2 - 1) * np.ones((size, 1))
    plane = np.where(x < 0.5, smooth, stripes)
    return np.repeat(plane[..., None], 3, -1).astype(np.float32)


def noisy_of(clean: np.ndarray, a: float, b: float, seed: int = 3) -> np.ndarray:
    sigma = np.sqrt((a + U16 * b * np.maximum(clean, 0)) / U16**2)
    noise = np.random.default_rng(seed).standard_normal(clean.shape)
    return (clean + sigma * noise).astype(np.float32)


def test_noise_variance_is_spec_8s_profile_at_the_noisy_value():
    values = torch.tensor([-0.25, 0.0, 0.5])
    expected = torch.tensor([100.0, 100.0, 100.0 + U16 * 2 * 0.5]) / U16**2
    assert_close(noise_variance(values, 100.0, 2.0), expected)


def test_probe_is_a_fixed_rademacher_sign_pattern():
    signs = probe((64, 64, 3))
    assert signs.dtype == np.int8
    assert set(np.unique(signs)) == {-1, 1}
    assert abs(signs.mean()) < 0.05
    np.testing.assert_array_equal(signs, probe((64, 64, 3)))
    assert not np.array_equal(signs, probe((64, 64, 3), seed=1))


@pytest.mark.parametrize("window", [1, 3, 5])
def test_window_mean_averages_the_part_of_the_square_inside_the_image(window):
    plane = torch.rand(7, 9, generator=torch.Generator().manual_seed(0))
    half = window // 2
    expected = torch.empty_like(plane)
    for i in range(7):
        for j in range(9):
            part = plane[max(0, i - half) : i + half + 1, max(0, j - half) : j + half + 1]
            expected[i, j] = part.mean()
    assert_close(_window_mean(plane, window), expected)


def test_window_mean_over_several_chunks_is_torchs_average_pooling():
    """Planes taller and wider than a chunk (kpn.infer.sure.ROWS): the same as a 2-D average
    pooling that counts only the pixels inside the image."""
    plane = torch.rand(300, 520, generator=torch.Generator().manual_seed(1))
    pooled = F.avg_pool2d(plane[None, None], 33, 1, 16, count_include_pad=False)[0, 0]
    assert_close(_window_mean(plane, 33), pooled)


def test_window_zero_is_the_whole_images_mean():
    plane = torch.arange(12.0).view(3, 4)
    assert_close(_window_mean(plane, 0), torch.full((3, 4), 5.5))


def test_blend_weight_is_sures_closed_form_for_a_pointwise_shrinkage():
    """f(y) = m + c (y - m): the divergence is c at every value, the finite difference is
    exact (float64), and the weight is sum v (1 - c) / sum r^2 by hand."""
    a, b, m, c = 1e5, 50.0, 0.25, 0.6
    noisy = noisy_of(np.full((64, 64, 3), 0.3), a, b).astype(np.float64)
    denoised = m + c * (noisy - m)
    signs = probe(noisy.shape)
    step = 1e-3
    probed = m + c * (noisy + step * signs - m)
    sums = risk_sums(noisy, denoised, probed, signs, step, a, b, "none")
    weight = weight_of_sums(*sums, 0)
    variance = (a + U16 * b * np.maximum(noisy, 0)) / U16**2
    expected = (variance * (1 - c)).sum() / ((denoised - noisy) ** 2).sum()
    assert 0.01 < expected < 0.9
    assert_close(weight, torch.full((1, 64, 64), float(expected)), rtol=1e-5, atol=0)


@pytest.mark.parametrize("a, b", [(2e4, 0.0), (1e3, 10.0)])
def test_sure_finds_the_blend_that_knows_the_clean_image(a, b):
    """Over the whole image, SURE's weight is the weight that minimises the error against
    the clean image, within its sampling error, and the blend is better than both the
    input and the denoiser's output."""
    clean = scene()
    noisy = noisy_of(clean, a, b)
    denoised = box3(noisy)
    residual = denoised - noisy
    oracle = ((clean - noisy) * residual).sum() / (residual**2).sum()
    blended = sure_blend(lambda image: box3(image).astype(np.float32), noisy, a, b, 0)
    found = float(((blended - noisy) * residual).sum() / (residual**2).sum())
    assert abs(found - oracle) < 0.02
    error = ((blended - clean) ** 2).mean()
    assert error < ((noisy - clean) ** 2).mean()
    assert error < ((denoised - clean) ** 2).mean()


def test_a_window_keeps_texture_and_denoises_flat_regions():
    """Stripes the box filter wipes out keep weight near 0, the gradient near 1."""
    a, b = 1e4, 0.0
    noisy = noisy_of(scene(), a, b)
    denoised = box3(noisy).astype(np.float32)
    signs = probe(noisy.shape)
    step = PROBE_STEP * np.sqrt(a) / U16
    probed = box3(noisy + np.float32(step) * signs).astype(np.float32)
    sums = risk_sums(noisy, denoised, probed, signs, step, a, b, "none")
    (weight,) = weight_of_sums(*sums, 33)
    assert float(weight[40:216, 40:100].mean()) > 0.9  # away from box3's wrapped edges
    assert float(weight[:, 160:250].max()) < 0.05


def test_without_noise_the_output_is_the_input_and_the_network_never_runs():
    image = scene(16)

    def network(_: np.ndarray) -> np.ndarray:
        raise AssertionError("the network ran on a noiseless image")

    out = sure_blend(network, image, 0.0, 0.0, 33)
    np.testing.assert_array_equal(out, image)
    assert out is not image


def test_a_network_that_changes_nothing_gives_the_input():
    noisy = noisy_of(scene(16), 1e3, 1.0)
    out = sure_blend(lambda image: image.copy(), noisy, 1e3, 1.0, 5)
    np.testing.assert_array_equal(out, noisy)


def test_one_weights_blend_is_between_input_and_output():
    """Each value, with one weight for all of it (with two, each part: below)."""
    noisy = noisy_of(scene(64), 1e4, 5.0)
    denoised = box3(noisy)
    out = sure_blend(lambda image: box3(image).astype(np.float32), noisy, 1e4, 5.0, 9, "none")
    low, high = np.minimum(noisy, denoised), np.maximum(noisy, denoised)
    assert np.all(out >= low - 1e-6) and np.all(out <= high + 1e-6)


def test_blend_weight_matches_a_convolution_of_the_sums():
    """The windowed weight is the ratio of the two sums over each window (a convolution
    with a box, zero outside the image)."""
    a, b = 1e3, 1.0
    noisy = noisy_of(scene(24), a, b)
    denoised = box3(noisy).astype(np.float32)
    signs = probe(noisy.shape)
    probed = box3(noisy + np.float32(1e-3) * signs).astype(np.float32)
    (weight,) = weight_of_sums(*risk_sums(noisy, denoised, probed, signs, 1e-3, a, b, "none"), 5)
    variance = torch.from_numpy((a + U16 * b * np.maximum(noisy, 0)) / U16**2)
    divergence = torch.from_numpy(signs * (probed - denoised) / 1e-3)
    reduction = (variance * (1 - divergence)).sum(-1)
    residual = torch.from_numpy((denoised - noisy) ** 2).sum(-1)
    box = torch.ones(1, 1, 5, 5, dtype=reduction.dtype)
    ratio = F.conv2d(reduction[None, None], box, padding=2) / F.conv2d(
        residual[None, None], box, padding=2
    )
    assert_close(weight, ratio[0, 0].float().clamp(0, 1), rtol=1e-4, atol=1e-6)


# --- a weight for the luma and one for the chroma (infer.sure_split = luma_chroma) ---------
def colour_scene(size: int = 128) -> np.ndarray:
    """``[size,size,3]``: the grey gradient and stripes of :func:`scene`, tinted by a
    colour that changes slowly across the image."""
    y, x = np.mgrid[0:size, 0:size] / size
    tint = np.stack((0.1 * x, -0.05 * y, 0.08 * (1 - x)), -1)
    return (scene(size) + tint).astype(np.float32)


def test_the_parts_sums_add_up_to_the_sums_of_one_weight() -> None:
    """The luma and chroma are orthogonal projections that add up to the identity: their
    reductions and residual energies add up to those of the whole residual."""
    a, b = 1e4, 5.0
    noisy = noisy_of(colour_scene(48), a, b)
    signs = probe(noisy.shape)
    denoised = box3(noisy).astype(np.float32)
    probed = (box3(noisy + np.float32(1e-3) * signs) * 0.9).astype(np.float32)  # any probe
    whole = risk_sums(noisy, denoised, probed, signs, 1e-3, a, b, "none")
    parts = risk_sums(noisy, denoised, probed, signs, 1e-3, a, b, "luma_chroma")
    for one, two in zip(whole, parts, strict=True):
        assert one.shape == (1, 48, 48) and two.shape == (2, 48, 48)
        assert_close(two.sum(0, keepdim=True), one, rtol=1e-5, atol=1e-5 * float(one.abs().max()))


def test_the_luma_parts_sums_by_hand() -> None:
    """At one pixel: ``sum v (1/3 - delta_c mean(J delta))`` and ``3 mean(r)^2``."""
    a, b = 100.0, 2.0
    noisy = np.array([[[0.2, 0.5, 0.8]]], np.float32)
    denoised = np.array([[[0.3, 0.4, 0.6]]], np.float32)
    along = np.array([[[0.5, -0.25, 0.125]]], np.float32)  # J delta (one pass)
    signs = np.array([[[1, -1, 1]]], np.int8)
    reduction, residual = risk_sums(noisy, denoised, along, signs, None, a, b, "luma_chroma")
    variance = (a + U16 * b * noisy[0, 0].astype(np.float64)) / U16**2
    mean_along = along.mean()
    luma = (variance * (1 / 3 - signs[0, 0] * mean_along)).sum()
    chroma = (variance * (2 / 3 - signs[0, 0] * (along[0, 0] - mean_along))).sum()
    r = (denoised - noisy)[0, 0].astype(np.float64)
    assert_close(reduction[:, 0, 0].double(), torch.tensor([luma, chroma]), rtol=1e-5, atol=0)
    expected = torch.tensor([3 * r.mean() ** 2, ((r - r.mean()) ** 2).sum()])
    assert_close(residual[:, 0, 0].double(), expected, rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("a, b", [(2e4, 0.0), (1e3, 10.0)])
def test_each_parts_weight_is_the_one_that_knows_the_clean_image(a: float, b: float) -> None:
    """A denoiser that smooths the chroma far more than the luma: over the whole image,
    each part's SURE weight is the weight that minimises that part's error against the
    clean image, within its sampling error, and the two-weight blend beats the one-weight
    one."""
    clean = colour_scene()
    noisy = noisy_of(clean, a, b)

    def denoise(image: np.ndarray) -> np.ndarray:
        luma = image.mean(-1, keepdims=True)
        return (box3(luma) + box3(box3(image - luma))).astype(np.float32)

    residual = denoise(noisy) - noisy
    found = sure_blend(denoise, noisy, a, b, 0, "luma_chroma") - noisy
    for project in (lambda x: x.mean(-1, keepdims=True), lambda x: x - x.mean(-1, keepdims=True)):
        part = project(residual)
        oracle = (project(clean - noisy) * part).sum() / (part**2).sum()
        assert abs(float((project(found) * part).sum() / (part**2).sum()) - oracle) < 0.03
    one = sure_blend(denoise, noisy, a, b, 0, "none")
    assert ((found + noisy - clean) ** 2).mean() < ((one - clean) ** 2).mean()


@pytest.mark.parametrize("window", [0, 9])
def test_a_parts_weight_is_its_own_where_its_sums_do_not_scatter(window: int) -> None:
    """Constant per-pixel sums: each part keeps its own weight (0.2, 0.6; the one weight
    of both is 0.4)."""
    reduction = torch.stack((torch.full((64, 64), 0.2), torch.full((64, 64), 0.6)))
    assert_close(weight_of_sums(reduction, torch.ones(2, 64, 64), window), reduction)


def test_a_parts_weight_is_nearly_the_one_weight_where_its_sums_scatter() -> None:
    """The luma's reductions alternating by +-50 about the same mean (0.2): its weight's
    uncertainty (their spread over their count over its residual energy squared, 0.61)
    far exceeds its distance from the one weight (0.2), which it nearly takes; the
    chroma's, exact, keeps its own."""
    signs = torch.ones(64, 64)
    signs[::2, ::2] = signs[1::2, 1::2] = -1
    reduction = torch.stack((0.2 + 50 * signs, torch.full((64, 64), 0.6)))
    luma, chroma = weight_of_sums(reduction, torch.ones(2, 64, 64), 0)
    shrink = 0.2**2 / (0.2**2 + 50**2 / 64**2)
    assert_close(luma, torch.full_like(luma, 0.4 - shrink * 0.2), rtol=1e-4, atol=0)
    assert_close(chroma, torch.full_like(chroma, 0.6))


@pytest.mark.parametrize("a, b", [(1e4, 5.0), (0.0, 1e34)])
def test_a_grey_images_two_weights_are_finite(a: float, b: float) -> None:
    """R = G = B and a network that keeps it grey: the chroma has no residual (its weight
    alone would be inf, and inf - inf the shrinkage); the blend is finite, its luma
    between the input's and the network's, its chroma none."""
    grey = np.repeat(noisy_of(scene(32), 1e4, 5.0).mean(-1, keepdims=True), 3, -1)
    denoise = lambda image: box3(image).astype(np.float32)  # noqa: E731
    out = sure_blend(denoise, grey, a, b, 9, "luma_chroma")
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out - out.mean(-1, keepdims=True), 0, atol=1e-6)
    low, high = np.minimum(grey, denoise(grey)), np.maximum(grey, denoise(grey))
    assert np.all(out >= low - 1e-6) and np.all(out <= high + 1e-6)


def test_the_two_weights_blend_the_luma_and_the_chroma_apart() -> None:
    """A blend of weights (1, 0): the network's luma with the input's chroma."""
    noisy = noisy_of(colour_scene(16), 1e3, 1.0)
    denoised = box3(noisy).astype(np.float32)
    weights = torch.stack((torch.ones(16, 16), torch.zeros(16, 16)))
    out = _blend(noisy, denoised.copy(), weights)
    expected = noisy - noisy.mean(-1, keepdims=True) + denoised.mean(-1, keepdims=True)
    np.testing.assert_allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize("split", ["none", "luma_chroma"])
def test_a_linear_denoisers_blend_lies_between_input_and_output_in_each_part(split: str) -> None:
    noisy = noisy_of(colour_scene(64), 1e4, 5.0)
    denoised = box3(noisy)
    out = sure_blend(lambda image: box3(image).astype(np.float32), noisy, 1e4, 5.0, 9, split)
    for project in (lambda x: x.mean(-1), lambda x: x - x.mean(-1, keepdims=True)):
        low = np.minimum(project(noisy), project(denoised))
        high = np.maximum(project(noisy), project(denoised))
        assert np.all(project(out) >= low - 1e-6) and np.all(project(out) <= high + 1e-6)


def test_an_unknown_split_is_refused() -> None:
    with pytest.raises(KpnError, match="sure_split"):
        config_from_dict({"infer": {"sure_split": "rgb"}}, "x.toml")


@pytest.mark.parametrize("window", [-1, 2, 32, 4097])
def test_a_sure_window_that_is_not_odd_or_zero_is_refused(window):
    with pytest.raises(KpnError, match=r"infer\.sure_window"):
        InferConfig(sure_window=window).validate("x.toml")


# --- one pass (infer.sure_divergence = one_pass) -------------------------------------
def box3_along(image: np.ndarray, signs: np.ndarray, step: float) -> tuple[np.ndarray, ...]:
    """box3 and its derivative along ``signs``, itself applied to them (it is linear)."""
    return box3(image).astype(np.float32), box3(signs.astype(np.float32)).astype(np.float32)


@pytest.mark.parametrize("window", [0, 9])
def test_a_linear_denoisers_one_pass_blend_is_its_two_pass_blend(window: int) -> None:
    a, b = 1e4, 5.0
    noisy = noisy_of(np.ascontiguousarray(scene(64)[:, :32]), a, b)  # the smooth half
    two = sure_blend(lambda image: box3(image).astype(np.float32), noisy, a, b, window)
    one = sure_blend_one_pass(box3_along, noisy, a, b, window)
    np.testing.assert_allclose(one, two, atol=2e-5)  # float32 finite differences
    assert np.abs(one - noisy).max() > 0.01  # the blend moved towards the network


def test_without_noise_one_pass_gives_the_input_and_the_network_never_runs() -> None:
    image = scene(16)

    def network(*_: object) -> tuple[np.ndarray, np.ndarray]:
        raise AssertionError("the network ran on a noiseless image")

    out = sure_blend_one_pass(network, image, 0.0, 0.0, 33)
    np.testing.assert_array_equal(out, image)
    assert out is not image


@pytest.fixture(scope="module")
def design() -> Denoiser:
    loaded = load_weights(SHIPPED_DIR / "design")
    return Denoiser.build(loaded.model, loaded.config.infer, precision="fp32", tile=64)


def camera_photo(size: int = 96) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(clean, noisy, a, b): stripes, a gradient and a disc under ISO 12800 +3 EV noise."""
    y, x = np.mgrid[0:size, 0:size] / size
    disc = ((x - 0.6) ** 2 + (y - 0.4) ** 2 < 0.05).astype(np.float64)
    plane = 0.1 + 0.4 * x + 0.2 * np.sin(40 * x * y) + 0.2 * disc
    clean = np.stack((plane, 0.8 * plane + 0.1 * y, 0.6 - 0.4 * plane), -1).astype(np.float32)
    a, b = 1434.2 * 64, 7.3766 * 8
    return clean, noisy_of(clean, a, b), a, b


def test_the_denoiser_blends_at_one_pass_within_002_db_of_two(design: Denoiser) -> None:
    clean, noisy, a, b = camera_photo()
    two_pass = dataclasses.replace(design, sure_divergence="two_pass")
    assert design.sure_divergence == "one_pass"
    plan = functools.partial(plan_tiles, 96, 96, design.config, design.levels)
    assert design.tiles(96, 96) == plan(design.probe_tile).tiles  # half the area: more
    assert two_pass.tiles(96, 96) == 2 * plan(design.tile).tiles
    one, two = design(noisy, a, b), two_pass(noisy, a, b)
    alone = dataclasses.replace(design, sure=False)(noisy, a, b)
    assert abs(psnr(one, clean) - psnr(two, clean)) < 0.02
    assert not np.array_equal(one, alone)  # SURE did blend


def test_one_pass_in_tiles_is_one_pass_whole(design: Denoiser) -> None:
    _, noisy, a, b = camera_photo(80)
    signs = np.sign(np.random.default_rng(1).standard_normal(noisy.shape)).astype(np.int8)
    step = probe_step(noisy, a, b)
    tiled = design.network_along(noisy, signs, step, a, b)
    whole = dataclasses.replace(design, tile=0).network_along(noisy, signs, step, a, b)
    np.testing.assert_array_equal(tiled[0], whole[0])
    np.testing.assert_array_equal(tiled[0], design.network(noisy, a, b))
    np.testing.assert_allclose(tiled[1], whole[1], atol=1e-3)


def test_a_block_transposed_model_takes_two_passes() -> None:
    head = load_config(ROOT / "configs" / "vkdt-head-w32.toml")
    torch.manual_seed(0)
    denoiser = Denoiser.build(KPN(head.model), InferConfig(sure_divergence="one_pass"))
    assert denoiser.sure_divergence == "two_pass"


@pytest.mark.parametrize("divergence", ["one_pass", "two_pass"])
def test_a_nan_pixel_is_refused_as_with_two_passes(design: Denoiser, divergence: str) -> None:
    _, noisy, a, b = camera_photo(32)
    noisy[3, 4, 1] = np.nan
    with pytest.raises(KpnError, match="NaN or Inf"):
        dataclasses.replace(design, sure_divergence=divergence)(noisy, a, b)


def test_an_unknown_divergence_is_refused() -> None:
    with pytest.raises(KpnError, match="sure_divergence"):
        config_from_dict({"infer": {"sure_divergence": "three_pass"}}, "x.toml")
