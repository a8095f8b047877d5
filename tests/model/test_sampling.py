"""Tests for kpn.model.sampling: vkdt's MIRRORED_REPEAT addressing (docs/design.md §0)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from kpn.model.sampling import linear_taps, mirror_index, pad_symmetric, sample_linear_axis


def reflect_once_at_a_time(index: int, size: int) -> int:
    """Mirror ``index`` into 0..size-1 by folding at the edges repeatedly (edge included).

    Deliberately a different algorithm from kpn's (no remainder): fold at -0.5, then at
    size - 0.5, until the index lands inside.
    """
    while index < 0 or index >= size:
        index = -1 - index if index < 0 else 2 * size - 1 - index
    return index


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(20240212)


# ---------------------------------------------------------------- mirror_index


def test_mirror_index_golden_size4():
    index = torch.arange(-9, 13)
    # period 2*4 = 8: ... -9->0 -8->0 -7->1 -6->2 -5->3 -4->3 -3->2 -2->1 -1->0 | 0 1 2 3 |
    # 4->3 5->2 6->1 7->0 8->0 9->1 10->2 11->3 12->3
    expected = [0, 0, 1, 2, 3, 3, 2, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0, 0, 1, 2, 3, 3]
    assert mirror_index(index, 4).tolist() == expected


@pytest.mark.parametrize("size", [2, 3, 5, 8])
def test_mirror_index_edge_included(size):
    # design §0: -1 reads 0, -2 reads 1, W reads W-1, W+1 reads W-2
    index = torch.tensor([-1, -2, size, size + 1])
    assert mirror_index(index, size).tolist() == [0, 1, size - 1, size - 2]


@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_mirror_index_inside_is_identity(size):
    index = torch.arange(size)
    assert torch.equal(mirror_index(index, size), index)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8])
def test_mirror_index_periodic_far_away(size):
    index = torch.arange(-3 * size, 4 * size)
    base = mirror_index(index, size)
    for k in (-1000, -3, -1, 1, 2, 50_000):
        assert torch.equal(mirror_index(index + 2 * size * k, size), base)
    far = torch.tensor([-(10**9) - 7, -12345, 12345, 10**9 + 3])
    expected = [reflect_once_at_a_time(int(i % (2 * size)), size) for i in far]
    assert mirror_index(far, size).tolist() == expected


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 9])
def test_mirror_index_matches_repeated_folding(size):
    index = torch.arange(-5 * size - 3, 6 * size + 4)
    expected = [reflect_once_at_a_time(int(i), size) for i in index]
    assert mirror_index(index, size).tolist() == expected


def test_mirror_index_size_one_always_reads_zero():
    index = torch.tensor([-100, -2, -1, 0, 1, 2, 99])
    assert mirror_index(index, 1).tolist() == [0] * 7


def test_mirror_index_keeps_shape_and_dtype():
    index = torch.arange(-6, 6).view(3, 4)
    out = mirror_index(index, 3)
    assert out.shape == (3, 4)
    assert out.dtype == torch.int64
    assert out.min() >= 0 and out.max() <= 2


# ---------------------------------------------------------------- pad_symmetric


PADS = [
    (0, 0, 0, 0),
    (1, 1, 1, 1),
    (2, 0, 0, 3),
    (0, 5, 4, 0),
    (3, 2, 1, 4),
    (7, 11, 9, 13),  # larger than every size below: several periods of mirroring
]


@pytest.mark.parametrize("pads", PADS)
@pytest.mark.parametrize("size", [(1, 1), (1, 4), (3, 1), (3, 5), (4, 4)])
def test_pad_symmetric_equals_numpy_symmetric(pads, size, generator):
    left, right, top, bottom = pads
    x = torch.rand(2, 3, *size, generator=generator, dtype=torch.float64)
    expected = np.pad(x.numpy(), ((0, 0), (0, 0), (top, bottom), (left, right)), "symmetric")
    out = pad_symmetric(x, left, right, top, bottom)
    assert out.shape == (2, 3, size[0] + top + bottom, size[1] + left + right)
    assert_close(out, torch.from_numpy(expected), rtol=0, atol=0)


def test_pad_symmetric_golden_and_not_torch_reflect():
    row = torch.tensor([[[[1.0, 2.0, 3.0, 4.0]]]])
    # symmetric repeats the edge pixel: 1 | 1 2 3 4 | 4
    assert pad_symmetric(row, 1, 1, 0, 0).flatten().tolist() == [1, 1, 2, 3, 4, 4]
    # torch's reflect skips it: 2 | 1 2 3 4 | 3 -- the mistake design §0 warns about
    reflect = F.pad(row, (1, 1, 0, 0), mode="reflect")
    assert reflect.flatten().tolist() == [2, 1, 2, 3, 4, 3]
    assert not torch.equal(pad_symmetric(row, 1, 1, 0, 0), reflect)
    # two pixels out: symmetric 2 1 | 1 2 3 4 | 4 3, reflect 3 2 | ... | 3 2
    assert pad_symmetric(row, 2, 2, 0, 0).flatten().tolist() == [2, 1, 1, 2, 3, 4, 4, 3]


def test_pad_symmetric_differs_from_torch_reflect_in_2d(generator):
    x = torch.rand(1, 3, 5, 6, generator=generator)
    ours = pad_symmetric(x, 2, 2, 2, 2)
    reflect = F.pad(x, (2, 2, 2, 2), mode="reflect")
    # the interior agrees, every border row and column disagrees
    assert_close(ours[..., 2:-2, 2:-2], reflect[..., 2:-2, 2:-2])
    assert not torch.allclose(ours[..., :, 0], reflect[..., :, 0])
    assert not torch.allclose(ours[..., 0, :], reflect[..., 0, :])
    # ours reads the edge pixel itself one step out
    assert_close(ours[..., 2:-2, 1], x[..., :, 0])
    assert_close(ours[..., 1, 2:-2], x[..., 0, :])


def test_pad_symmetric_rows_and_columns_not_swapped():
    x = torch.arange(6.0).view(1, 1, 2, 3)  # [[0 1 2], [3 4 5]]
    out = pad_symmetric(x, 1, 0, 0, 1)  # one column left, one row below
    assert out[0, 0].tolist() == [[0, 0, 1, 2], [3, 3, 4, 5], [3, 3, 4, 5]]


@pytest.mark.parametrize("batch", [1, 2, 5])
def test_pad_symmetric_shapes(batch):
    x = torch.zeros(batch, 3, 4, 7)
    assert pad_symmetric(x, 1, 2, 3, 4).shape == (batch, 3, 11, 10)
    # works on any number of leading axes
    assert pad_symmetric(torch.zeros(4, 7), 1, 2, 3, 4).shape == (11, 10)


def test_pad_symmetric_noncontiguous_and_channels_last(generator):
    base = torch.rand(2, 3, 6, 5, generator=generator)
    transposed = base.transpose(-1, -2)
    assert not transposed.is_contiguous()
    assert_close(
        pad_symmetric(transposed, 3, 1, 2, 4), pad_symmetric(transposed.contiguous(), 3, 1, 2, 4)
    )
    cl = base.to(memory_format=torch.channels_last)
    assert_close(pad_symmetric(cl, 3, 1, 2, 4), pad_symmetric(base, 3, 1, 2, 4), rtol=0, atol=0)


def test_pad_symmetric_gradcheck(generator):
    x = torch.rand(1, 2, 3, 2, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: pad_symmetric(t, 3, 1, 0, 4), (x,))


# ---------------------------------------------------------------- linear_taps


def test_linear_taps_golden_size3():
    coords = torch.tensor([0.0, 0.5, 1.25, 2.0, -0.25, -1.5, 2.25, 3.25, 4.5, -3.0])
    index0, index1, fraction = linear_taps(coords, 3)
    # coord  floor  mirrored(floor, floor+1)  fraction
    #   0.0    0    (0, 1)                    0
    #   0.5    0    (0, 1)                    0.5
    #   1.25   1    (1, 2)                    0.25
    #   2.0    2    (2, 3->2)                 0
    #  -0.25  -1    (-1->0, 0)                0.75
    #  -1.5   -2    (-2->1, -1->0)            0.5
    #   2.25   2    (2, 3->2)                 0.25
    #   3.25   3    (3->2, 4->1)              0.25
    #   4.5    4    (4->1, 5->0)              0.5
    #  -3.0   -3    (-3->2, -2->1)            0
    assert index0.tolist() == [0, 0, 1, 2, 0, 1, 2, 2, 1, 2]
    assert index1.tolist() == [1, 1, 2, 2, 0, 0, 2, 1, 0, 1]
    assert_close(fraction, torch.tensor([0.0, 0.5, 0.25, 0.0, 0.75, 0.5, 0.25, 0.25, 0.5, 0.0]))
    assert index0.dtype == index1.dtype == torch.int64


# ---------------------------------------------------------------- sample_linear_axis


@pytest.fixture
def ramp3() -> torch.Tensor:
    return torch.tensor([1.0, 10.0, 100.0], dtype=torch.float64)


SAMPLE_COORDS = [0.0, 0.5, 1.25, -0.25, -1.5, 2.25, 3.25, 4.5]
# v = [1, 10, 100]; MIRRORED_REPEAT is the signal reflected about -0.5 and 2.5:
#   0.0  -> v0                          = 1
#   0.5  -> (v0 + v1) / 2               = 5.5
#   1.25 -> 0.75 v1 + 0.25 v2           = 7.5 + 25 = 32.5
#  -0.25 -> reflects to -0.25 -> between v(-1)=v0 and v0 = 1
#  -1.5  -> reflects to 0.5             = 5.5
#   2.25 -> between v2 and v(3)=v2      = 100
#   3.25 -> reflects to 1.75: 0.25 v1 + 0.75 v2 = 2.5 + 75 = 77.5
#   4.5  -> reflects to 0.5             = 5.5
SAMPLE_EXPECTED = [1.0, 5.5, 32.5, 1.0, 5.5, 100.0, 77.5, 5.5]


def test_sample_linear_axis_golden_x(ramp3):
    x = ramp3.view(1, 1, 1, 3).expand(2, 3, 2, 3)
    out = sample_linear_axis(x, torch.tensor(SAMPLE_COORDS, dtype=torch.float64), -1)
    assert out.shape == (2, 3, 2, len(SAMPLE_COORDS))
    expected = torch.tensor(SAMPLE_EXPECTED, dtype=torch.float64).expand(2, 3, 2, -1)
    assert_close(out, expected)


def test_sample_linear_axis_golden_y(ramp3):
    x = ramp3.view(1, 1, 3, 1).expand(1, 2, 3, 4)
    out = sample_linear_axis(x, torch.tensor(SAMPLE_COORDS, dtype=torch.float64), -2)
    assert out.shape == (1, 2, len(SAMPLE_COORDS), 4)
    expected = torch.tensor(SAMPLE_EXPECTED, dtype=torch.float64).view(-1, 1).expand(1, 2, -1, 4)
    assert_close(out, expected)


def test_sample_linear_axis_integer_coords_are_mirrored_taps(generator):
    x = torch.rand(2, 3, 4, 5, generator=generator)
    taps = torch.arange(-7, 12)
    out = sample_linear_axis(x, taps.double(), -1)
    assert_close(out, x[..., mirror_index(taps, 5)], rtol=0, atol=0)


def test_sample_linear_axis_keeps_image_dtype(generator):
    x = torch.rand(1, 3, 2, 4, generator=generator)  # float32
    out = sample_linear_axis(x, torch.tensor([0.5, 1.5], dtype=torch.float64), -1)
    assert out.dtype == torch.float32


@pytest.mark.parametrize("size", [(3, 5), (4, 4), (1, 3)])
def test_sample_linear_axis_matches_grid_sample_reflection(size, generator):
    # design §0: grid_sample(bilinear, reflection, align_corners=False) matches within a period
    height, width = size
    x = torch.rand(2, 3, height, width, generator=generator, dtype=torch.float64)
    coords_x = torch.linspace(-0.5, width - 0.5, 23, dtype=torch.float64)
    coords_y = torch.linspace(-0.5, height - 0.5, 17, dtype=torch.float64)
    ours = sample_linear_axis(sample_linear_axis(x, coords_x, -1), coords_y, -2)
    gx = (2 * coords_x + 1) / width - 1  # texel c -> normalised (2c+1)/size - 1
    gy = (2 * coords_y + 1) / height - 1
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1).expand(2, -1, -1, -1)
    theirs = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    assert_close(ours, theirs)


def test_sample_linear_axis_gradcheck(generator):
    x = torch.rand(1, 2, 3, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    coords = torch.tensor([-1.3, 0.25, 1.5, 2.75, 3.6], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: sample_linear_axis(t, coords, -1), (x,))
    assert torch.autograd.gradcheck(lambda t: sample_linear_axis(t, coords, -2), (x,))
