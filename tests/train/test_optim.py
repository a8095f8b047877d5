"""kpn.train.optim: Adam, coupled L2, clipping and vkdt's variants (docs/design.md §7, §10).

Known values are worked out by hand from Adam's update: with g' = g + 2 * l2 * w,
m1 = beta1 m1 + (1 - beta1) g', m2 = beta2 m2 + (1 - beta2) g'^2 and, at step t,
w -= lr * (m1 / (1 - beta1^t)) / (sqrt(m2 / (1 - beta2^t)) + eps).
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from kpn.config import ModelConfig, TrainConfig
from kpn.model.precision import F16_LIMIT
from kpn.train.optim import (
    VkdtAdam,
    clip_gradients_,
    make_optimizer,
    vkdt_clip_,
    weight_buffer_size,
)

F64 = torch.float64
# lr, betas, eps and l2 chosen so that every term of the update shows in the numbers
HAND = TrainConfig(lr=0.1, beta1=0.9, beta2=0.99, eps=1e-3, l2=0.05)


def parameter(*values: float) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.tensor(values, dtype=F64))


def step(optimizer: torch.optim.Optimizer, weight: torch.Tensor, *gradient: float) -> None:
    weight.grad = torch.tensor(gradient, dtype=F64)
    optimizer.step()


def grads(parameters: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    return [p.grad.clone() for p in parameters]


# ---------------------------------------------------------------- Adam


def test_make_optimizer_is_torch_adam_with_coupled_l2() -> None:
    optimizer = make_optimizer([parameter(1.0)], HAND)
    assert type(optimizer) is torch.optim.Adam
    group = optimizer.param_groups[0]
    assert (group["lr"], group["betas"], group["eps"]) == (0.1, (0.9, 0.99), 1e-3)
    assert group["weight_decay"] == pytest.approx(0.1)  # 2 * l2: the gradient of l2 * w^2
    assert group["decoupled_weight_decay"] is False  # coupled: Adam, not AdamW


@pytest.mark.parametrize(
    "switch", ["vkdt_bias_correction", "vkdt_f16_state"], ids=["bias-cut", "f16"]
)
def test_make_optimizer_replays_vkdt_when_asked(switch: str) -> None:
    optimizer = make_optimizer([parameter(1.0)], dataclasses.replace(HAND, **{switch: True}))
    assert isinstance(optimizer, VkdtAdam)
    assert optimizer.bias_correction_cut == (switch == "vkdt_bias_correction")
    assert optimizer.f16_state == (switch == "vkdt_f16_state")


@pytest.mark.parametrize("quirks", [False, True], ids=["torch", "vkdt-adam"])
def test_two_adam_steps_by_hand(quirks: bool) -> None:
    """make_optimizer's step against Adam worked out by hand, the same without vkdt's
    switches for torch's Adam and VkdtAdam."""
    weight = parameter(1.0, -2.0, 0.5)
    if quirks:  # VkdtAdam with its switches off: the same numbers
        optimizer = VkdtAdam([weight], 0.1, (0.9, 0.99), 1e-3, 0.05)
    else:
        optimizer = make_optimizer([weight], HAND)

    step(optimizer, weight, 0.2, 0.0, -4.0)
    # g' = g + 0.1 w = (0.3, -0.2, -3.95); at t=1 the corrected moments are g' and g'^2,
    # so each weight moves by lr * g' / (|g'| + eps)
    first = [1.0 - 0.1 * 0.3 / 0.301, -2.0 + 0.1 * 0.2 / 0.201, 0.5 + 0.1 * 3.95 / 3.951]
    torch.testing.assert_close(weight.detach(), torch.tensor(first, dtype=F64))

    step(optimizer, weight, -0.5, 0.0, 1.0)
    expected = []
    for w, g1, g2 in zip(first, (0.3, -0.2, -3.95), (-0.5, 0.0, 1.0), strict=True):
        g2 += 0.1 * w  # the L2 term of the weight after the first step
        m1 = 0.9 * 0.1 * g1 + 0.1 * g2
        m2 = 0.99 * 0.01 * g1**2 + 0.01 * g2**2
        expected.append(w - 0.1 * (m1 / 0.19) / (math.sqrt(m2 / 0.0199) + 1e-3))
    torch.testing.assert_close(weight.detach(), torch.tensor(expected, dtype=F64))


