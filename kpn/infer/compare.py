"""``python -m kpn compare-precision``: what vkdt's float16 arithmetic costs a model.

Denoises each image twice, with ``fp32`` and with ``vkdt-f16`` (docs/design.md §10's emulation of
vkdt's float16 weights, activations, kernels, pyramid images and accumulation), and
reports the PSNR between the two outputs and, given a reference, of each against it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from kpn.errors import ParameterError
from kpn.infer.denoiser import Denoiser
from kpn.infer.files import read_reference, read_source
from kpn.infer.profile import NoiseOptions, resolve_profile
from kpn.infer.weights import load_weights
from kpn.metrics import psnr


@dataclass(frozen=True)
class Comparison:
    """PSNR in dB of one image: fp32 vs vkdt-f16, and each against the reference."""

    image: Path
    profile: str
    fp32_vs_f16: float
    fp32_vs_reference: float | None
    f16_vs_reference: float | None


def compare_precision(
    weights: str,
    images: list[Path],
    references: list[Path | None],
    noise: NoiseOptions,
    config: str | None = None,
    tile: int | None = None,
) -> list[Comparison]:
    """Denoise every image at both precisions and compare (one entry per image)."""
    if len(references) != len(images):
        raise ParameterError(
            "references", len(references), f"give one per image ({len(images)}), or none"
        )
    loaded = load_weights(weights, config)
    # the network's arithmetic alone: SURE's finite differences would blur the comparison
    infer = dataclasses.replace(loaded.config.infer, sure=False)
    fp32 = Denoiser.build(loaded.model, infer, precision="fp32", tile=tile)
    f16 = Denoiser.build(loaded.model, infer, precision="vkdt-f16", tile=tile)
    results = []
    for path, reference_path in zip(images, references, strict=True):
        source = read_source(path)
        profile = resolve_profile(noise, path, source.image, source.raw)
        out32 = fp32(source.image, profile.a, profile.b)
        out16 = f16(source.image, profile.a, profile.b)
        reference = None
        if reference_path is not None:
            reference = read_reference(reference_path, path, source.image)
        results.append(
            Comparison(
                path,
                f"a = {profile.a:g}, b = {profile.b:g} ({profile.source})",
                psnr(out16, out32),
                None if reference is None else psnr(out32, reference),
                None if reference is None else psnr(out16, reference),
            )
        )
    return results
