"""Tests for kpn/model/tiling.py: halos from the config, the tile plan, and tiled == untiled."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

import kpn.model.tiling as tiling
from kpn.config import ModelConfig, load_config
from kpn.errors import KpnError
from kpn.model.network import KPN, kpn_forward, stored_image
from kpn.model.pyramid import level_sizes, mip_pyramid
from kpn.model.reference import receptive_radius
from kpn.model.tiling import (
    Window,
    global_mips,
    level_halo,
    mip_band_halo,
    plan_level,
    plan_tiles,
    stripe_alignment,
    tiled_forward,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DESIGN = load_config(CONFIGS / "design.toml").model
VKDT_2024 = load_config(CONFIGS / "vkdt-2024-02.toml").model
HEAD_W32 = load_config(CONFIGS / "vkdt-head-w32.toml").model
HEAD = load_config(CONFIGS / "vkdt-head.toml").model

# Every switch that changes what a tile must see, across the configs.
CASES = {
    "design": DESIGN,  # box2, bspline, mip, mix, star15
    "design_star15_snr": dataclasses.replace(DESIGN, features="star15_snr"),
    "post_diff_box2_vkdt_lowpass": dataclasses.replace(
        DESIGN, blend="post_diff", down="box2_vkdt", noise_luminance="lowpass"
    ),
    "add_binomial5_bilinear": dataclasses.replace(
        DESIGN, down="binomial5", up="bilinear", mlp_input="detail", blend="add"
    ),
    "mix_box2_vkdt_bilinear_plain": dataclasses.replace(  # vkdt's variants: its input too
        DESIGN,
        features="star15",
        down="box2_vkdt",
        up="bilinear",
        kernel_activation="plain",
        alpha_activation="const",
    ),
    "vkdt_2024_f16": VKDT_2024,  # binomial5/bilinear/add, denoise 2 levels, float16
    "vkdt_head_w32": HEAD_W32,  # ... plus the block transpose
    "vkdt_head": dataclasses.replace(HEAD, n_hidden=2),  # patch8x8, W 64, block transpose
    "guide": dataclasses.replace(DESIGN, guide="centre"),  # the MLP reads up(O_{k+1})
    "post_diff_fine_passes": dataclasses.replace(DESIGN, blend="post_diff", fine_passes=2),
    "post_diff_chroma": dataclasses.replace(
        DESIGN, blend="post_diff", chroma_kernel=True, chroma_input=True
    ),
    "guide_bilinear_post_diff": dataclasses.replace(
        DESIGN, guide="centre", up="bilinear", blend="post_diff"
    ),
    "star21_chroma": dataclasses.replace(
        DESIGN, blend="post_diff", chroma_kernel=True, chroma_input=True, kernel_taps="star21"
    ),
}


def random_model(config: ModelConfig, seed: int = 0) -> KPN:
    torch.manual_seed(seed)
    return KPN(config)


def noisy_image(height: int, width: int, seed: int = 1, batch: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, height).view(height, 1)
    x = torch.linspace(0, 1, width).view(1, width)
    clean = torch.stack((0.2 + 0.6 * x * y, 0.5 * (x + y), 0.8 - 0.5 * x + 0 * y))
    return clean + 0.05 * torch.randn(batch, 3, height, width, generator=generator)


NOISE = torch.tensor([[2e5, 40.0]])


@pytest.fixture(autouse=True)
def one_thread() -> object:
    """Tensors of a few thousand pixels: a second thread only adds barriers, which cost
    milliseconds each on a machine whose cores other processes share."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- halos ---------------------------------------------------------------------------
def test_level_halo_design_by_hand() -> None:
    """mip input: X = M_k exact; features and apply reach 2; up(O_{k+1}) bspline 2."""
    assert [level_halo(DESIGN, level, 4, 100) for level in range(4)] == [2, 2, 2, 2]


def test_level_halo_vkdt_presets_by_hand() -> None:
    # detail X = M - up(M'), bilinear: 3; filtered levels 0, 1: + features 2 = 5;
    # levels >= 2 pass X through: 3; the blend's up(O) reaches 3
    assert [level_halo(VKDT_2024, level, 6, 100) for level in range(6)] == [5, 5, 3, 3, 3, 3]
    # block transpose: one more row for the rest of a block (width 100 >= 15)
    assert [level_halo(HEAD_W32, level, 6, 100) for level in range(3)] == [6, 6, 3]
    # a level 4 wide: a block of 16 spans ceil(15/4) = 4 more rows
    assert level_halo(HEAD_W32, 0, 6, 4) == 3 + 2 + 4
    # patch8x8 reaches 4: 3 + 4 + 1
    assert level_halo(HEAD, 0, 6, 100) == 8