def test_epsilon_bounds_the_step_of_a_tiny_gradient() -> None:
    """|update| = lr * |g| / (|g| + eps): a gradient of eps moves the weight lr / 2, a
    gradient far above eps moves it nearly lr, whatever its size."""
    train = dataclasses.replace(HAND, l2=0.0)
    weight = parameter(0.0, 0.0)
    step(make_optimizer([weight], train), weight, 1e-3, 1e3)
    expected = torch.tensor([-0.05, -0.1 * 1e3 / (1e3 + 1e-3)], dtype=F64)
    torch.testing.assert_close(weight.detach(), expected)


def test_zero_gradient_leaves_a_zero_weight_alone() -> None:
    weight = parameter(0.0, 0.0)
    optimizer = make_optimizer([weight], HAND)
    for _ in range(3):
        step(optimizer, weight, 0.0, 0.0)
    assert torch.equal(weight.detach(), torch.zeros(2, dtype=F64))
    state = optimizer.state[weight]
    assert not state["exp_avg"].any() and not state["exp_avg_sq"].any()


@pytest.mark.parametrize("quirks", [False, True], ids=["torch", "vkdt-adam"])
def test_zero_gradient_still_decays_the_weight_through_l2(quirks: bool) -> None:
    """Coupled L2 is part of the gradient: with g = 0, g' = 2 l2 w = 0.1 w, and the first
    step moves w by lr * g' / (|g'| + eps) towards zero."""
    weight = parameter(2.0, -0.01)
    if quirks:
        optimizer = VkdtAdam([weight], 0.1, (0.9, 0.99), 1e-3, 0.05)
    else:
        optimizer = make_optimizer([weight], HAND)
    step(optimizer, weight, 0.0, 0.0)
    # where 0.1 w is near eps the step is lr / 2: the weight -0.01 overshoots to 0.04
    expected = [2.0 - 0.1 * 0.2 / 0.201, -0.01 + 0.1 * 0.001 / 0.002]
    torch.testing.assert_close(weight.detach(), torch.tensor(expected, dtype=F64))


def test_vkdt_adam_equals_torch_adam_without_its_quirks() -> None:
    torch.manual_seed(0)
    ours = torch.nn.Parameter(torch.randn(16, 16))
    theirs = torch.nn.Parameter(ours.detach().clone())
    a = VkdtAdam([ours], lr=0.01, betas=(0.99, 0.999), eps=1e-4, l2=0.001)
    b = torch.optim.Adam([theirs], lr=0.01, betas=(0.99, 0.999), eps=1e-4, weight_decay=0.002)
    for _ in range(20):
        gradient = torch.randn(16, 16)
        ours.grad, theirs.grad = gradient.clone(), gradient.clone()
        a.step()
        b.step()
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_vkdt_adam_bias_correction_stops_at_frame_5000() -> None:
    weight = torch.nn.Parameter(torch.zeros(1))
    adam = VkdtAdam([weight], lr=1.0, betas=(0.5, 0.5), eps=0.0, l2=0.0, bias_correction_cut=True)
    weight.grad = torch.ones(1)
    adam.step()  # vkdt frame 1: m1 = m2 = 0.5, corrected with exponent 2: 0.5/0.75
    corrected = (0.5 / 0.75) / math.sqrt(0.5 / 0.75)
    torch.testing.assert_close(weight.detach(), torch.tensor([-corrected]))
    adam.state[weight]["step"].fill_(5000)  # the next step runs as frame 5001
    before = weight.detach().clone()
    adam.step()  # m1 = m2 = 0.75 (0.5*0.5 + 0.5), no correction: 0.75 / sqrt(0.75)
    torch.testing.assert_close(weight.detach(), before - 0.75 / math.sqrt(0.75))


