"""Tests for kpn.data.deadleaves: the built-in procedural training images."""

from __future__ import annotations

import math

import pytest
import torch

from kpn.data.deadleaves import (
    UNCOVERED,
    Scene,
    draw_scenes,
    inverse_radius_law,
    leaf_count,
    leaf_owners,
    render_scenes,
    triangle_wave,
    visible_radius_weights,
)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def render_alone(size: int | tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """One dead-leaves image ``[3,H,W]``, drawn and rendered in a batch of its own."""
    height, width = (size, size) if isinstance(size, int) else size
    return render_scenes(draw_scenes(height, width, [generator]), height, width)[0]


def flat_scene(centres: list[tuple[float, float]], radii: list[float]) -> Scene:
    """Leaves of constant colour (their index + 1 in every channel), no texture or blur."""
    count = len(radii) + 1
    return Scene(
        centre=torch.tensor([*centres, (0.0, 0.0)]),
        radius=torch.tensor([*radii, math.inf]),
        colour=torch.arange(1.0, count + 1)[:, None].expand(count, 3).contiguous(),
        slope=torch.zeros(count, 2),
        wave=torch.zeros(count, 3),
        amplitude=torch.zeros(count),
        shading=torch.zeros(2),
        blur=torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0]),
    )


def test_owners_hand_checked():
    # leaf 0 (front): radius 1.5 at (2, 2) covers the 3x3 block around it ((1,1) is at
    # distance 1.41, (2,0) at 2). Leaf 1: radius 1 at (3, 3) covers (3,3) and its four
    # neighbours inside the window, behind leaf 0. Everything else: the background, 2.
    scene = flat_scene([(2.0, 2.0), (3.0, 3.0)], [1.5, 1.0])
    owners = leaf_owners([scene], 5, 5)[0]
    expected = torch.tensor(
        [
            [2, 2, 2, 2, 2],
            [2, 0, 0, 0, 2],
            [2, 0, 0, 0, 2],
            [2, 0, 0, 0, 1],
            [2, 2, 2, 1, 2],
        ]
    )
    assert torch.equal(owners, expected)
    image = render_scenes([scene], 5, 5)[0]
    assert torch.equal(image[0], (expected + 1).float())


def test_owners_index_into_joined_scenes():
    first = flat_scene([(0.0, 0.0)], [0.5])
    second = flat_scene([(1.0, 1.0)], [0.5])
    owners = leaf_owners([first, second], 2, 2)
    # first has leaves 0, 1 (background); second's are 2, 3
    assert owners.tolist() == [[[0, 1], [1, 1]], [[3, 3], [3, 2]]]


def test_leaves_far_outside_touch_nothing():
    scene = flat_scene([(-5.0, 2.0), (2.0, 40.0)], [2.0, 3.0])
    assert (leaf_owners([scene], 6, 6) == 2).all()


def test_triangle_wave_values():
    phase = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0, -0.5, 2.25])
    assert triangle_wave(phase).tolist() == [1.0, 0.0, -1.0, 0.0, 1.0, -1.0, 0.0]


def test_shape_range_and_variety():
    image = render_alone((48, 80), seeded(0))
    assert image.shape == (3, 48, 80) and image.dtype == torch.float32
    assert torch.isfinite(image).all()
    # colours are linear sRGB in [0, 1] times ramp, texture and shading (each 1 +- 0.5)
    assert image.min() >= 0 and image.max() < 1.5**3
    assert image.std() > 0.02
    assert len(torch.unique(image[1])) > 100


def test_images_differ_and_are_not_constant():
    images = torch.stack([render_alone(64, seeded(s)) for s in range(32)])
    assert images.min() >= 0 and images.max() < 1.5**3
    per_image_std = images.std(dim=(1, 2, 3))
    assert (per_image_std > 0).all()
    means = images.mean(dim=(1, 2, 3))
    assert means.std() > 0.01  # some images dark, some bright
    # sRGB-uniform colours have linear mean 0.21 per channel (sd of 32 images ~0.02 each)
    assert 0.1 < images.mean().item() < 0.4


def test_same_generator_same_image():
    assert torch.equal(render_alone(40, seeded(5)), render_alone(40, seeded(5)))
    assert not torch.equal(render_alone(40, seeded(5)), render_alone(40, seeded(6)))


