"""Image quality measures: PSNR of linear images, and SSIM on display-encoded ones.

SSIM compares what a person sees, so it runs on sRGB-encoded images clipped to [0, 1],
with Wang et al.'s constants and their 11x11 Gaussian window of sigma 1.5: the numbers of
``skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1, channel_axis=-1)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

PSNR_SLICE = 256  # rows (or images) at a time: no full-size float64 copy of a large photo
SSIM_WINDOW = 11  # pixels per side of the Gaussian window
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03  # stabilising constants, times the data range 1
SRGB_LINEAR_KNEE = 0.0031308  # where the sRGB curve turns from linear to the power law


def srgb(linear: Tensor) -> Tensor:
    """Linear light to sRGB-encoded values, clipped to [0, 1] first. ``[...] -> [...]``

    The torch twin of :func:`kpn.io.images.linear_to_srgb` (which works on numpy arrays).
    """
    y = linear.clamp(0.0, 1.0)
    curve = 1.055 * y.clamp(min=SRGB_LINEAR_KNEE) ** (1 / 2.4) - 0.055
    return torch.where(y <= SRGB_LINEAR_KNEE, 12.92 * y, curve)


def srgb_slope(linear: Tensor) -> Tensor:
    """The slope of :func:`srgb`'s curve (unclipped) at each linear value: 12.92 up to the
    knee, ``1.055 / 2.4 * y ** (1/2.4 - 1)`` above. ``[...] -> [...]``"""
    curve = 1.055 / 2.4 * linear.clamp(min=SRGB_LINEAR_KNEE) ** (1 / 2.4 - 1)
    return torch.where(linear <= SRGB_LINEAR_KNEE, torch.full_like(linear, 12.92), curve)


def gaussian_window(size: int, sigma: float, dtype: torch.dtype) -> Tensor:
    """A normalised separable Gaussian, as one axis. ``-> [size]``"""
    x = torch.arange(size, dtype=dtype) - (size - 1) / 2
    weights = torch.exp(-0.5 * (x / sigma) ** 2)
    return weights / weights.sum()


def _blur(images: Tensor, window: Tensor) -> Tensor:
    """Each channel filtered by ``window`` in y then x, only where it fits (no padding).

    ``[B,C,H,W] -> [B,C,H-k+1,W-k+1]``
    """
    channels, size = images.shape[1], window.numel()
    vertical = window.view(1, 1, size, 1).expand(channels, 1, size, 1)
    horizontal = window.view(1, 1, 1, size).expand(channels, 1, 1, size)
    return F.conv2d(F.conv2d(images, vertical, groups=channels), horizontal, groups=channels)


def ssim(image: Tensor, reference: Tensor) -> float:
    """Mean structural similarity of two batches of display images in [0, 1].

    ``[B,C,H,W], [B,C,H,W] -> float`` in [-1, 1], 1 for identical images: the mean over
    images, channels and every window position that lies inside the image (skimage crops
    the same border). An image smaller than 11 pixels gets the largest odd window it
    holds. Computed in the inputs' dtype (float32 or float64).
    """
    if image.shape != reference.shape or image.dim() != 4:
        raise ValueError(f"ssim: shapes {list(image.shape)} and {list(reference.shape)}")
    size = min(SSIM_WINDOW, image.shape[-2], image.shape[-1])
    size -= 1 - size % 2  # odd, so the window has a centre pixel
    window = gaussian_window(size, SSIM_SIGMA, image.dtype).to(image.device)
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    mu_x, mu_y = _blur(image, window), _blur(reference, window)
    # population (co)variances: E[xy] - E[x]E[y], as use_sample_covariance=False
    var_x = _blur(image * image, window) - mu_x * mu_x
    var_y = _blur(reference * reference, window) - mu_y * mu_y
    cov = _blur(image * reference, window) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    denominator = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return (numerator / denominator).mean().item()


def display_ssim(image: Tensor, reference: Tensor) -> float:
    """SSIM of two linear batches ``[B,3,H,W]`` as shown: sRGB-encoded, clipped."""
    return ssim(srgb(image.float()), srgb(reference.float()))


def psnr(image: Tensor | np.ndarray, reference: Tensor | np.ndarray, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of linear images, against white ``peak``.

    Tensors or arrays of the same shape (``[B,3,H,W]`` or ``[H,W,3]``), accumulated in
    float64 a slice of the first axis at a time.
    """
    image, reference = torch.as_tensor(image), torch.as_tensor(reference)
    total = 0.0
    for part, truth in zip(image.split(PSNR_SLICE), reference.split(PSNR_SLICE), strict=True):
        total += torch.sum((part.double() - truth.double()) ** 2).item()
    mse = total / image.numel()
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)