def test_vkdt_f16_state_rounds_and_clamps_weights_and_moments() -> None:
    weight = torch.nn.Parameter(torch.tensor([1.0, 0.1]))
    adam = VkdtAdam([weight], lr=1e-3, betas=(0.9, 0.999), eps=1e-4, l2=0.0, f16_state=True)
    weight.grad = torch.tensor([1e6, 1e-3])
    adam.step()
    state = adam.state[weight]
    # m1 = 1e5 and m2 = 0.001 * 1e12 = 1e9, past float16's range: clamped to 65000 and
    # rounded to float16's 64992, not inf
    assert state["exp_avg"][0].item() == state["exp_avg_sq"][0].item() == 64992.0
    assert torch.tensor(F16_LIMIT).half().item() == 64992.0
    for stored in (weight.detach(), state["exp_avg"], state["exp_avg_sq"]):
        assert torch.equal(stored, stored.half().float()), stored
    # m1 = 0.1 * 1e-3 = 1e-4 and the weight 0.1 - ~1e-3, each the nearest float16
    assert state["exp_avg"][1].item() == torch.tensor(1e-4).half().item()
    assert weight[1].item() != 0.1 and weight[1].item() == weight[1].half().item()


def test_vkdt_f16_state_steps_with_the_moments_before_their_store() -> None:
    """adam.comp: m2 = mix(dw*dw, m2, beta2) in float32 is the step's, and only its float16
    store underflows: a gradient of 1e-4 has m2 = 1e-11 (float16's smallest is 6e-8), so
    the step is lr m1 c1 / (sqrt(m2 c2) + eps), not lr m1 c1 / eps (vkdt frame 1:
    bias-correction exponent 2)."""
    weight = torch.nn.Parameter(torch.tensor([0.25]))
    adam = VkdtAdam(
        [weight], lr=1e-3, betas=(0.9, 0.999), eps=1e-4, l2=0.0, bias_correction_cut=True,
        f16_state=True,
    )  # fmt: skip
    weight.grad = torch.tensor([1e-4])
    adam.step()
    m1, m2 = 0.1 * 1e-4, 0.001 * 1e-8
    c1, c2 = 1 / (1 - 0.9**2), 1 / (1 - 0.999**2)
    expected = torch.tensor([0.25 - 1e-3 * m1 * c1 / (math.sqrt(m2 * c2) + 1e-4)]).half().float()
    torch.testing.assert_close(weight.detach(), expected, rtol=0, atol=0)
    assert adam.state[weight]["exp_avg_sq"].item() == 0.0  # the store underflowed
    assert weight.item() != torch.tensor([0.25 - 1e-3 * m1 * c1 / 1e-4]).half().item()


# ---------------------------------------------------------------- clipping


def matrices(*gradients: list[float]) -> list[torch.nn.Parameter]:
    """Parameters of zeros, each with its gradient."""
    parameters = []
    for gradient in gradients:
        p = torch.nn.Parameter(torch.zeros(len(gradient), dtype=F64))
        p.grad = torch.tensor(gradient, dtype=F64)
        parameters.append(p)
    return parameters


def test_weight_buffer_size() -> None:
    assert weight_buffer_size(ModelConfig(width=32, n_hidden=1)) == 2 * 32 * 32
    assert weight_buffer_size(ModelConfig(width=64, n_hidden=3)) == 4 * 64 * 64


def test_clip_by_the_global_norm() -> None:
    """Gradients (3, 4) and (12): norm 13; clipped to 6.5 they are halved."""
    parameters = matrices([3.0, 4.0], [12.0])
    train = dataclasses.replace(HAND, grad_clip=6.5)
    norm = clip_gradients_(parameters, train, buffer_size=64)
    assert norm.item() == pytest.approx(13.0)
    torch.testing.assert_close(parameters[0].grad, torch.tensor([1.5, 2.0], dtype=F64))
    torch.testing.assert_close(parameters[1].grad, torch.tensor([6.0], dtype=F64))


@pytest.mark.parametrize("grad_clip", [13.5, 0.0], ids=["under-the-bound", "off"])
def test_no_clip_under_the_bound_or_when_off(grad_clip: float) -> None:
    parameters = matrices([3.0, 4.0], [12.0])
    before = grads(parameters)
    train = dataclasses.replace(HAND, grad_clip=grad_clip)
    assert clip_gradients_(parameters, train, buffer_size=64).item() == pytest.approx(13.0)
    assert all(torch.equal(a, p.grad) for a, p in zip(before, parameters, strict=True))