def test_alone_equals_in_batch():
    batch = render_scenes(draw_scenes(64, 64, [seeded(s) for s in range(12)]), 64, 64)
    for s in (0, 5, 11):
        assert torch.equal(batch[s], render_alone(64, seeded(s)))


def test_radius_law_is_r_to_the_minus_3():
    # Radii of leaves visible in a 64x64 window, re-weighted by 1 / ((w+2r)(h+2r)) to the
    # law of all leaves, r^-3 on [1, 1000]: mass in [r, 2r] is 0.75 r^-2, so each octave
    # holds a quarter of the one before. 200000 radii; 5 octaves checked to 10%.
    pick, u = torch.rand(2, 200_000, generator=seeded(1), dtype=torch.float64)
    radius = inverse_radius_law(pick, u, 64, 64, 1.0, 1000.0)
    assert radius.min() >= 1.0 and radius.max() <= 1000.0
    weight = 1 / ((64 + 2 * radius) * (64 + 2 * radius))
    octave = [weight[(radius >= 2**k) & (radius < 2 ** (k + 1))].sum().item() for k in range(6)]
    ratios = [octave[k] / octave[k + 1] for k in range(5)]
    assert all(abs(ratio / 4 - 1) < 0.1 for ratio in ratios), ratios


def test_radius_law_mixture_weights():
    cubic, square, linear = visible_radius_weights(64, 32, 1.0, 1000.0)
    assert cubic == pytest.approx(64 * 32 * (1 - 1e-6) / 2)
    assert square == pytest.approx(2 * 96 * (1 - 1e-3))
    assert linear == pytest.approx(4 * math.log(1000))


def test_background_shows_rarely():
    # leaf_count leaves leave each pixel uncovered with probability UNCOVERED; where a leaf
    # covers the whole window it becomes the background and the fill leaf is not used.
    # Over 128 windows the fill leaf's share stays near UNCOVERED (we allow 3x: the share
    # of one window is heavy-tailed).
    count = 128
    scenes = draw_scenes(64, 64, [seeded(s) for s in range(count)])
    owners = leaf_owners(scenes, 64, 64)
    full = leaf_count(64, 64, 1.0, 1000.0) + 1
    sizes = torch.tensor([len(s.radius) for s in scenes])
    fill = torch.cumsum(sizes, 0) - 1  # each scene's last leaf
    shares = [
        (owners[b] == fill[b]).float().mean().item() if sizes[b] == full else 0.0
        for b in range(count)
    ]
    assert sum(shares) / count < 3 * UNCOVERED
    assert 0 < sum(share > 0 for share in shares) < count  # some windows need the fill leaf


def test_power_spectrum_falls_as_natural_images():
    # natural images: power ~ 1/f^2 (van der Schaaf and van Hateren 1996), and so has the
    # dead-leaves model with r^-3 radii. Fit over 1/32..1/8 cycles per pixel (the blur
    # steepens higher frequencies) on 8 images: slopes of other seeds lie in -2.0 +- 0.15.
    images = torch.stack([render_alone(128, seeded(s)) for s in range(8)]).mean(1)
    images = images - images.mean(dim=(-1, -2), keepdim=True)
    power = torch.fft.fft2(images).abs().pow(2).mean(0)
    f = torch.fft.fftfreq(128)
    radius = (f[:, None] ** 2 + f[None, :] ** 2).sqrt()
    band = (radius >= 1 / 32) & (radius < 1 / 8)
    design = torch.stack([radius[band].log(), torch.ones(int(band.sum()))], 1)
    slope = torch.linalg.lstsq(design, power[band].log()[:, None]).solution[0].item()
    assert -2.4 < slope < -1.6


def test_too_small_is_refused():
    # the blur mirrors BLUR_TAPS = 2 pixels past each edge: a 1-pixel side has none to mirror
    scenes = draw_scenes(1, 5, [seeded(0)])
    with pytest.raises(ValueError, match="size 1x5 is below 2x2"):
        render_scenes(scenes, 1, 5)
    assert render_scenes(draw_scenes(2, 5, [seeded(0)]), 2, 5).shape == (1, 3, 2, 5)
