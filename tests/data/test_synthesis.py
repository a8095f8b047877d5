"""Tests for kpn.data.synthesis: vkdt's cnngenin (docs/design.md §8), seeded."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch.testing import assert_close

from kpn.config import DataConfig
from kpn.data.synthesis import (
    TileDraw,
    add_grain,
    add_noise,
    bayer_mosaic,
    cut_tile,
    draw_noise_profile,
    draw_offset,
    draw_tile,
    synthesize,
    uniforms,
)


def seeded(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def uniform_draws(seed: int, count: int) -> list[float]:
    return uniforms(count, seeded(seed))


def ramp_image(height: int, width: int) -> torch.Tensor:
    """``[3,H,W]`` with value 100*c + 10*y + x: every pixel and channel tells where it is."""
    c = torch.arange(3.0)[:, None, None]
    y = torch.arange(float(height))[None, :, None]
    x = torch.arange(float(width))[None, None, :]
    return 100 * c + 10 * y + x


# ---------------------------------------------------------------- grain


def test_grain_off_is_the_tile_itself_and_draws_nothing():
    clean, generator = torch.rand(3, 8, 8), seeded(5)
    assert add_grain(clean, 0.0, generator) is clean
    assert torch.equal(torch.rand(4, generator=generator), torch.rand(4, generator=seeded(5)))


@pytest.mark.parametrize("seed", range(12))
def test_grain_std_on_the_srgb_scale(seed: int):
    """u < 1/2 leaves the tile; else white grain of std (2u - 1) grain / slope, the sRGB
    curve's slope at the value: 12.92 at 0.002, 1.055/2.4 * 0.18^(1/2.4 - 1) = 1.2011 at
    18% grey (by hand). 3 x 300 x 150 samples per level: the sample std's relative sd is
    1/sqrt(2n) = 0.19%; allowed 1.5%."""
    levels = torch.tensor([0.002, 0.18])[:, None, None, None]  # two flat [3,300,150] halves
    clean = levels.expand(2, 3, 300, 150).permute(1, 2, 0, 3).reshape(3, 300, 300)
    u = float(torch.rand((), generator=seeded(seed), dtype=torch.float64))
    grainy = add_grain(clean, 0.01, seeded(seed))
    if u < 0.5:
        assert torch.equal(grainy, clean)
        return
    for half, slope in ((slice(0, 150), 12.92), (slice(150, 300), 1.2011)):
        spread = (grainy - clean)[..., half].double().std().item()
        assert spread == pytest.approx((2 * u - 1) * 0.01 / slope, rel=0.015)


def test_grain_on_half_the_tiles_and_of_the_reference_only():
    """synthesize with data.grain: the same tile and noise profile as without; about half
    the references carry grain, within 6 sd of its largest std (where the slope is least)."""
    image = torch.rand(3, 40, 40) * 0.8 + 0.1
    plain, grainy = DataConfig(generate=2), DataConfig(generate=2, grain=0.02)
    changed = 0
    for seed in range(40):
        without = synthesize(image, None, None, plain, 16, "anywhere", None, seeded(seed))
        with_grain = synthesize(image, None, None, grainy, 16, "anywhere", None, seeded(seed))
        assert torch.equal(without.noise_ab, with_grain.noise_ab)
        grain = with_grain.reference - without.reference
        changed += bool(grain.abs().max() > 0)
        assert grain.abs().max() < 6 * 0.02 / 0.467  # 6 sd where the slope is least, at 0.9
    assert 10 <= changed <= 30  # binomial(40, 1/2): 4.5 sd either side


# ---------------------------------------------------------------- noise


@pytest.mark.parametrize(
    ("a", "b"), [(1e4, 10.0), (65535.0 * 1000 * 0.37, 1000 * 0.81), (0.0, 200.0), (5e5, 0.0)]
)
def test_noise_variance_matches_profile(a: float, b: float):
    # 1.08 million samples per level (3 channels x 600 x 600). The sample variance of n
    # normal samples has relative standard deviation sqrt(2/(n-1)) = 1.36e-3; we allow
    # 5 of those (0.68%). The mean may stray by 5 sigma/sqrt(n).
    levels = [-0.1, 0.0, 0.01, 0.25, 1.0, 3.0]
    n = 3 * 600 * 600
    generator = seeded(4)
    for x in levels:
        clean = torch.full((3, 600, 600), x)
        noisy = add_noise(clean, torch.tensor([a, b]), generator)
        expected = (a + 65535 * max(x, 0.0) * b) / 65535**2
        diff = (noisy - clean).double()
        if expected == 0:  # a = 0 and no signal: no noise at all
            assert torch.equal(noisy, clean)
            continue
        variance = diff.var().item()
        assert abs(variance / expected - 1) < 5 * math.sqrt(2 / (n - 1)), (x, variance, expected)
        assert abs(diff.mean().item()) < 5 * math.sqrt(expected / n)


def test_noise_is_independent_per_channel_and_pixel():
    clean = torch.full((3, 300, 300), 0.5)
    z = add_noise(clean, torch.tensor([1e6, 100.0]), seeded(2)) - clean
    flat = z.reshape(3, -1).double()
    correlation = torch.corrcoef(flat)
    # n = 90000: the correlation of independent samples has sd 1/sqrt(n) = 0.0033
    assert (correlation - torch.eye(3, dtype=torch.float64)).abs().max() < 5 / 300
    neighbours = torch.corrcoef(torch.stack([z[:, :, :-1].reshape(-1), z[:, :, 1:].reshape(-1)]))
    assert abs(neighbours[0, 1].item()) < 5 / math.sqrt(z[:, :, 1:].numel())


def test_zero_profile_adds_no_noise():
    clean = torch.rand(3, 8, 8, generator=seeded())
    assert torch.equal(add_noise(clean, torch.zeros(2), seeded()), clean)


# ---------------------------------------------------------------- mosaic


def test_bayer_mosaic_hand_checked_4x4():
    # design §8: (x+y) odd -> green; else y odd -> blue; else red. Values 100*c + 10*y + x.
    expected = torch.tensor(
        [
            [0.0, 101, 2, 103],  # y 0: R G R G
            [110, 211, 112, 213],  # y 1: G B G B
            [20, 121, 22, 123],  # y 2: R G R G
            [130, 231, 132, 233],  # y 3: G B G B
        ]
    )
    mosaic = bayer_mosaic(ramp_image(4, 4))
    assert mosaic.shape == (3, 4, 4)
    for channel in range(3):
        assert torch.equal(mosaic[channel], expected)


def test_bayer_mosaic_batched_and_odd_sizes():
    image = torch.stack([ramp_image(3, 5), ramp_image(3, 5) + 1000])
    mosaic = bayer_mosaic(image)
    assert torch.equal(mosaic[0], bayer_mosaic(image[0]))
    assert torch.equal(mosaic[1], bayer_mosaic(image[1]))
    assert mosaic[0, 0, 2, 4].item() == 0 * 100 + 10 * 2 + 4  # (4, 2): even, y even: red


# ---------------------------------------------------------------- tiles, flips, offsets


def test_cut_tile_hand_checked_flips_and_mirror():
    image = torch.arange(16.0).view(1, 4, 4)  # value 4*y + x
    plain = cut_tile(image, TileDraw(0.0, False, False, 0, 0), 4)
    assert torch.equal(plain, image)
    flipped_x = cut_tile(image, TileDraw(0.0, True, False, 0, 0), 4)
    assert flipped_x[0, 0].tolist() == [3.0, 2.0, 1.0, 0.0]
    assert torch.equal(flipped_x, image.flip(-1))
    flipped_y = cut_tile(image, TileDraw(0.0, False, True, 0, 0), 4)
    assert torch.equal(flipped_y, image.flip(-2))
    both = cut_tile(image, TileDraw(0.0, True, True, 0, 0), 4)
    assert torch.equal(both, image.flip(-1, -2))
    # offset 2 on a width of 4: columns 2, 3, then mirrored including the edge: 3, 2
    shifted = cut_tile(image, TileDraw(0.0, False, False, 2, 3), 4)
    assert shifted[0, 0].tolist() == [14.0, 15.0, 15.0, 14.0]  # row 3
    assert shifted[0, :, 0].tolist() == [14.0, 14.0, 10.0, 6.0]  # rows 3, 4 -> 3, 5 -> 2, 6 -> 1
    # flip x with offset: tile x reads image column mirror(offset + T-1-x)
    flipped_shifted = cut_tile(image, TileDraw(0.0, True, False, 1, 0), 3)
    assert flipped_shifted[0, 0].tolist() == [3.0, 2.0, 1.0]
    # and past the edge: columns mirror(2 + 3, 2 + 2, 2 + 1, 2 + 0) = 2, 3, 3, 2
    flipped_mirrored = cut_tile(image, TileDraw(0.0, True, False, 2, 0), 4)
    assert flipped_mirrored[0, 0].tolist() == [2.0, 3.0, 3.0, 2.0]


def test_draw_offset_laws():
    assert draw_offset(100, 64, "anywhere", 0.999) == 99  # vkdt: int(size * u)
    assert draw_offset(100, 64, "inside", 0.999) == 36  # int((100 - 64 + 1) * u)
    assert draw_offset(100, 64, "inside", 0.0) == 0
    assert draw_offset(64, 64, "inside", 0.999) == 0


def test_draw_tile_mode_0_is_static():
    config = DataConfig(generate=0)
    for seed in range(5):
        assert draw_tile(100, 90, 64, config, "anywhere", uniform_draws(seed, 4)) == TileDraw(
            0.0, False, False, 0, 0
        )


def test_draw_tile_flips_ev_and_offsets_are_uniform():
    config = DataConfig(generate=1, ev_min=-1.0, ev_max=3.0)
    draws = [draw_tile(50, 200, 8, config, "anywhere", uniform_draws(s, 4)) for s in range(2000)]
    combos = [(d.flip_x, d.flip_y) for d in draws]
    for combo in [(False, False), (True, False), (False, True), (True, True)]:
        # each combination 1/4: sd of the count is sqrt(2000 * 3/16) = 19.4
        assert abs(combos.count(combo) - 500) < 5 * 19.4
    evs = torch.tensor([d.ev for d in draws])
    assert evs.min() >= -1.0 and evs.max() < 3.0
    assert abs(evs.mean().item() - 1.0) < 5 * 4 / math.sqrt(12 * 2000)
    xs = torch.tensor([d.offset_x for d in draws])
    ys = torch.tensor([d.offset_y for d in draws])
    assert xs.min() >= 0 and xs.max() <= 199 and xs.max() > 190
    assert ys.min() >= 0 and ys.max() <= 49 and ys.max() > 45


def test_cut_tile_transposes_after_the_flips():
    """Tile pixel (x, y) of a transposed draw is pixel (y, x) of the untransposed one, inside
    the image and past its edge."""
    image = torch.arange(20.0).view(1, 4, 5)  # value 5*y + x
    inside = cut_tile(image, TileDraw(0.0, True, False, 1, 0, transpose=True), 3)
    assert inside[0, 0].tolist() == [3.0, 8.0, 13.0]  # column x = 3 (flipped: 1 + 2 - 0)
    assert torch.equal(inside, cut_tile(image, TileDraw(0.0, True, False, 1, 0), 3).mT)
    past = TileDraw(0.0, False, True, 3, 2, transpose=True)
    assert torch.equal(
        cut_tile(image, past, 4), cut_tile(image, TileDraw(0.0, False, True, 3, 2), 4).mT
    )


def test_draw_tile_transposes_half_the_tiles_and_keeps_vkdts_draws_without():
    """data.transpose: each of the 8 flip and transpose combinations 1/8; off, vkdt's
    draws (flips from int(4 u)) are unchanged and nothing is transposed."""
    on = DataConfig(generate=1, transpose=True)
    draws = [draw_tile(50, 60, 8, on, "anywhere", uniform_draws(s, 4)) for s in range(2000)]
    combos = [(d.flip_x, d.flip_y, d.transpose) for d in draws]
    for combo in {(x, y, t) for x in (False, True) for y in (False, True) for t in (False, True)}:
        assert abs(combos.count(combo) - 250) < 5 * 14.8  # sd sqrt(2000 * 7/64)
    off = DataConfig(generate=1)
    for seed in range(50):
        draw = draw_tile(50, 60, 8, off, "anywhere", uniform_draws(seed, 4))
        flip = int(4 * uniform_draws(seed, 4)[1])
        assert not draw.transpose and (draw.flip_x, draw.flip_y) == (bool(flip & 1), bool(flip & 2))


@pytest.mark.parametrize(("flip_x", "flip_y"), [(False, False), (True, False), (False, True)])
def test_disabled_flips_never_happen(flip_x: bool, flip_y: bool):
    config = DataConfig(generate=1, flip_x=flip_x, flip_y=flip_y)
    draws = [draw_tile(64, 64, 64, config, "anywhere", uniform_draws(s, 4)) for s in range(200)]
    assert any(d.flip_x for d in draws) == flip_x
    assert any(d.flip_y for d in draws) == flip_y


# ---------------------------------------------------------------- noise profile laws


def test_noise_profile_uniform_is_vkdt_law_by_default():
    config = DataConfig()
    profiles = torch.stack(
        [draw_noise_profile(config, None, uniform_draws(s, 2)) for s in range(2000)]
    )
    a, b = profiles.double().unbind(1)
    assert a.min() >= 0 and a.max() < 1000 * 65535 and b.min() >= 0 and b.max() < 1000
    # uniform means: 1000*65535/2 and 500, sd of the mean range/sqrt(12 n)
    assert abs(a.mean().item() / (1000 * 65535 / 2) - 1) < 5 * 2 / math.sqrt(12 * 2000)
    assert abs(b.mean().item() / 500 - 1) < 5 * 2 / math.sqrt(12 * 2000)


def test_noise_profile_loguniform_spreads_decades_evenly():
    config = DataConfig(
        noise="loguniform", noise_a_min=10.0, noise_a_max=1e6, noise_b_min=0.1, noise_b_max=100.0
    )
    profiles = torch.stack(
        [draw_noise_profile(config, None, uniform_draws(s, 2)) for s in range(4000)]
    )
    log_a = profiles[:, 0].double().log10()
    log_b = profiles[:, 1].double().log10()
    assert log_a.min() >= 1 - 1e-6 and log_a.max() <= 6 + 1e-6
    # each decade of a (5 of them) about 1/5 of the draws: sd sqrt(4000*0.2*0.8) = 25.3
    counts = torch.histc(log_a, bins=5, min=1, max=6)
    assert (counts - 800).abs().max() < 5 * 25.3
    assert abs(log_b.mean().item() - 0.5) < 5 * 3 / math.sqrt(12 * 4000)


def test_noise_profile_loglevel_spreads_mid_grey_decades_evenly():
    # mid-grey variance a + 65535/2 b from 100 + 32767.5 * 0.1 to 1e6 + 32767.5 * 100
    config = DataConfig(
        noise="loglevel", noise_a_min=100.0, noise_a_max=1e6, noise_b_min=0.1, noise_b_max=100.0
    )
    profiles = torch.stack(
        [draw_noise_profile(config, None, uniform_draws(s, 2)) for s in range(4000)]
    ).double()
    a, b = profiles.unbind(1)
    assert a.min() >= 100 and a.max() <= 1e6 and b.min() >= 0.1 and b.max() <= 100
    # away from the clamps, log v is uniform: its lowest decade above the floor and a
    # decade near the top hold about as many draws (sd of each ~ sqrt(4000 p) = 19)
    variance = a + 32767.5 * b
    low, high = 100 + 32767.5 * 0.1, 1e6 + 32767.5 * 100
    per_decade = 4000 / math.log10(high / low)
    quiet = ((variance >= low) & (variance < 10 * low)).sum().item()
    loud = ((variance >= high / 20) & (variance < high / 2)).sum().item()
    assert abs(quiet - per_decade) < 5 * math.sqrt(per_decade)
    assert abs(loud - per_decade) < 5 * math.sqrt(per_decade)
    # where neither is clamped, the shot share of the mid-grey variance is u2 itself
    inside = 1 + 1e-6  # float32's 0.1 lies above float64's
    free = (a > 100 * inside) & (a < 1e6 / inside) & (b > 0.1 * inside) & (b < 100 / inside)
    u2 = torch.tensor([uniform_draws(s, 2)[1] for s in range(4000)], dtype=torch.float64)
    assert free.sum() > 3000
    assert_close((32767.5 * b / variance)[free], u2[free], rtol=1e-5, atol=0)


def test_noise_profile_loglevel_draws_quiet_tiles_three_times_as_often():
    """The shipped ranges (configs/photos-post-diff.toml): ISO 800's mid-grey variance
    (Sony A7III, 58 + 32767.5 * 0.512) or less, one tile in 22 under loguniform, where a
    and b must both be low, one in 7 under loglevel (docs/design.md §8)."""
    shipped = {"noise_a_min": 100.0, "noise_a_max": 2e8, "noise_b_min": 0.1, "noise_b_max": 4000.0}
    iso_800 = 58.31 + 32767.5 * 0.5121
    shares = {}
    for law in ("loguniform", "loglevel"):
        config = DataConfig(noise=law, **shipped)
        drawn = torch.stack(
            [draw_noise_profile(config, None, uniform_draws(s, 2)) for s in range(4000)]
        ).double()
        shares[law] = (drawn[:, 0] + 32767.5 * drawn[:, 1] <= iso_800).double().mean().item()
    # sd of a share near 0.05 over 4000 draws: 0.0035
    assert abs(shares["loguniform"] - 0.046) < 0.015
    assert abs(shares["loglevel"] - 0.144) < 0.025


def test_noise_profile_loglevel_by_hand():
    config = DataConfig(
        noise="loglevel", noise_a_min=100.0, noise_a_max=1e6, noise_b_min=0.1, noise_b_max=100.0
    )
    low, high = 100 + 32767.5 * 0.1, 1e6 + 32767.5 * 100
    # u1 = 0.5: the geometric mean of the bounds; u2 = 0.25: a quarter of it is shot noise
    variance = math.sqrt(low * high)
    assert_close(
        draw_noise_profile(config, None, (0.5, 0.25)),
        torch.tensor((0.75 * variance, 0.25 * variance / 32767.5), dtype=torch.float32),
    )
    # u2 = 0: no shot noise asked for, b clamped up to its floor
    a, b = draw_noise_profile(config, None, (0.0, 0.0)).tolist()
    assert_close((a, b), (low, 0.1), rtol=1e-6, atol=0)


def test_noise_profile_cameras_draws_each_profile():
    cameras = torch.tensor([[100.0, 1.0], [2000.0, 3.0], [50.0, 0.5]])
    config = DataConfig(noise="cameras", nprof_dir="unused")
    drawn = torch.stack(
        [draw_noise_profile(config, cameras, uniform_draws(s, 2)) for s in range(900)]
    )
    for row in cameras:
        count = (drawn == row).all(1).sum().item()
        assert abs(count - 300) < 5 * math.sqrt(900 * 2 / 9)
    with pytest.raises(ValueError):
        draw_noise_profile(config, None, [0.5, 0.5])


# ---------------------------------------------------------------- synthesize, all modes


def test_mode_0_static_top_left_tile_without_noise():
    reference = ramp_image(10, 12)
    sample = synthesize(
        reference, None, None, DataConfig(generate=0), 4, "anywhere", None, seeded()
    )
    assert torch.equal(sample.reference, reference[:, :4, :4])
    assert torch.equal(sample.noisy, reference[:, :4, :4])
    assert torch.equal(sample.noise_ab, torch.zeros(2))


def test_mode_0_of_a_real_pair_keeps_its_input_and_profile():
    reference = ramp_image(10, 12)
    noisy = reference + 0.5
    sample = synthesize(
        reference,
        noisy,
        torch.tensor([300.0, 2.0]),
        DataConfig(generate=0),
        4,
        "anywhere",
        None,
        seeded(),
    )
    assert torch.equal(sample.noisy, noisy[:, :4, :4])
    assert torch.equal(sample.noise_ab, torch.tensor([300.0, 2.0]))


def test_mode_1_exposure_scales_both_images_and_a_real_profile():
    reference = torch.rand(3, 16, 16, generator=seeded(3))
    noisy = reference + 0.25
    config = DataConfig(generate=1, ev_min=1.5, ev_max=1.5, flip_x=False, flip_y=False)
    sample = synthesize(
        reference, noisy, torch.tensor([100.0, 10.0]), config, 16, "inside", None, seeded()
    )
    gain = 2**1.5
    assert_close(sample.reference, reference * gain)
    assert_close(sample.noisy, noisy * gain)
    # noise of k*x: variance k^2 (a + 65535 x b) = k^2 a + 65535 (k x) (k b)
    assert_close(sample.noise_ab, torch.tensor([100.0 * gain**2, 10.0 * gain]))


def test_mode_1_without_noisy_input_is_the_reference():
    reference = torch.rand(3, 20, 20, generator=seeded(3))
    sample = synthesize(
        reference, None, None, DataConfig(generate=1), 8, "anywhere", None, seeded()
    )
    assert torch.equal(sample.noisy, sample.reference)
    assert torch.equal(sample.noise_ab, torch.zeros(2))


def test_mode_1_tile_is_a_flipped_exposed_window():
    reference = ramp_image(30, 40)
    config = DataConfig(generate=1)
    generator = seeded(11)
    sample = synthesize(reference, None, None, config, 8, "anywhere", None, generator)
    draw = draw_tile(30, 40, 8, config, "anywhere", uniforms(6, seeded(11))[:4])
    assert_close(sample.reference, cut_tile(reference, draw, 8) * 2**draw.ev)


def test_mode_2_noise_after_exposure_with_drawn_profile():
    reference = torch.full((3, 200, 200), 0.3)
    config = DataConfig(generate=2, ev_min=1.0, ev_max=1.0)
    sample = synthesize(reference, None, None, config, 200, "inside", None, seeded(5))
    assert_close(sample.reference, torch.full((3, 200, 200), 0.6))
    a, b = sample.noise_ab.tolist()
    assert 0 <= a < 1000 * 65535 and 0 <= b < 1000
    expected = (a + 65535 * 0.6 * b) / 65535**2
    variance = (sample.noisy - sample.reference).double().var().item()
    n = sample.noisy.numel()
    assert abs(variance / expected - 1) < 5 * math.sqrt(2 / n)


def test_mode_2_replaces_a_real_noisy_input():
    reference = torch.full((3, 16, 16), 0.5)
    noisy = torch.full((3, 16, 16), 100.0)
    profile = torch.tensor([1.0, 1.0])
    config = DataConfig(generate=2)
    sample = synthesize(reference, noisy, profile, config, 16, "inside", None, seeded())
    assert (sample.noisy < 50).all()  # the file's input is not used: vkdt's cnngenin


def test_mode_3_mosaic_without_noise():
    reference = ramp_image(4, 4)
    config = DataConfig(generate=3, ev_min=0.0, ev_max=0.0, flip_x=False, flip_y=False)
    sample = synthesize(reference, None, None, config, 4, "inside", None, seeded())
    assert torch.equal(sample.reference, reference)
    assert torch.equal(sample.noisy, bayer_mosaic(reference))
    assert torch.equal(sample.noise_ab, torch.zeros(2))


def test_mode_4_noise_then_mosaic():
    reference = torch.full((3, 64, 64), 0.5)
    reference[1] = 0.25
    config = DataConfig(generate=4, ev_min=0.0, ev_max=0.0)
    sample = synthesize(reference, None, None, config, 64, "inside", None, seeded(9))
    assert torch.equal(sample.noisy[0], sample.noisy[1])
    assert torch.equal(sample.noisy[0], sample.noisy[2])
    # the mosaic picks noisy values: red sites around 0.5, green around 0.25, all noisy
    red = sample.noisy[0, 0::2, 0::2]
    green = sample.noisy[0, 0::2, 1::2]
    a, b = sample.noise_ab.tolist()
    sigma_red = math.sqrt(a + 65535 * 0.5 * b) / 65535
    assert abs(red.mean().item() - 0.5) < 5 * sigma_red / 32
    assert abs(green.mean().item() - 0.25) < 5 * sigma_red / 32
    assert red.std().item() > 0.5 * sigma_red


@pytest.mark.parametrize("generate", [0, 1, 2, 3, 4])
def test_same_seed_same_tile(generate: int):
    reference = torch.rand(3, 40, 30, generator=seeded(7))
    config = DataConfig(generate=generate)
    first = synthesize(reference, None, None, config, 16, "anywhere", None, seeded(42))
    again = synthesize(reference, None, None, config, 16, "anywhere", None, seeded(42))
    other = synthesize(reference, None, None, config, 16, "anywhere", None, seeded(43))
    for field in dataclasses.fields(first):
        assert torch.equal(getattr(first, field.name), getattr(again, field.name))
    if generate:
        assert not torch.equal(first.noisy, other.noisy)


def test_real_input_needs_its_profile():
    image = torch.rand(3, 8, 8)
    with pytest.raises(ValueError):
        synthesize(image, image, None, DataConfig(generate=1), 8, "inside", None, seeded())