def test_level_halo_post_diff_by_hand() -> None:
    # I reaches 2; up(down(I)): a 2x2 mean (1) then bspline 2*1 + 2 = 4
    config = dataclasses.replace(DESIGN, blend="post_diff")
    assert [level_halo(config, level, 4, 100) for level in range(4)] == [4, 4, 4, 2]


def test_level_halo_guide_by_hand() -> None:
    # bspline: up(O_{k+1}) at the pixel reaches 2, as the features do: the design's halo
    guided = dataclasses.replace(DESIGN, guide="centre")
    assert [level_halo(guided, level, 4, 100) for level in range(4)] == [2, 2, 2, 2]
    # bilinear reaches 3: the kernels, and so I and O, are 3 deep; the coarsest has no guide
    # but its own X, so only its features and apply (2)
    bilinear = dataclasses.replace(guided, up="bilinear")
    assert [level_halo(bilinear, level, 4, 100) for level in range(4)] == [3, 3, 3, 2]


def test_receptive_radius_design_by_hand() -> None:
    # O_3 = I_3 reaches 2; O_2 = max(2*2 + 2, 2) = 6; O_1 = 14; O_0 = 30
    assert receptive_radius(DESIGN, 4) == 30
    assert receptive_radius(DESIGN, 6) == 126
    # the reason for level-wise tiles: vkdt's 6-level inference reaches 317 pixels
    assert receptive_radius(VKDT_2024, 6) == 317


@pytest.mark.parametrize(
    ("config", "tight"),
    [
        (DESIGN, True),
        (dataclasses.replace(DESIGN, blend="post_diff"), True),
        (dataclasses.replace(VKDT_2024, precision="fp32", denoise_levels=0), False),
        (
            dataclasses.replace(
                HEAD,
                precision="fp32",
                block_transpose=False,
                vkdt_kernel_grad_untransposed=False,
                n_hidden=2,
            ),
            False,
        ),
    ],
    ids=["design", "post_diff", "vkdt_2024_all_levels", "patch8x8"],
)
def test_receptive_radius_bounds_a_pixel_reach(config: ModelConfig, tight: bool) -> None:
    """Changing one pixel changes the output only within the radius plus the pixel's
    place in the coarsest grid (the radius is for grid-aligned crops). For box2 and
    bspline the bound is reached; binomial5, bilinear's drift and plain kernels (whose
    out-of-range weights are constants) stay inside it."""
    levels = 3
    model = random_model(config)
    radius = receptive_radius(config, levels)
    slack = 2 ** (levels + (config.blend == "add") - 1) - 1
    size = 2 * (radius + slack) + 2 * 2**levels
    weights = [w.double() for w in model.mlp.weights]
    noisy = noisy_image(size, size).double()
    base = kpn_forward(noisy, NOISE.double(), weights, config, levels).output
    py = px = size // 2 + slack  # the last pixel of a block of the coarsest level
    noisy[..., py, px] += 0.5
    delta = (kpn_forward(noisy, NOISE.double(), weights, config, levels).output - base).abs()
    where = (delta.amax(1)[0] > 0).nonzero()
    reach = int((where - torch.tensor([py, px])).abs().max())
    assert reach <= radius + slack
    if tight:
        assert reach == radius + slack


def test_mip_band_halo() -> None:
    assert mip_band_halo("box2", 7) == 0
    assert mip_band_halo("box2_vkdt", 7) == 0
    # binomial5: depth 1 on M_1, then 2 on every level: 2 rows of M_6 = 128 of M_0
    assert mip_band_halo("binomial5", 7) == 128


