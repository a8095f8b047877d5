"""Tiles per second of each dataset beside the training step time of a preset.

    python benchmarks/data_speed.py [--config configs/design.toml] [--device cpu]
                                    [--repeats 7] [--batches 10]

The training step is forward + backward + Adam step of the model as train.py runs it
(``config.training_model``: ``train.precision`` applied; :mod:`kpn.train.allocator`) on one batch
of ``data.batch`` tiles of ``data.tile`` pixels with the configured loss (median of
``--repeats`` after a warm-up). Each dataset (``deadleaves``; ``clean`` and ``pairs`` on
temporary PFM files) makes ``--batches`` batches in this process on one thread, as one
loader worker does; its share of a step is the time to make one batch over the step time,
with a target below 10%: then one worker keeps up with ten steps' worth of training and
``data.workers`` workers leave the training loop idle-free. Last, the loader with
``data.workers`` workers is timed alone (tiles per second it delivers).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from kpn.config import DataConfig, load_config
from kpn.data.loader import make_dataset, make_loader
from kpn.io.pfm import write_pfm
from kpn.model.network import KPN
from kpn.train.allocator import keep_freed_memory
from kpn.train.loss import kpn_loss

FILE_SIDE = 512  # the temporary clean and noisy images
FILE_COUNT = 4


def median_seconds(function: Callable[[], object], repeats: int) -> float:
    function()  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def training_step_seconds(config_path: str, device: torch.device, repeats: int) -> float:
    config = load_config(config_path)
    keep_freed_memory()  # as train.py
    model = KPN(config.training_model).to(device)  # train.precision applied, as train.py
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    shape = (config.data.batch, 3, config.data.tile, config.data.tile)
    generator = torch.Generator().manual_seed(0)
    reference = torch.rand(shape, generator=generator).to(device)
    noisy = (reference + 0.05 * torch.randn(shape, generator=generator)).to(device)
    noise_ab = torch.tensor([[1e4, 10.0]]).expand(shape[0], 2).contiguous().to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        output = model(noisy, noise_ab)
        loss = kpn_loss(output, reference, config.train.loss, config.train.loss_reduction)
        loss.backward()
        optimizer.step()
        sync()

    return median_seconds(step, repeats)


def write_files(folder: Path) -> tuple[Path, Path]:
    """FILE_COUNT clean and noisy PFM images of FILE_SIDE pixels."""
    references, noisies = folder / "reference", folder / "noisy"
    references.mkdir(), noisies.mkdir()
    rng = np.random.default_rng(0)
    for k in range(FILE_COUNT):
        clean = rng.random((FILE_SIDE, FILE_SIDE, 3), dtype=np.float32)
        write_pfm(references / f"{k}.pfm", clean)
        write_pfm(noisies / f"{k}.pfm", clean + rng.normal(0, 0.01, clean.shape).astype("f4"))
    return references, noisies


def batch_seconds(config: DataConfig, batches: int) -> float:
    """Seconds to make one batch in this process on one thread (median)."""
    dataset = make_dataset(config, seed=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a loader worker
    try:
        indices = iter(range(0, 10**9, config.batch))

        def one_batch() -> None:
            first = next(indices)
            dataset.__getitems__(range(first, first + config.batch))

        return median_seconds(one_batch, batches)
    finally:
        torch.set_num_threads(threads)


def loader_tiles_per_second(config: DataConfig, batches: int) -> float:
    loader = make_loader(make_dataset(config, seed=0), config.batch, config.workers)
    stream = iter(loader)
    next(stream)  # workers started
    start = time.perf_counter()
    for _ in itertools.islice(stream, batches):
        pass
    return batches * config.batch / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--config", default="configs/design.toml")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=7, help="training steps timed")
    parser.add_argument("--batches", type=int, default=10, help="batches timed per dataset")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    data = load_config(args.config).data
    print(
        f"{args.config}: batch {data.batch} of {data.tile}x{data.tile} tiles, generate "
        f"{data.generate}; {device}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    # timings on a shared machine move with its load: say what it was
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    step = training_step_seconds(args.config, device, args.repeats)
    print(f"training step (forward + backward + Adam): {step * 1e3:.1f} ms")

    print(f"{'dataset':<12}{'tiles/s (1 thread)':>20}{'ms per batch':>14}{'share of a step':>17}")
    with tempfile.TemporaryDirectory() as folder:
        references, noisies = write_files(Path(folder))
        sources = {
            "deadleaves": data,
            "clean": dataclasses.replace(data, source="clean", reference_dir=str(references)),
            "pairs": dataclasses.replace(
                data,
                source="pairs",
                reference_dir=str(references),
                noisy_dir=str(noisies),
                noise_a=100.0,
                noise_b=1.0,
            ),
        }
        for name, config in sources.items():
            seconds = batch_seconds(config, args.batches)
            share = seconds / step
            verdict = "ok" if share < 0.1 else "ABOVE the 10% target"
            print(
                f"{name:<12}{config.batch / seconds:>20.0f}{seconds * 1e3:>14.1f}"
                f"{share:>16.1%}  {verdict}"
            )
    tiles = loader_tiles_per_second(data, args.batches)
    print(
        f"loader (deadleaves, {data.workers} workers): {tiles:.0f} tiles/s, "
        f"{data.batch / tiles * 1e3:.1f} ms per batch"
    )


if __name__ == "__main__":
    main()
