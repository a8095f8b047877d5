"""Validation: the fixed validation set's loss, PSNR and SSIM, noisy and denoised."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from kpn.config import Config
from kpn.data.loader import TrainingBatch
from kpn.metrics import display_ssim, psnr
from kpn.model.network import KPN
from kpn.train.loss import kpn_loss


@dataclass(frozen=True)
class Validation:
    """The validation set's loss, and PSNR (linear) and SSIM (as shown) of its images."""

    loss: float
    psnr_noisy: float
    psnr_denoised: float
    ssim_noisy: float = math.nan
    ssim_denoised: float = math.nan

    @property
    def gain(self) -> float:
        return self.psnr_denoised - self.psnr_noisy


def validate(model: KPN, batch: TrainingBatch, config: Config) -> Validation:
    """Loss, PSNR and SSIM of the fixed validation set ``batch`` (``[N,3,H,W]`` tiles),
    noisy and denoised; the model is back in training mode after."""
    model.eval()
    with torch.no_grad():
        output = model(batch.noisy, batch.noise_ab)
        loss = kpn_loss(output, batch.reference, config.train.loss, config.train.loss_reduction)
    model.train()
    return Validation(
        loss.item(),
        psnr(batch.noisy, batch.reference),
        psnr(output, batch.reference),
        display_ssim(batch.noisy, batch.reference),
        display_ssim(output, batch.reference),
    )
