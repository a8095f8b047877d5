"""The photos and noises of the quality benchmark (``benchmarks/quality.py``), shared with
``benchmarks/speed.py``'s quality cost of bf16.

Photos: scikit-image's bundled ones, sRGB-encoded; the clean reference is their linear
decoding for camera noise, the encoded values for sRGB noise. Noises (:class:`Condition`):
a Sony ILCE-7M3's Gaussian-Poissonian profiles at high ISO, pushed by k EV, on the linear
image, and Gaussian sigma of 255 on the encoded one. A noisy image is a pure function of
its seed (:func:`make_noisy`), so that a later run sees the same noisy inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from kpn.data.synthesis import add_noise
from kpn.io.images import srgb_to_linear

U16 = 65535.0
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle")
QUICK_SIZE = 96


@dataclass(frozen=True)
class Condition:
    """One noise setting: profile (a, b) on the 0..65535 scale of the image it is added to."""

    name: str
    domain: str  # "linear" (camera noise on the linear image) or "srgb" (on encoded values)
    a: float
    b: float
    level: float  # noise std at 18% grey of the noisy domain, for the plot's axis


def camera_condition(iso: int, a: float, b: float, push_ev: int) -> Condition:
    gain = 2.0**push_ev
    a, b = a * gain**2, b * gain
    level = math.sqrt(a + U16 * 0.18 * b) / U16
    return Condition(f"ISO {iso} +{push_ev} EV", "linear", a, b, level)


def srgb_condition(sigma: float) -> Condition:
    return Condition(f"sRGB sigma {sigma:g}", "srgb", (sigma / 255 * U16) ** 2, 0.0, sigma / 255)


# Sony ILCE-7M3, darktable 4.2.1 data/noiseprofiles.json, green channel, on design §8's
# 0..65535 scale (kpn.io.nprof.read_darktable), 5 significant digits
CAMERA = "Sony ILCE-7M3"
CONDITIONS = (
    camera_condition(800, 58.306, 0.51205, 0),  # low noise: where a model must not harm
    camera_condition(3200, 341.63, 1.9003, 1),
    camera_condition(6400, 741.52, 3.7666, 2),
    camera_condition(12800, 1434.2, 7.3766, 3),  # the mid profile
    camera_condition(25600, 2176.3, 14.170, 4),
    srgb_condition(15),
    srgb_condition(25),
    srgb_condition(50),
)
QUICK_CONDITIONS = (CONDITIONS[3], CONDITIONS[6])


def load_photo(name: str, size: int | None) -> np.ndarray:
    """A scikit-image photo as sRGB-encoded float32 ``[H,W,3]`` in [0, 1]; ``size``: a
    centred ``size`` x ``size`` crop."""
    from skimage import data  # the bench extra, only here

    photo = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    if size is not None:
        top, left = (photo.shape[0] - size) // 2, (photo.shape[1] - size) // 2
        photo = photo[top : top + size, left : left + size]
    return photo[..., :3].astype(np.float32) / 255


def make_noisy(srgb: np.ndarray, condition: Condition, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(clean, noisy) in the condition's domain: linear or sRGB-encoded, ``[H,W,3]``."""
    clean = srgb_to_linear(srgb) if condition.domain == "linear" else srgb
    image = torch.from_numpy(np.ascontiguousarray(clean)).permute(2, 0, 1)
    generator = torch.Generator().manual_seed(seed)
    noisy = add_noise(image, torch.tensor([condition.a, condition.b]), generator)
    return clean, noisy.permute(1, 2, 0).numpy()
