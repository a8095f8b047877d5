"""Tests for kpn.train.loss (docs/design.md §6): the training losses and their handling of
broken pixels."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck
from torch.testing import assert_close

from kpn.train.loss import kpn_loss, pixel_loss

LOSSES = ["l2", "smape", "cosh"]
REDUCTIONS = ["sum", "mean"]

# Four elements, [1,1,1,4]: d = O - R = [0.5, 3, 0, -0.25]
OUT4 = [1.0, 2.0, -0.5, 0.0]
REF4 = [0.5, -1.0, -0.5, 0.25]
GOLDEN4 = {
    # d^2
    "l2": [0.25, 9.0, 0.0, 0.0625],
    # |d| / (|O| + |R| + 1e-3): 0.5/1.501, 3/3.001, 0/1.001, 0.25/0.251
    "smape": [0.33311125916055967, 0.9996667777407531, 0.0, 0.9960159362549801],
    # cosh(d) - 1
    "cosh": [0.1276259652063807, 9.067661995777765, 0.0, 0.03141309987957319],
}

# Two pixels of three channels, [1,3,1,2]: pixel 0 is O = (1, 2, -0.5), R = (0.5, -1, -0.5);
# pixel 1 is O = (0, 1, 0), R = (0.25, 0, 2). Differences: (0.5, 3, 0) and (-0.25, 1, -2).
OUT_PIXELS = torch.tensor([[1.0, 0.0], [2.0, 1.0], [-0.5, 0.0]]).view(1, 3, 1, 2)
REF_PIXELS = torch.tensor([[0.5, 0.25], [-1.0, 0.0], [-0.5, 2.0]]).view(1, 3, 1, 2)
GOLDEN_SUM = {
    # 0.25 + 9 + 0 + 0.0625 + 1 + 4
    "l2": 14.3125,
    # 0.5/1.501 + 3/3.001 + 0 + 0.25/0.251 + 1/1.001 + 2/2.001
    "smape": 0.33311125916055967
    + 0.9996667777407531
    + 0.9960159362549801
    + 0.999000999000999
    + 0.9995002498750625,
    # (cosh 0.5 - 1) + (cosh 3 - 1) + 0 + (cosh 0.25 - 1) + (cosh 1 - 1) + (cosh 2 - 1)
    "cosh": 0.1276259652063807
    + 9.067661995777765
    + 0.03141309987957319
    + 0.5430806348152437
    + 2.7621956910836314,
}


def with_broken_pixel(bad: float, channel: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """OUT_PIXELS/REF_PIXELS plus a third pixel whose output has ``bad`` in one channel."""
    output = torch.cat([OUT_PIXELS, torch.tensor([0.3, -0.2, 0.7]).view(1, 3, 1, 1)], dim=-1)
    output[0, channel, 0, 2] = bad
    reference = torch.cat([REF_PIXELS, torch.tensor([0.1, 0.4, -0.6]).view(1, 3, 1, 1)], dim=-1)
    return output, reference


class TestPixelLoss:
    @pytest.mark.parametrize("loss", LOSSES)
    def test_golden(self, loss: str) -> None:
        out = pixel_loss(
            torch.tensor(OUT4).view(1, 1, 1, 4), torch.tensor(REF4).view(1, 1, 1, 4), loss
        )
        assert_close(out, torch.tensor(GOLDEN4[loss]).view(1, 1, 1, 4))

    @pytest.mark.parametrize("loss", LOSSES)
    @pytest.mark.parametrize("batch", [1, 2, 3])
    def test_shape(self, loss: str, batch: int) -> None:
        output = torch.randn(batch, 3, 4, 5)
        out = pixel_loss(output, torch.randn_like(output), loss)
        assert out.shape == (batch, 3, 4, 5)

    @pytest.mark.parametrize("loss", LOSSES)
    def test_zero_at_reference_and_non_negative(self, loss: str) -> None:
        generator = torch.Generator().manual_seed(0)
        reference = torch.randn(2, 3, 4, 4, generator=generator)
        assert torch.equal(pixel_loss(reference, reference, loss), torch.zeros_like(reference))
        assert bool((pixel_loss(torch.randn_like(reference), reference, loss) >= 0).all())

    def test_smape_is_scale_invariant_up_to_eps(self) -> None:
        # |kd| / (|kO| + |kR|) = |d| / (|O| + |R|): for large values eps does not matter
        generator = torch.Generator().manual_seed(1)
        output = 100.0 + torch.rand(1, 3, 2, 2, generator=generator, dtype=torch.float64)
        reference = 100.0 + torch.rand(1, 3, 2, 2, generator=generator, dtype=torch.float64)
        small = pixel_loss(output, reference, "smape")
        big = pixel_loss(1000.0 * output, 1000.0 * reference, "smape")
        assert_close(small, big, rtol=1e-5, atol=0.0)

    @pytest.mark.parametrize("loss", LOSSES)
    def test_gradcheck(self, loss: str) -> None:
        # values away from d = 0 and O = 0, where smape's |.| has a kink
        output = torch.tensor([1.0, 2.0, -0.5, 0.3], dtype=torch.float64).view(1, 1, 2, 2)
        reference = torch.tensor([0.5, -1.0, -0.2, 0.6], dtype=torch.float64).view(1, 1, 2, 2)
        output.requires_grad_(True)
        reference.requires_grad_(True)
        assert gradcheck(lambda o, r: pixel_loss(o, r, loss), (output, reference))


class TestKpnLoss:
    @pytest.mark.parametrize("loss", LOSSES)
    def test_golden_sum(self, loss: str) -> None:
        value = kpn_loss(OUT_PIXELS, REF_PIXELS, loss)  # "sum" is vkdt's and the default
        assert value.shape == ()
        assert_close(value.item(), GOLDEN_SUM[loss])

    @pytest.mark.parametrize("loss", LOSSES)
    def test_golden_mean(self, loss: str) -> None:
        # 2 pixels x 3 channels = 6 elements
        assert_close(kpn_loss(OUT_PIXELS, REF_PIXELS, loss, "mean").item(), GOLDEN_SUM[loss] / 6)

    @pytest.mark.parametrize("loss", LOSSES)
    @pytest.mark.parametrize("shape", [(1, 3, 4, 4), (2, 3, 5, 3), (3, 3, 1, 7)])
    def test_mean_is_sum_over_element_count(self, loss: str, shape: tuple[int, ...]) -> None:
        generator = torch.Generator().manual_seed(2)
        output = torch.randn(shape, generator=generator, dtype=torch.float64)
        reference = torch.randn(shape, generator=generator, dtype=torch.float64)
        total = kpn_loss(output, reference, loss, "sum")
        assert_close(total, pixel_loss(output, reference, loss).sum())
        assert_close(kpn_loss(output, reference, loss, "mean"), total / math.prod(shape))

    @pytest.mark.parametrize("loss", LOSSES)
    @pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
    @pytest.mark.parametrize("channel", [0, 2])
    def test_broken_pixel_adds_nothing(self, loss: str, bad: float, channel: int) -> None:
        # the whole pixel is left out, also its finite channels (here the other two)
        output, reference = with_broken_pixel(bad, channel)
        assert_close(kpn_loss(output, reference, loss).item(), GOLDEN_SUM[loss])
        # mean over the 6 elements of the two finite pixels
        assert_close(kpn_loss(output, reference, loss, "mean").item(), GOLDEN_SUM[loss] / 6)

    @pytest.mark.parametrize("loss", LOSSES)
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
    def test_broken_pixel_has_no_gradient(self, loss: str, reduction: str, bad: float) -> None:
        output, reference = with_broken_pixel(bad)
        output.requires_grad_(True)
        kpn_loss(output, reference, loss, reduction).backward()
        grad = output.grad
        assert bool(torch.isfinite(grad).all()), grad
        assert torch.equal(grad[..., 2], torch.zeros(1, 3, 1))  # every channel of the pixel
        # the finite pixels get the same gradient as without the broken one
        clean = OUT_PIXELS.clone().requires_grad_(True)
        kpn_loss(clean, REF_PIXELS, loss, reduction).backward()
        assert_close(grad[..., :2], clean.grad)

    @pytest.mark.parametrize("loss", LOSSES)
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_all_pixels_broken(self, loss: str, reduction: str) -> None:
        output = torch.full((1, 3, 2, 2), math.nan, requires_grad=True)
        value = kpn_loss(output, torch.zeros(1, 3, 2, 2), loss, reduction)
        assert value.item() == 0.0
        value.backward()
        assert torch.equal(output.grad, torch.zeros(1, 3, 2, 2))

    @pytest.mark.parametrize("loss", LOSSES)
    def test_non_contiguous(self, loss: str) -> None:
        generator = torch.Generator().manual_seed(3)
        output = torch.randn(2, 5, 4, 3, generator=generator).permute(0, 3, 2, 1)
        reference = torch.randn(2, 5, 4, 3, generator=generator).permute(0, 3, 2, 1)
        assert not output.is_contiguous()
        expected = kpn_loss(output.contiguous(), reference.contiguous(), loss)
        assert_close(kpn_loss(output, reference, loss), expected)

    @pytest.mark.parametrize("loss", LOSSES)
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_gradcheck(self, loss: str, reduction: str) -> None:
        generator = torch.Generator().manual_seed(4)
        output = torch.rand(1, 3, 2, 3, generator=generator, dtype=torch.float64) + 0.5
        reference = torch.rand(1, 3, 2, 3, generator=generator, dtype=torch.float64) - 0.8
        output.requires_grad_(True)
        reference.requires_grad_(True)
        assert gradcheck(lambda o, r: kpn_loss(o, r, loss, reduction), (output, reference))

    @pytest.mark.parametrize("loss", LOSSES)
    def test_gradcheck_with_broken_pixel(self, loss: str) -> None:
        output, reference = (t.double() for t in with_broken_pixel(math.nan))
        output.requires_grad_(True)
        assert gradcheck(lambda o: kpn_loss(o, reference, loss), (output,))


# --- psnr: kpn's per-tile decibel loss ------------------------------------------------------
def test_psnr_loss_by_hand():
    reference = torch.zeros(2, 3, 4, 4, dtype=torch.float64)
    output = reference.clone()
    output[0] += 0.1  # mse 0.01: PSNR 20 dB
    output[1, 0, 0, 0] = 0.4  # mse 0.16 / 48: PSNR 10 log10(300) = 24.77 dB
    expected = [-20.0, -10 * math.log10(300.0)]
    loss = kpn_loss(output, reference, "psnr", "mean")
    assert loss.item() == pytest.approx(sum(expected) / 2, abs=1e-6)
    assert kpn_loss(output, reference, "psnr", "sum").item() == pytest.approx(
        sum(expected), abs=1e-6
    )
    # the floor: a perfect tile costs -100 dB, not -inf
    assert kpn_loss(reference, reference, "psnr", "mean").item() == pytest.approx(-100.0)


def test_psnr_loss_weighs_tiles_in_decibels():
    """Halving a quiet tile's error gains as much as halving a loud one's: 3 dB each,
    where l2 sees only the loud tile."""
    reference = torch.zeros(2, 1, 8, 8, dtype=torch.float64)
    errors = torch.tensor([1e-2, 3e-1], dtype=torch.float64).view(2, 1, 1, 1)
    before = kpn_loss(reference + errors, reference, "psnr", "sum")
    quiet = kpn_loss(
        reference + errors * torch.tensor([0.5, 1.0]).view(2, 1, 1, 1), reference, "psnr", "sum"
    )
    loud = kpn_loss(
        reference + errors * torch.tensor([1.0, 0.5]).view(2, 1, 1, 1), reference, "psnr", "sum"
    )
    assert (before - quiet).item() == pytest.approx(before.item() - loud.item(), abs=1e-4)
    assert (before - quiet).item() == pytest.approx(20 * math.log10(2), abs=1e-4)


def test_psnr_loss_gradcheck_and_nonfinite_pixels():
    generator = torch.Generator().manual_seed(2)
    reference = torch.rand(2, 3, 5, 5, generator=generator, dtype=torch.float64)
    output = reference + 0.1 * torch.rand(2, 3, 5, 5, generator=generator, dtype=torch.float64)
    output.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda o: kpn_loss(o, reference, "psnr", "mean"), (output,))
    broken = output.detach().clone()
    broken[0, :, 1, 1] = math.nan
    loss = kpn_loss(broken.requires_grad_(True), reference, "psnr", "mean")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(broken.grad).all()


# ---------------------------------------------------------------- loss.comp's SMAPE slope

# d loss / dO as loss.comp writes it, (O - R) / den^2 * (|O R| + 1e-3 |O| + O R) / (1e-3 +
# |O (O - R)|), den = |O| + |R| + 1e-3, on OUT4 / REF4:
VKDT_SMAPE_SLOPE4 = [
    0.5 / 1.501**2 * 1.001 / 0.501,  # O 1, R 0.5: SMAPE's 1.001/1.501^2 times 0.5/0.501
    3.0 / 3.001**2 * 0.002 / 6.001,  # O 2, R -1: SMAPE's 0.001/3.001^2 times 6/6.001
    0.0,  # O = R
    0.0,  # O 0, R 0.25: the factor |O R| + 1e-3 |O| + O R is 0 (SMAPE's is -1/0.251)
]


def test_vkdt_smape_gradient_is_loss_comps() -> None:
    output = torch.tensor(OUT4, dtype=torch.float64).view(1, 1, 1, 4).requires_grad_()
    reference = torch.tensor(REF4, dtype=torch.float64).view(1, 1, 1, 4)
    loss = kpn_loss(output, reference, "smape", "sum", vkdt_grad=True)
    assert_close(loss.item(), sum(GOLDEN4["smape"]), rtol=1e-12, atol=0)  # the value: SMAPE's
    loss.backward()
    assert_close(output.grad.flatten(), torch.tensor(VKDT_SMAPE_SLOPE4, dtype=torch.float64))


def test_vkdt_smape_gradient_fades_small_errors() -> None:
    """For O, R > 0 loss.comp's slope is SMAPE's times |O (O-R)| / (1e-3 + |O (O-R)|)."""
    output = torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64).view(1, 3, 1, 1)
    reference = torch.tensor([0.498, 0.45, 0.3], dtype=torch.float64).view(1, 3, 1, 1)
    slopes = []
    for vkdt_grad in (False, True):
        leaf = output.clone().requires_grad_()
        kpn_loss(leaf, reference, "smape", "sum", vkdt_grad=vkdt_grad).backward()
        slopes.append(leaf.grad.flatten())
    factor = (0.5 * (output - reference)).abs().flatten()
    assert_close(slopes[1], slopes[0] * factor / (1e-3 + factor))
    assert 0.45 < float(slopes[1][0] / slopes[0][0]) < 0.55  # an error of 2e-3 at 0.5: half


def test_vkdt_smape_gradient_skips_broken_pixels() -> None:
    output = OUT_PIXELS.clone().double()
    output[0, 1, 0, 1] = float("nan")
    output.requires_grad_()
    kpn_loss(output, REF_PIXELS.double(), "smape", "sum", vkdt_grad=True).backward()
    assert torch.isfinite(output.grad).all()
    assert (output.grad[..., 1] == 0).all()


@pytest.mark.parametrize("loss", ["l2", "cosh", "psnr"])
def test_vkdt_grad_is_smapes_only(loss: str) -> None:
    with pytest.raises(ValueError, match=r"loss\.comp's SMAPE"):
        kpn_loss(OUT_PIXELS, REF_PIXELS, loss, "sum", vkdt_grad=True)