# --- plan ------------------------------------------------------------------------------
@pytest.mark.parametrize(("height", "width"), [(1, 1), (1, 37), (37, 1), (45, 77), (64, 64)])
@pytest.mark.parametrize("stripes", [False, True])
def test_plan_level_partitions_the_level(height: int, width: int, stripes: bool) -> None:
    tile, halo = 10, 3
    windows = plan_level(height, width, tile, halo, stripes=stripes)
    count = torch.zeros(height, width, dtype=torch.int64)
    step = stripe_alignment(width) if stripes else 2
    for w in windows:
        count[w.core_top : w.core_bottom, w.core_left : w.core_right] += 1
        assert 0 <= w.top <= w.core_top < w.core_bottom <= w.bottom <= height
        assert 0 <= w.left <= w.core_left < w.core_right <= w.right <= width
        # crops start on the coarse grid (and, in stripes, on whole blocks of 16)
        assert w.top % step == 0 and w.left % 2 == 0
        assert w.bottom == height or w.bottom % step == 0
        assert w.right == width or w.right % 2 == 0
        # the halo is there unless the level ends
        assert w.top == 0 or w.core_top - w.top >= halo
        assert w.left == 0 or w.core_left - w.left >= halo
        assert w.bottom == height or w.bottom - w.core_bottom >= halo
        assert w.right == width or w.right - w.core_right >= halo
        if stripes:
            assert (w.left, w.right) == (0, width)
            assert w.top * width % 16 == 0
    assert bool((count == 1).all())  # every pixel in exactly one core


def test_stripe_alignment() -> None:
    assert stripe_alignment(64) == 2  # whole blocks in every row
    assert stripe_alignment(100) == 4  # 4 * 100 = 400 = 25 blocks
    assert stripe_alignment(37) == 16
    assert stripe_alignment(8) == 2


def test_window_slices() -> None:
    window = Window(4, 6, 13, 21, 6, 8, 11, 19)
    assert window.core == (slice(2, 7), slice(2, 13))
    assert window.coarse == (slice(2, 7), slice(3, 11))


def test_plan_tiles_counts_and_refusals() -> None:
    plan = plan_tiles(100, 60, DESIGN, 4, 32)
    # level sizes 100x60, 50x30, 25x15, 13x8: 4x2 + 2x1 + 1 + 1 tiles
    assert plan.sizes == tuple(level_sizes(100, 60, 4))
    assert [len(level) for level in plan.windows] == [8, 2, 1, 1]
    assert plan.tiles == 12
    with pytest.raises(KpnError, match="levels = 0"):
        plan_tiles(10, 10, DESIGN, 0)
    with pytest.raises(KpnError, match="tile size"):
        plan_level(10, 10, 0, 2)


# --- global mips -----------------------------------------------------------------------
@pytest.mark.parametrize("down", ["box2", "binomial5", "box2_vkdt"])
@pytest.mark.parametrize(("height", "count"), [(1, 4), (5, 3), (101, 6), (203, 7)])
def test_global_mips_in_bands_equal_whole(
    monkeypatch: pytest.MonkeyPatch, down: str, height: int, count: int
) -> None:
    """Bands of a few rows (odd heights: the last block hangs past the edge) are exact."""
    monkeypatch.setattr(tiling, "BAND_PIXELS", 1)
    config = dataclasses.replace(DESIGN, down=down, levels=count)
    image = noisy_image(height, 7)
    plan = plan_tiles(height, 7, config, count, 8)
    assert plan.band_rows < height or height < 2 ** (count - 1)
    bands = global_mips(image, config, plan)
    whole = mip_pyramid(image, count, down)
    assert bands[0] is image
    for mine, expected in zip(bands, whole, strict=True):
        torch.testing.assert_close(mine, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("height", "count"), [(5, 3), (101, 6), (203, 7)])
def test_mipcomp_mips_in_bands_equal_whole(
    monkeypatch: pytest.MonkeyPatch, height: int, count: int
) -> None:
    """vkdt-f16's box2 is mip.comp's (three levels from a stored base, in float32): bands of
    a few rows, odd heights included, give the whole image's mips bit for bit."""
    monkeypatch.setattr(tiling, "BAND_PIXELS", 1)
    config = dataclasses.replace(DESIGN, levels=count, precision="vkdt-f16")
    image = noisy_image(height, 7).float()
    plan = plan_tiles(height, 7, config, count, 8)
    bands = global_mips(image, config, plan)
    whole = mip_pyramid(image, count, "box2", stored_image(config), vkdt_order=True)
    for mine, expected in zip(bands, whole, strict=True):
        torch.testing.assert_close(mine, expected, rtol=0, atol=0)


# --- tiled == untiled ------------------------------------------------------------------
# odd and even sizes; tiles of 8 (every level cut, halos larger than cores) and larger
SIZES_TILES = [(h, w, tile) for h, w in [(37, 53), (64, 48), (101, 67)] for tile in (8, 12, 22)]


