"""What the tests of kpn.model share: the mirrored sampler and luminance written out by hand
(independently of kpn.model.sampling and kpn.model.features), seeded images for the pyramid
tests, and for the whole-network tests configs, hand-routed and seeded MLP weights, images
and noise profiles.

A plain module, not a conftest.py: tests/conftest.py is imported as ``conftest``, which a
second conftest.py here would replace for every test module. Test modules import these
helpers by name (pytest puts this folder on the path); their fixtures wrap them.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from kpn.config import Config, ModelConfig, load_config
from kpn.model.network import KPN
from kpn.vkdt.export import export_lut

from conftest import SPEC_STAR15_CENTRE

# ----------------------------------------------------------- sampling and luminance by hand


def mirror(index: int, size: int) -> int:
    """MIRRORED_REPEAT by repeated folding at -0.5 and size-0.5 (edge pixel included)."""
    while index < 0 or index >= size:
        index = -1 - index if index < 0 else 2 * size - 1 - index
    return index


Y_R, Y_G, Y_B = 0.2627002, 0.6779981, 0.0593017  # Rec.2020 Y, design §2


def lum_np(rgb: np.ndarray) -> np.ndarray:
    """[..., 3] -> [...] with design §2's weights, written out here."""
    return Y_R * rgb[..., 0] + Y_G * rgb[..., 1] + Y_B * rgb[..., 2]


def pixel(x: Tensor, px: int, py: int) -> Tensor:
    """rgb of image 0 at (x=px, y=py)."""
    return x[0, :, py, px]


# ------------------------------------------------------------------------------ pyramid


def rand(generator: torch.Generator, *shape: int) -> Tensor:
    return torch.rand(*shape, generator=generator, dtype=torch.float64)


def as_np(x: Tensor) -> np.ndarray:
    return x.detach().numpy()


SMALL_SIZES = [(1, 1), (1, 5), (3, 3), (3, 5), (4, 4), (5, 7), (6, 1), (7, 4), (8, 8), (2, 3)]

# ------------------------------------------------------------------------ whole network

F64 = torch.float64
ALPHA = 15  # K[15] is alpha (design §3)
CONSTANT = 31  # star15 channel 31 is 1.0 (design §2)
SIGMA = 30  # star15 channel 30 is the noise sigma (design §2)
TIGHT = {"rtol": 0.0, "atol": 1e-12}


def model_config(**changes: object) -> ModelConfig:
    """``ModelConfig`` with ``changes``; mlp_input follows blend unless given (design §5).

    The input is vkdt's star15 unless given: the routed networks below read its channels.
    """
    changes.setdefault("features", "star15")
    if "blend" in changes and "mlp_input" not in changes:
        changes["mlp_input"] = "detail" if changes["blend"] == "add" else "mip"
    config = dataclasses.replace(ModelConfig(), **changes)
    config.validate("test")
    return config


def zero_weights(config: ModelConfig, dtype: torch.dtype = F64) -> list[Tensor]:
    """All-zero matrices shaped like ``KPN(config).mlp.weights``."""
    width = config.width
    return (
        [torch.zeros(width, config.in_features, dtype=dtype)]
        + [torch.zeros(width, width, dtype=dtype) for _ in range(config.n_hidden - 1)]
        + [torch.zeros(config.outputs, width, dtype=dtype)]
    )


def routed_weights(
    config: ModelConfig,
    source: int = CONSTANT,
    outputs: dict[int, float] | None = None,
    dtype: torch.dtype = F64,
) -> list[Tensor]:
    """star15 weights that carry input channel ``source`` on hidden unit 0 to the outputs.

    W0 row 0 is one-hot on ``source``, every hidden matrix has [0,0] = 1 and W_out[k,0] =
    outputs[k]; everything else is 0. A non-negative input passes every leaky relu
    unchanged, so K_k = outputs[k] * input[source] and every other K is 0.
    """
    weights = zero_weights(config, dtype)
    weights[0][0, source] = 1.0
    for hidden in weights[1:-1]:
        hidden[0, 0] = 1.0
    for k, value in (outputs or {SPEC_STAR15_CENTRE: 1.0}).items():
        weights[-1][k, 0] = value
    return weights


def random_weights(config: ModelConfig, seed: int, scale: float, dtype=F64) -> list[Tensor]:
    """Matrices uniform in +-scale, from a fixed seed."""
    generator = torch.Generator().manual_seed(seed)
    return [
        (2 * torch.rand(w.shape, generator=generator, dtype=dtype) - 1) * scale
        for w in zero_weights(config, dtype)
    ]


def vkdt_init_weights(config: ModelConfig, seed: int, dtype=F64) -> list[Tensor]:
    """vkdt's initialisation (design §3): uniform in +-sqrt(6/(W+W))."""
    return random_weights(config, seed, math.sqrt(6.0 / (2 * config.width)), dtype)


def smooth_weights(config: ModelConfig, seed: int) -> list[Tensor]:
    """Small random weights plus a path that keeps the kernel sum near 1, K15 near 0.5.

    Keeps the plain kernel's normalising sum near 1 (far from max(0.001, sum)), every K far
    from the +-10 replacement and a clamped alpha inside (0, 1): the network stays smooth
    for gradcheck. star15 feeds the path from its constant channel; patch8x8 (no constant)
    from the mean luminance of the 8x8 patch, which is positive on positive images.
    """
    weights = random_weights(config, seed, 0.1)
    if config.features == "star15":
        weights[0][0] = torch.nn.functional.one_hot(torch.tensor(CONSTANT), 32).to(F64)
    else:
        weights[0][0] = 1.0 / 64
    for hidden in weights[1:-1]:
        hidden[0] = 0.0
        hidden[0, 0] = 1.0
    taps = config.kernel_outputs - 1  # star15's or star21's; alpha after them
    for first in range(0, config.outputs, taps + 1):  # each kernel's (luma's, then chroma's)
        out = weights[-1][first : first + taps + 1]
        out[:taps, 0] += 1.0 / taps  # every tap about 1/taps: sums near 1 even when
        out[SPEC_STAR15_CENTRE, 0] += 0.5  # the block transpose mixes pixels' outputs
        out[taps, 0] += 0.5
    return weights


def noise_profiles(batch: int) -> Tensor:
    """Distinct (a, b) per image, on the 0..65535 scale of design §8."""
    return torch.tensor([[1e5 * (i + 1), 100.0 / (i + 1)] for i in range(batch)], dtype=F64)


def random_image(batch: int, height: int, width: int, seed: int = 0, dtype=F64) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.1 + 0.9 * torch.rand(batch, 3, height, width, generator=generator, dtype=dtype)


def design_lut(path: Path) -> tuple[Config, KPN]:
    """The design config and a seeded network of it, written to ``path`` as a float32
    ``.lut`` (one star15 kernel): what ``train.init`` grows into other models."""
    config = load_config("design")
    torch.manual_seed(0)
    network = KPN(config.model)
    export_lut(network.mlp, config, path, dtype="f32")
    return config, network