def test_vkdt_clip_looks_only_at_a_prefix_and_returns_the_full_norm() -> None:
    """N = 64: vkdt's norm covers ceil(64/32) = 2 entries, times GRAD_SCALE 128:
    128 * |(0.03, 0.04)| = 6.4 > 3.2 halves every gradient; what clip_gradients_ returns
    is the whole gradient's norm, |(0.03, 0.04, 0, 12)| (steps are judged by it)."""
    parameters = matrices([0.03, 0.04, 0.0], [12.0])
    train = dataclasses.replace(HAND, grad_clip=3.2, vkdt_grad_clip=True, grad_scale=128.0)
    norm = clip_gradients_(parameters, train, buffer_size=64)
    assert norm.item() == pytest.approx(math.hypot(0.05, 12.0))
    torch.testing.assert_close(parameters[0].grad, torch.tensor([0.015, 0.02, 0.0], dtype=F64))
    torch.testing.assert_close(parameters[1].grad, torch.tensor([6.0], dtype=F64))


def test_vkdt_clip_misses_a_large_gradient_outside_its_prefix() -> None:
    """vkdt's defect, replayed: a norm of 1000 past the prefix is not clipped, where the
    global clipping would scale it down."""
    parameters = matrices([0.001, 0.0], [1000.0])
    train = dataclasses.replace(HAND, grad_clip=10.0, vkdt_grad_clip=True)
    assert clip_gradients_(parameters, train, buffer_size=64).item() == pytest.approx(1000.0)
    assert parameters[1].grad.item() == 1000.0
    global_clip = matrices([0.001, 0.0], [1000.0])
    clip_gradients_(global_clip, dataclasses.replace(train, vkdt_grad_clip=False), 64)
    assert global_clip[1].grad.item() == pytest.approx(10.0, rel=1e-6)


def test_vkdt_prefix_length_rounds_up() -> None:
    """N = 65: ceil(65/32) = 3 entries, so the third counts and the fourth does not."""
    parameters = matrices([0.0, 0.0, 1.0, 100.0])
    norm = vkdt_clip_(parameters, max_norm=1000.0, grad_scale=2.0, buffer_size=65)
    assert norm.item() == pytest.approx(2.0)
    assert vkdt_clip_(matrices([0.0, 0.0, 1.0, 100.0]), 1e3, 2.0, 64).item() == 0.0


def test_vkdt_clip_uses_a_prefix_of_the_scaled_gradient() -> None:
    first = torch.nn.Parameter(torch.zeros(4, 4))
    second = torch.nn.Parameter(torch.zeros(4, 4))
    first.grad = torch.zeros(4, 4)
    first.grad[0, 0] = 3.0  # inside the prefix: ceil(64 / 32) = 2 entries
    first.grad[0, 1] = 4.0
    second.grad = torch.full((4, 4), 100.0)  # outside: vkdt never sees it
    norm = vkdt_clip_([first, second], max_norm=10.0, grad_scale=128.0, buffer_size=64)
    assert norm.item() == pytest.approx(128 * 5.0)
    scale = 10.0 / (128 * 5.0)
    assert first.grad[0, 0].item() == pytest.approx(3.0 * scale)
    assert second.grad[0, 0].item() == pytest.approx(100.0 * scale)
    unclipped = [torch.nn.Parameter(torch.zeros(2))]
    unclipped[0].grad = torch.tensor([0.01, 0.0])
    vkdt_clip_(unclipped, max_norm=10.0, grad_scale=128.0, buffer_size=64)
    assert unclipped[0].grad[0].item() == pytest.approx(0.01)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("vkdt", [False, True], ids=["global", "vkdt"])
def test_non_finite_gradients_are_reported_not_clipped(bad: float, vkdt: bool) -> None:
    """A non-finite norm says 'skip this step' (kpn.train.loop); the gradients are left as
    they are rather than scaled into NaN everywhere."""
    parameters = matrices([bad, 1.0], [2.0])
    train = dataclasses.replace(HAND, grad_clip=1.0, vkdt_grad_clip=vkdt)
    norm = clip_gradients_(parameters, train, buffer_size=64)
    assert not torch.isfinite(norm)
    assert parameters[0].grad[1].item() == 1.0 and parameters[1].grad.item() == 2.0
