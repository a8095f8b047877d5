"""The optimiser (docs/design.md §7): Adam, coupled L2, gradient clipping and vkdt's variants.

The design trains with ``torch.optim.Adam`` (``weight_decay = 2 * l2`` is exactly vkdt's
coupled L2) and global-norm clipping. :class:`VkdtAdam` replays what vkdt's ``adam.comp``
does beyond that, each as a switch: bias correction only while vkdt's frame counter is
below 5000, and moments and weights stored in float16. :func:`vkdt_clip_` is vkdt's
gradient clipping, whose norm covers only the first ceil(N/32) gradient entries.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from kpn.config import ModelConfig, TrainConfig
from kpn.model.precision import F16_LIMIT, round_f16

VKDT_BIAS_CORRECTION_FRAMES = 5000  # adam.comp corrects the moments only before this frame
VKDT_NORM_SUBGROUP = 32  # norm.comp's one reduction pass keeps a partial sum per 32 entries


def make_optimizer(parameters: Iterable[Tensor], train: TrainConfig) -> torch.optim.Optimizer:
    """Adam with the config's settings: torch's, or :class:`VkdtAdam` for vkdt's quirks."""
    if train.vkdt_bias_correction or train.vkdt_f16_state:
        return VkdtAdam(
            parameters,
            train.lr,
            (train.beta1, train.beta2),
            train.eps,
            train.l2,
            bias_correction_cut=train.vkdt_bias_correction,
            f16_state=train.vkdt_f16_state,
            f16_moments=train.vkdt_f16_moments,
        )
    return torch.optim.Adam(
        parameters,
        lr=train.lr,
        betas=(train.beta1, train.beta2),
        eps=train.eps,
        weight_decay=2.0 * train.l2,  # coupled L2, applied after clipping like vkdt's
    )


def weight_buffer_size(model: ModelConfig) -> int:
    """N, the length of vkdt's weight buffer: (n_hidden + 1) matrices of W x W."""
    return (model.n_hidden + 1) * model.width**2


def clip_gradients_(parameters: Sequence[Tensor], train: TrainConfig, buffer_size: int) -> Tensor:
    """Clip the gradients as configured; return the full gradient norm before clipping.

    The full norm is what decides whether a step is finite, and what is logged, also when
    vkdt's clipping (which looks at part of the gradient) is replayed.
    """
    norm = torch.nn.utils.get_total_norm([p.grad for p in parameters])
    if not torch.isfinite(norm) or train.grad_clip <= 0:
        return norm
    if train.vkdt_grad_clip:
        vkdt_clip_(parameters, train.grad_clip, train.grad_scale, buffer_size)
    else:
        torch.nn.utils.clip_grads_with_norm_(parameters, train.grad_clip, norm)
    return norm


def vkdt_clip_(
    parameters: Sequence[Tensor], max_norm: float, grad_scale: float, buffer_size: int
) -> Tensor:
    """vkdt's gradient clipping (design §10): clip by the norm of a prefix of the gradient.

    vkdt's norm pass reduces only once, so the "squared norm" it reads is the sum over the
    first ceil(N/32) entries of the GRAD_SCALE-scaled gradient, N the size of the weight
    buffer. Gradients are scaled by max_norm / that norm when it exceeds max_norm.

    Args:
        parameters: the MLP's matrices in buffer order (W0, hidden..., W_out).
        max_norm: vkdt's ``gradclip``.
        grad_scale: vkdt's GRAD_SCALE (128).
        buffer_size: N, the weight buffer's length ((n_hidden+1) * W * W).

    Returns:
        the norm vkdt compares against ``max_norm``.
    """
    flat = torch.cat([p.grad.reshape(-1) for p in parameters])
    head = flat[: math.ceil(buffer_size / VKDT_NORM_SUBGROUP)] * grad_scale
    norm = torch.sqrt(torch.sum(head * head))
    if norm > max_norm:
        for p in parameters:
            p.grad.mul_(max_norm / norm)
    return norm


class VkdtAdam(torch.optim.Optimizer):
    """Adam as vkdt's ``adam.comp`` computes it, with its quirks as switches.

    With both switches off this is ``torch.optim.Adam(weight_decay=2*l2)``.

    Args:
        params: the parameters.
        lr, betas, eps: Adam's alpha, (beta1, beta2), eps.
        l2: coupled L2: ``2 * l2 * w`` is added to the gradient.
        bias_correction_cut: correct the moments only while vkdt's frame counter
            (frame 0 initialises, step s runs as frame s+1) is below 5000.
        f16_state: store the weights as float16, clamped to +-65000, as vkdt does.
        f16_moments: with ``f16_state``, store the moments so too (vkdt ce12d6ed's
            adam.comp, defect 14; the step itself uses them before their store, as
            adam.comp does); false: float32, as main.c allocates them (patch 0012).
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float,
        betas: tuple[float, float],
        eps: float,
        l2: float,
        bias_correction_cut: bool = False,
        f16_state: bool = False,
        f16_moments: bool = True,
    ) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, l2=l2)
        super().__init__(params, defaults)
        self.bias_correction_cut = bias_correction_cut
        self.f16_state = f16_state
        self.f16_moments = f16_state and f16_moments

    @staticmethod
    def _store_f16(x: Tensor) -> Tensor:
        return round_f16(x.clamp(-F16_LIMIT, F16_LIMIT))

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float64)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                step = int(state["step"].item())
                grad = p.grad + 2.0 * group["l2"] * p
                m1, m2 = state["exp_avg"], state["exp_avg_sq"]
                # adam.comp updates with the moments as computed (float32) and stores them
                # (float16) only for the next step: a small gradient's m2 underflows in the
                # store, never in the update
                m1.lerp_(grad, 1.0 - beta1)
                m2.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                if self.bias_correction_cut:
                    frame = step  # vkdt's frame 0 initialises; our first step is its frame 1
                    exponent = frame + 1
                    corrected = frame < VKDT_BIAS_CORRECTION_FRAMES
                else:
                    exponent, corrected = step, True
                c1 = 1.0 / (1.0 - beta1**exponent) if corrected else 1.0
                c2 = 1.0 / (1.0 - beta2**exponent) if corrected else 1.0
                update = group["lr"] * (m1 * c1) / (torch.sqrt(m2 * c2) + group["eps"])
                p.copy_(self._store_f16(p - update) if self.f16_state else p - update)
                if self.f16_moments:
                    m1.copy_(self._store_f16(m1))
                    m2.copy_(self._store_f16(m2))
