"""What a training run shows while it runs: TensorBoard events and a progress display."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from kpn.apply import kernel_weights
from kpn.config import Config, config_to_toml
from kpn.model import KPN
from kpn.summary import summary
from kpn.visualize import kernel_stars, matrix_map, side_by_side

if TYPE_CHECKING:
    from kpn.data import TrainingBatch
    from kpn.train import Validation

SAMPLE_IMAGES = 2  # validation images shown in TensorBoard


def open_writer(run_dir: Path, config: Config, model: KPN, step: int) -> SummaryWriter:
    """A TensorBoard writer in the run directory, with the config and model as text."""
    writer = SummaryWriter(log_dir=str(run_dir), purge_step=step if step else None)
    markdown = "\n".join("    " + line for line in config_to_toml(config).splitlines())
    writer.add_text("config", markdown, step)
    text = summary(config.model, config.data.tile, config.data.tile)
    writer.add_text("model", "\n".join("    " + line for line in text.splitlines()), step)
    return writer


def log_pictures(writer: SummaryWriter, model: KPN, batch: TrainingBatch, step: int) -> None:
    """Crops, alpha maps, kernels as stars, weight and gradient maps, histograms."""
    with torch.no_grad():
        result = model.inspect(batch.noisy[:SAMPLE_IMAGES], batch.noise_ab[:SAMPLE_IMAGES])
    for index in range(result.output.shape[0]):
        crops = side_by_side(batch.noisy[index], result.output[index], batch.reference[index])
        writer.add_image(f"images/{index}_noisy_denoised_reference", crops.cpu(), step)
    for level, outputs in enumerate(result.levels):
        writer.add_image(f"alpha/level_{level}", outputs.alpha[0].clamp(0, 1).cpu(), step)
        if outputs.kernel is not None:
            taps = kernel_weights(outputs.kernel[:1, :15], model.config.kernel_activation)
            writer.add_image(f"kernels/level_{level}", kernel_stars(taps[0].cpu()), step)
    for index, layer in enumerate(model.mlp.layers):
        writer.add_image(f"weights/layer_{index}", matrix_map(layer.weight), step)
        writer.add_histogram(f"weights/layer_{index}", layer.weight.detach().cpu(), step)
        if layer.weight.grad is not None and torch.isfinite(layer.weight.grad).all():
            writer.add_image(f"gradients/layer_{index}", matrix_map(layer.weight.grad), step)
            writer.add_histogram(f"gradients/layer_{index}", layer.weight.grad.cpu(), step)


class Progress:
    """A tqdm bar on a terminal; plain periodic lines otherwise (logs, CI)."""

    def __init__(self, total: int, start: int, enabled: bool, every: int) -> None:
        self.enabled = enabled
        self.every = every
        self.total = total
        self.started = time.perf_counter()
        self.start = start
        self.bar = None
        if enabled and sys.stdout.isatty():
            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)

    def update(self, step: int, loss: float, validation: Validation | None) -> None:
        if not self.enabled:
            return
        gain = f"{validation.gain:+.2f} dB" if validation is not None else "n/a"
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(loss=f"{loss:.4g}", val_gain=gain)
        elif step % self.every == 0 or step == self.total:
            elapsed = time.perf_counter() - self.started
            rate = (step - self.start) / elapsed if elapsed > 0 else 0.0
            eta = (self.total - step) / rate if rate > 0 else 0.0
            print(
                f"step {step}/{self.total}  loss {loss:.4g}  val gain {gain}  "
                f"{rate:.2f} steps/s  eta {eta:.0f} s",
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