@pytest.mark.parametrize("name", list(CASES))
def test_tiled_equals_untiled(name: str) -> None:
    config = CASES[name]
    model = random_model(config)
    levels = 6 if config.blend == "add" else 4
    for height, width, tile in SIZES_TILES:
        noisy = noisy_image(height, width)
        with torch.no_grad():
            expected = kpn_forward(noisy, NOISE, model.mlp.weights, config, levels).output
            got = tiled_forward(noisy, NOISE, model.mlp.weights, config, levels, tile)
        assert plan_tiles(height, width, config, levels, tile).windows[0][1:]  # tiled
        assert (got - expected).abs().max() <= 1e-5, (height, width, tile)


@pytest.mark.parametrize("name", ["design", "add_binomial5_bilinear", "vkdt_head_w32"])
@pytest.mark.parametrize(("height", "width"), [(1, 1), (1, 300), (300, 1), (3, 2)])
def test_tiled_equals_untiled_degenerate_sizes(name: str, height: int, width: int) -> None:
    config = CASES[name]
    model = random_model(config)
    noisy = noisy_image(height, width)
    with torch.no_grad():
        expected = kpn_forward(noisy, NOISE, model.mlp.weights, config, 6).output
        got = tiled_forward(noisy, NOISE, model.mlp.weights, config, 6, 8)
    assert (got - expected).abs().max() <= 1e-5


def test_tiled_equals_untiled_with_bands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tiling, "BAND_PIXELS", 64)
    config = CASES["add_binomial5_bilinear"]
    model = random_model(config)
    noisy = noisy_image(77, 45)
    with torch.no_grad():
        expected = kpn_forward(noisy, NOISE, model.mlp.weights, config, 5).output
        got = tiled_forward(noisy, NOISE, model.mlp.weights, config, 5, 16)
    assert (got - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("name", ["design", "add_binomial5_bilinear", "vkdt_head_w32"])
def test_without_halo_the_seams_show(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """The equality above is not free: crops without their halo give other values."""
    config = CASES[name]
    model = random_model(config)
    noisy = noisy_image(64, 48)
    monkeypatch.setattr(tiling, "level_halo", lambda *args: 0)
    with torch.no_grad():
        expected = kpn_forward(noisy, NOISE, model.mlp.weights, config, 4).output
        got = tiled_forward(noisy, NOISE, model.mlp.weights, config, 4, 8)
    assert (got - expected).abs().max() > 1e-3


def test_batch_and_output_view() -> None:
    """Two images with their own profiles; O_0 written into a strided view of [H,W,3]."""
    model = random_model(DESIGN)
    noisy = noisy_image(41, 30, batch=2)
    noise_ab = torch.tensor([[1e4, 5.0], [4e5, 80.0]])
    storage = torch.empty(2, 41, 30, 3)
    out = storage.permute(0, 3, 1, 2)
    with torch.no_grad():
        expected = kpn_forward(noisy, noise_ab, model.mlp.weights, DESIGN).output
        got = tiled_forward(noisy, noise_ab, model.mlp.weights, DESIGN, tile=8, out=out)
    assert got is out
    torch.testing.assert_close(storage.permute(0, 3, 1, 2), expected, rtol=0, atol=1e-5)


def test_strided_input_and_progress() -> None:
    model = random_model(DESIGN)
    hwc = noisy_image(40, 50)[0].permute(1, 2, 0).contiguous()  # as an image file holds it
    calls: list[int] = []
    with torch.no_grad():
        expected = kpn_forward(
            hwc.permute(2, 0, 1)[None].contiguous(), NOISE, model.mlp.weights, DESIGN
        )
        got = tiled_forward(
            hwc.permute(2, 0, 1)[None],
            NOISE,
            model.mlp.weights,
            DESIGN,
            tile=16,
            progress=calls.append,
        )
    assert (got - expected.output).abs().max() <= 1e-5
    assert calls == [1] * plan_tiles(40, 50, DESIGN, 4, 16).tiles


def test_refuses_bad_input() -> None:
    model = random_model(DESIGN)
    noisy = noisy_image(20, 20)
    noisy[0, 1, 3, 4] = math.nan
    with pytest.raises(KpnError, match="NaN"):
        tiled_forward(noisy, NOISE, model.mlp.weights, DESIGN, tile=8)
    with pytest.raises(KpnError, match=">= 0"):
        tiled_forward(noisy_image(20, 20), -NOISE, model.mlp.weights, DESIGN, tile=8)
    with pytest.raises(KpnError, match=r"outside 1\.\.16"):
        tiled_forward(noisy_image(20, 20), NOISE, model.mlp.weights, DESIGN, 17, 8)
