"""TensorBoard pictures (kpn/train/visualize.py): labelled, large, exposed, on stated scales."""

from __future__ import annotations

import torch

from kpn.train.visualize import (
    BACKGROUND,
    GLYPH_HEIGHT,
    PAD,
    TEXT_SCALE,
    alpha_map,
    comparison,
    diverging_legend,
    exposure,
    grey_legend,
    kernel_stars,
    label,
    matrix_map,
    shared_scale,
    signed_colors,
    text_mask,
)

LABEL_HEIGHT = GLYPH_HEIGHT * TEXT_SCALE + 2 * PAD


def written(area: torch.Tensor, text: str, top: int = PAD, left: int = PAD) -> bool:
    """Whether ``area`` ``[3,H,W]`` shows exactly ``text`` (white on background) there."""
    mask = text_mask(text).repeat_interleave(TEXT_SCALE, 0).repeat_interleave(TEXT_SCALE, 1)
    region = area[:, top : top + mask.shape[0], left : left + mask.shape[1]]
    if region.shape[1:] != mask.shape:
        return False
    expected = torch.where(mask, torch.tensor(1.0), torch.tensor(BACKGROUND))
    return bool((region == expected).all())


def image(height: int, width: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.rand(3, height, width, generator=torch.Generator().manual_seed(seed))


def test_font_covers_labels_and_numbers() -> None:
    assert text_mask("A").shape == (7, 5)
    assert text_mask("ab 1").shape == (7, 4 * 6 - 1)
    # lower case is drawn in capitals; a missing character as "?"
    assert torch.equal(text_mask("noisy"), text_mask("NOISY"))
    assert torch.equal(text_mask("~"), text_mask("?"))
    for char in "0123456789.-+e":
        assert text_mask(char).any(), char
    assert not text_mask(" ").any()
    strip = label("denoised", width=200)
    assert strip.shape == (3, LABEL_HEIGHT, 200)
    assert written(strip, "denoised")


def test_comparison_is_labelled_enlarged_and_exposed_on_the_reference() -> None:
    noisy, denoised = image(128, 128, 1), image(128, 128, 2)
    # a bright linear reference (values up to 4): a plain [0,1] clip would saturate 3/4
    reference = image(128, 128, 3, scale=4.0)
    picture = comparison(noisy, denoised, reference, crop=64, zoom=2)
    panel = 64 * 2
    assert picture.shape[2] >= 3 * panel + 2 * PAD
    for index, name in enumerate(("noisy", "denoised", "reference")):
        assert written(picture, name, PAD, index * (panel + PAD) + PAD), name
    shown = picture[:, LABEL_HEIGHT : LABEL_HEIGHT + panel, 2 * (panel + PAD) :][:, :, :panel]
    assert shown.shape == (3, panel, panel)
    # nearest enlargement: 2x2 blocks of one value
    torch.testing.assert_close(shown[:, ::2, ::2], shown[:, 1::2, 1::2])
    # the reference's 99.5th percentile is white: at most 1% of the panel clips
    white = 0.9999  # sRGB's 1.0 in float32
    assert (shown >= white).all(dim=0).float().mean() <= 0.01
    assert shown.max() >= white
    # the caption states the gain: the crop's highlights (about 4) are shown as white
    gain = exposure(reference[:, 32:96, 32:96])
    assert abs(gain * 4 - 1) < 0.02
    assert written(picture, f"exposure x{gain:.3g}", LABEL_HEIGHT + panel + PAD, PAD)


def test_comparison_of_a_small_tile_shows_it_whole() -> None:
    picture = comparison(image(16, 16, 1), image(16, 16, 2), image(16, 16, 3), zoom=2)
    assert picture.shape[1] == 2 * LABEL_HEIGHT + 32


def test_alpha_map_has_a_fixed_scale_and_a_legend() -> None:
    for value in (0.0, 0.5, 1.0):
        picture = alpha_map(torch.full((16, 16), value), "alpha level 1", size=64)
        assert written(picture, f"alpha level 1: mean {value:.2f}")
        # the map itself (inside its frame): the value, not stretched to fill the range
        inside = picture[:, LABEL_HEIGHT + 1 : LABEL_HEIGHT + 65, 1:65]
        assert inside.shape == (3, 64, 64)
        assert (inside == value).all()
        # a constant map still shows its scale: black 0 and white 1 in the legend
        legend = picture[:, LABEL_HEIGHT + 66 :]
        assert (legend == 0).all(dim=0).any() and (legend == 1).all(dim=0).any()
    assert grey_legend(40).shape[2] >= 128  # room for the numbers under a small map


def test_signed_maps_share_a_symmetric_scale() -> None:
    weights = torch.ones(4, 4)
    half = signed_colors(weights, vmax=2.0)[:, 0, 0]  # half of +vmax: half red
    torch.testing.assert_close(half, torch.tensor([1.0, 0.5, 0.5]))
    assert shared_scale([torch.tensor([0.5, -3.0]), torch.tensor([2.0, float("nan")])]) == 3.0
    picture = matrix_map(weights, vmax=2.0, cell=4, title="weights layer 0")
    assert written(picture, "weights layer 0 [4 x 4]")
    heat = picture[:, LABEL_HEIGHT + 1 : LABEL_HEIGHT + 17, 1:17]
    torch.testing.assert_close(heat[:, 0, 0], torch.tensor([1.0, 0.5, 0.5]))
    legend = diverging_legend(2.0, 64)
    assert written(legend, "-2", legend.shape[1] - LABEL_HEIGHT + PAD, 0)


def test_kernel_stars_carry_their_scale() -> None:
    taps = torch.zeros(15, 8, 8)
    taps[0] = 0.25  # the centre tap
    taps[1] = -0.125
    picture = kernel_stars(taps, count=2, cell=4, title="kernels level 0")
    assert written(picture, "kernels level 0")
    legend_top = picture.shape[1] - LABEL_HEIGHT + PAD
    assert written(picture, "-0.25", legend_top, 0)
