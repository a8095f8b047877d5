"""Trained weights as a Python function of arrays: :func:`load` and :func:`denoise`.

    import kpn

    model = kpn.load("runs/quick")  # run directory, checkpoint or .lut; None: the shipped default
    clean = model(noisy, (a, b))  # the noise profile on the 0..65535 scale
    clean = kpn.denoise(noisy, (a, b))  # the same with the shipped default model
    clean = kpn.denoise(noisy)  # the profile estimated from the image (--noise auto)

``noisy`` is linear RGB, as a float numpy array ``[H,W,3]`` or a float torch tensor
``[3,H,W]`` or ``[B,3,H,W]``; the result has the input's type, shape, dtype and device.
``(a, b)`` is the noise variance ``a + b*x`` of a pixel value ``x``, both on the 0..65535
scale, as ``kpn-infer --noise-a/--noise-b`` take them; a batch may give one pair per image
(``[B,2]``). Denoising runs through :class:`kpn.infer.denoiser.Denoiser`: level by level, in tiles,
so memory stays bounded for any image size, and the result equals the untiled network's.
Every bad input is a one-line :class:`kpn.errors.KpnError`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from kpn.config import Config
from kpn.errors import KpnError, ParameterError, mention
from kpn.infer.denoiser import Denoiser
from kpn.infer.noise_estimate import estimate_noise
from kpn.infer.profile import NOISE_RANGE, valid_noise
from kpn.infer.weights import load_weights, shipped_weights

Image = TypeVar("Image", np.ndarray, torch.Tensor)
WeightsPath = str | os.PathLike[str]


@dataclass(frozen=True)
class Model:
    """Trained weights ready to denoise: ``model(image, (a, b)) -> image`` (module docstring).

    ``denoiser`` runs the network, ``config`` is the weights' whole config (its
    ``[infer]`` set the tiling and precision), ``description`` says where they came from.
    """

    denoiser: Denoiser
    config: Config
    description: str

    def __call__(self, image: Image, profile: object = None) -> Image:
        return _denoise(self.denoiser, image, profile)


def load(
    path: WeightsPath | None = None,
    *,
    config: WeightsPath | None = None,
    preset: str | None = None,
    tile: int | None = None,
    precision: str | None = None,
    device: str = "cpu",
    sure: bool | None = None,
    ensemble: int | None = None,
) -> Model:
    """The model of a run directory, a checkpoint or a ``.lut``, ready to call.

    ``path`` None is the shipped model (:func:`kpn.infer.weights.shipped_weights`: the
    default, or the shipped model of ``config``'s ``[model]``). ``config`` and ``preset``
    mean what ``kpn-infer --config/--preset`` mean: ``config`` supplies ``[infer]`` (and
    the model of a ``.lut`` that does not say it), ``preset`` names a config in
    ``configs/`` for such a ``.lut``. ``tile`` (0: untiled), ``precision`` (fp32, bf16,
    vkdt-f16), ``device`` (cpu, cuda), ``sure`` (the SURE blend towards the input,
    :mod:`kpn.infer.sure`) and ``ensemble`` (the mean over 1, 2, 4 or 8 orientations of
    the image, :class:`kpn.infer.denoiser.Denoiser`) override the config's ``[infer]``.
    """
    config_path = None if config is None else os.fspath(config)
    source = shipped_weights(config_path) if path is None else path
    loaded = load_weights(source, config_path, preset)
    denoiser = Denoiser.build(
        loaded.model,
        loaded.config.infer,
        precision=precision,
        tile=tile,
        device=device,
        sure=sure,
        ensemble=ensemble,
    )
    return Model(denoiser, loaded.config, loaded.description)


def denoise(
    image: Image, profile: object = None, weights: WeightsPath | Model | None = None
) -> Image:
    """Denoise ``image`` with noise profile ``profile`` = (a, b) (module docstring).

    ``profile`` None: each image's profile is estimated from the image itself
    (:func:`kpn.infer.noise_estimate.estimate_noise`, as ``kpn-infer --noise auto``); an
    image too small, flat, clipped or textured to estimate, or with noise correlated
    between pixels, is refused with a KpnError that asks for the profile.

    ``weights``: a :class:`Model` from :func:`load`, a path :func:`load` takes, or None
    for the shipped default model. A path is loaded on every call: load once for many
    images.
    """
    model = weights if isinstance(weights, Model) else load(weights)
    return model(image, profile)


# --- arrays in and out -------------------------------------------------------------------
def _denoise(denoiser: Denoiser, image: Image, profile: object) -> Image:
    """Each image of ``image`` through ``denoiser``, back in the input's type and shape."""
    frames = _frames(image)  # [N] of [H,W,3] float32
    if profile is None:
        profiles = _estimated(frames)
    else:
        profiles = _profiles(profile, len(frames), image.ndim == 4)  # [N,2]
    outputs = [denoiser(frame, a, b) for frame, (a, b) in zip(frames, profiles, strict=True)]
    if isinstance(image, np.ndarray):
        return outputs[0].astype(image.dtype, copy=False)
    batch = torch.stack([torch.from_numpy(out).permute(2, 0, 1) for out in outputs])
    result = batch if image.ndim == 4 else batch[0]
    return result.to(device=image.device, dtype=image.dtype)


_SHAPES = "a float numpy array [H,W,3] or a float torch tensor [3,H,W] or [B,3,H,W]"


def _frames(image: object) -> list[np.ndarray]:
    """The images of a numpy ``[H,W,3]`` or torch ``[3,H,W]``/``[B,3,H,W]`` input, as
    contiguous float32 ``[H,W,3]`` arrays; KpnError for anything else or non-finite."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype.kind != "f":
            raise KpnError(
                f"image: expected {_SHAPES} of linear RGB, got a numpy array of shape "
                f"{list(image.shape)} and dtype {image.dtype}"
            )
        frames = [np.ascontiguousarray(image, dtype=np.float32)]
    elif isinstance(image, torch.Tensor):
        channels = {3: 0, 4: 1}.get(image.ndim)
        if channels is None or image.shape[channels] != 3 or not image.is_floating_point():
            raise KpnError(
                f"image: expected {_SHAPES} of linear RGB, got a torch tensor of shape "
                f"{list(image.shape)} and dtype {str(image.dtype).removeprefix('torch.')}"
            )
        batch = image.detach().to("cpu", torch.float32)
        batch = batch.unsqueeze(0) if image.ndim == 3 else batch
        frames = [frame.permute(1, 2, 0).contiguous().numpy() for frame in batch]
    else:
        raise KpnError(f"image: expected {_SHAPES}, got {type(image).__name__}")
    if not frames or frames[0].shape[0] == 0 or frames[0].shape[1] == 0:
        raise KpnError(f"image: shape {list(image.shape)} holds no pixels")
    for index, frame in enumerate(frames):
        if not np.isfinite(frame).all():
            which = f" {index}" if len(frames) > 1 else ""
            raise KpnError(f"image{which} has NaN or Inf pixels (after conversion to float32)")
    return frames


def _estimated(frames: list[np.ndarray]) -> np.ndarray:
    """``[N,2]``: each frame's (a, b) estimated from the frame itself."""
    rows = []
    for index, frame in enumerate(frames):
        where = f"image {index}" if len(frames) > 1 else "image"
        estimate = estimate_noise(frame, where, "give the profile: denoise(image, (a, b))")
        rows.append((estimate.a, estimate.b))
    return np.array(rows, dtype=np.float64)


def _profiles(profile: object, count: int, batched: bool) -> np.ndarray:
    """``profile`` as ``[count, 2]`` float64 (a, b) rows: one pair for every image, or a
    ``[count, 2]`` table for a batch; KpnError unless finite and >= 0."""
    if isinstance(profile, torch.Tensor):
        profile = profile.detach().cpu().numpy()
    wanted = "(a, b)" + (f" or [{count}, 2], one (a, b) per image" if batched else "")
    try:
        array = np.asarray(profile, dtype=np.float64)
    except (TypeError, ValueError):
        raise ParameterError("profile", profile, f"expected {wanted}") from None
    if array.shape != (2,) and (not batched or array.shape != (count, 2)):
        raise KpnError(f"{mention('profile')} of shape {list(array.shape)}: expected {wanted}")
    if not valid_noise(array):
        raise ParameterError(
            "profile",
            array.tolist(),
            f"a and b are noise variances (0..65535 scale), {NOISE_RANGE}",
        )
    return np.broadcast_to(array, (count, 2))
