"""A small learned noise estimator for ``benchmarks/noise_estimation.py``: what noise
produced this tile, trained on the denoiser's photos with synthetic noise.

- tiles: 32x32 of one channel; each divided, after its mean, by its own robust high-pass
  sigma ``s`` (Immerkaer's kernel, median |d| / 0.6745), so the network is blind to scale;
- target: ``log(sigma / s)``, sigma the RMS of the true noise over the tile: how much of
  the high-pass is noise (texture makes ``s`` too large, the target negative);
- network: three 3x3 convolutions (1 -> 16 -> 16 -> 32, the last two with stride 2),
  ReLU, the mean over the tile and a linear layer (7,000 weights);
- training: ``data/photos/train`` through 8-bit sRGB (as the benchmark's photos), linear
  or sRGB-encoded at random, with the denoiser's noise model: (a, b) log-uniform over
  a in [1, 1e8] and b in [0.01, 1000] on the 0..65535 scale, b = 0 for a quarter;
  Adam, lr 2e-3, batch 64, for ``seconds`` on one thread, seeded;
- estimate: at most ``MAX_TILES`` tiles of every channel on an even grid, each tile's
  variance ``(s exp(output))^2`` at its mean; level sets of tiles by mean, the median
  per set, and kpn's weighted line (:func:`kpn.infer.noise_estimate.fit_line`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kpn.errors import KpnError
from kpn.infer.noise_estimate import fit_line
from kpn.infer.noise_patches import MAD_TO_SIGMA, high_pass
from kpn.io.images import linear_to_srgb, srgb_to_linear
from kpn.io.pfm import read_pfm
from kpn.model.features import NOISE_SCALE

TILE = 32
MAX_TILES = 512
SETS = 12
PHOTOS = Path(__file__).resolve().parents[1] / "data" / "photos" / "train"


class TileNet(nn.Module):
    """``[B,1,TILE,TILE] -> [B]``: log(noise sigma / the tile's robust high-pass sigma)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3), nn.ReLU(),
            nn.Conv2d(16, 16, 3, stride=2), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(32, 1)

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(tiles).mean(dim=(2, 3)))[:, 0]


def robust_sigma(tiles: np.ndarray) -> np.ndarray:
    """``[n, T, T] -> [n]``: each tile's (median |Immerkaer high-pass|) / 0.6745."""
    detail = np.abs(high_pass(tiles.astype(np.float32)).reshape(len(tiles), -1))
    return np.median(detail, axis=1) * MAD_TO_SIGMA


def normalised(tiles: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """(network input ``[n,1,T,T]``, scale ``s [n]``) of tiles ``[n, T, T]``."""
    scale = np.maximum(robust_sigma(tiles), 1e-8)
    centred = tiles - tiles.mean(axis=(1, 2), keepdims=True)
    return torch.from_numpy((centred / scale[:, None, None]).astype(np.float32))[:, None], scale


def training_photos() -> list[np.ndarray]:
    """The denoiser's photos as the benchmark's are: 8-bit sRGB, decoded; ``[H,W,3]``."""
    photos = []
    for path in sorted(PHOTOS.glob("*.pfm")):
        srgb = np.round(linear_to_srgb(np.clip(read_pfm(path), 0, 1)) * 255) / 255
        photos.append(srgb.astype(np.float32))
    if not photos:
        raise KpnError(f"{PHOTOS}: no training photos (python -m kpn photos data/photos)")
    return photos


def training_batch(
    photos: list[np.ndarray], rng: np.random.Generator, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs ``[size,1,T,T]``, targets ``[size]``): random noisy tiles and log(sigma/s)."""
    tiles, sigmas = [], []
    for _ in range(size):
        photo = photos[rng.integers(len(photos))]
        top = rng.integers(photo.shape[0] - TILE + 1)
        left = rng.integers(photo.shape[1] - TILE + 1)
        clean = photo[top : top + TILE, left : left + TILE, rng.integers(3)].astype(np.float64)
        if rng.random() < 0.5:
            clean = srgb_to_linear(clean)
        a = 10 ** rng.uniform(0, 8)
        b = 0.0 if rng.random() < 0.25 else 10 ** rng.uniform(-2, 3)
        variance = (a + NOISE_SCALE * np.maximum(clean, 0) * b) / NOISE_SCALE**2
        tiles.append(clean + np.sqrt(variance) * rng.standard_normal(clean.shape))
        sigmas.append(math.sqrt(variance.mean()))
    inputs, scale = normalised(np.array(tiles))
    return inputs, torch.from_numpy(np.log(np.array(sigmas) / scale).astype(np.float32))


def train(seconds: float = 180.0, seed: int = 0) -> tuple[TileNet, int]:
    """A :class:`TileNet` trained for ``seconds`` (one thread): (network, steps)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    photos = training_photos()
    net = TileNet()
    optimiser = torch.optim.Adam(net.parameters(), lr=2e-3)
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        inputs, targets = training_batch(photos, rng, 64)
        loss = nn.functional.smooth_l1_loss(net(inputs), targets, beta=0.1)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        steps += 1
    return net.eval(), steps


def estimate(net: TileNet, image: np.ndarray) -> tuple[float, float]:
    """(a, b) on the 0..65535 scale of ``image [H,W,C]`` (module docstring)."""
    height, width, channels = image.shape
    rows, columns = height // TILE, width // TILE
    if rows * columns * channels < 2 * SETS:
        raise KpnError("too small")
    grid = image[: rows * TILE, : columns * TILE].reshape(rows, TILE, columns, TILE, channels)
    tiles = grid.transpose(0, 2, 4, 1, 3).reshape(-1, TILE, TILE)
    step = max(1, math.ceil(len(tiles) / MAX_TILES))
    tiles = tiles[::step]
    inputs, scale = normalised(tiles)
    with torch.no_grad():
        variance = (scale * np.exp(net(inputs).numpy().astype(np.float64))) ** 2
    means = tiles.mean(axis=(1, 2))
    order = np.argsort(means)
    parts = np.array_split(order, SETS)
    level = np.array([means[p].mean() for p in parts])
    median = np.array([np.median(variance[p]) for p in parts])
    alpha, beta = fit_line(level, median, np.array([float(len(p)) for p in parts]))
    return alpha * NOISE_SCALE**2, beta * NOISE_SCALE
