"""The measurements of ``benchmarks/speed.py``, each run in a child process of its own
(``speed.py --child TASK``): its peak resident memory is its own, and a ``--baseline REV``
child imports that revision's kpn (``PYTHONPATH`` names its worktree), which may predate
the subpackages; hence the fallback imports below.

A child prints one JSON object: seconds and the FLOP limit of its dtype measured between
its repeats (:func:`measure`), or a table of milliseconds per stage (:func:`stage_table`),
or PSNR differences (:func:`child_quality`).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile, record_function

import kpn
from kpn.config import Config, load_config

try:  # the child of a --baseline imports that revision's kpn, which may be flat
    from kpn.infer.denoiser import Denoiser
    from kpn.metrics import psnr
    from kpn.model.network import KPN
    from kpn.model.summary import flops_per_pixel
    from kpn.train.loss import kpn_loss
    from kpn.train.optim import clip_gradients_, make_optimizer
except ImportError:  # kpn before its subpackages (1a63088 and earlier)
    from kpn.loss import kpn_loss, psnr  # type: ignore[no-redef]
    from kpn.optim import clip_gradients_, make_optimizer  # type: ignore[no-redef]
    from kpn.summary import flops_per_pixel  # type: ignore[no-redef]

    from kpn.infer import Denoiser  # type: ignore[no-redef]
    from kpn.model import KPN  # type: ignore[no-redef]

from report import matmul_gflops, peak_rss_mb

# "band": training's MLP, kernel weights and apply in one (kpn.model.band, hand-written backward)
STAGES = ("pyramid", "features", "mlp", "kernel_weights", "apply", "band", "blend", "copies")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def measure(function: Callable[[], object], repeats: int, precision: str) -> dict:
    """Median seconds of ``function`` and the median matmul limit of ``precision``'s dtype,
    timed in turns; after one untimed warm-up."""
    function()
    seconds, limits = [], []
    for _ in range(repeats):
        seconds.append(timed(function))
        limits.append(matmul_gflops(DTYPES[precision]))
    return {"seconds": statistics.median(seconds), "limit_gflops": statistics.median(limits)}


def model_of(config_path: str, precision: str) -> tuple[KPN, Config]:
    """The config's model, freshly initialised from seed 0, in ``precision``."""
    config = load_config(config_path)
    torch.manual_seed(0)
    return KPN(dataclasses.replace(config.model, precision=precision)), config


def square_side(megapixels: float) -> int:
    return round((megapixels * 1e6) ** 0.5)


def train_step_function(config_path: str, precision: str, batch: int | None, tile: int | None):
    """A training step of the config's batch (forward, loss, backward, clip, Adam), its
    FLOPs, the model and its noise profile; backward and optimiser labelled for
    :func:`stage_table`."""
    model, config = model_of(config_path, precision)
    batch, tile = batch or config.data.batch, tile or config.data.tile
    generator = torch.Generator().manual_seed(0)
    clean = torch.rand(batch, 3, tile, tile, generator=generator)
    noisy = clean + 0.02 * torch.randn(clean.shape, generator=generator)
    noise_ab = torch.tensor([[20000.0, 20.0]]).expand(batch, 2)
    optimizer = make_optimizer(model.parameters(), config.train)
    train = config.train
    buffer_size = (config.model.n_hidden + 1) * config.model.width**2  # as kpn.train.loop's

    def step() -> None:
        loss = kpn_loss(model(noisy, noise_ab), clean, train.loss, train.loss_reduction)
        optimizer.zero_grad(set_to_none=True)
        with record_function("backward"):
            loss.backward()
        with record_function("optimiser"):
            clip_gradients_(model.mlp.weights, train, buffer_size)
            optimizer.step()

    flops = 3 * flops_per_pixel(config.model, tile, tile) * tile * tile * batch
    return step, flops, model, noise_ab[:1]


def as_train_py() -> None:
    """Set up the process as train.py does, in the kpn measured (a baseline's may not)."""
    try:
        from kpn.train.allocator import keep_freed_memory
    except ImportError:
        try:
            from kpn.allocator import keep_freed_memory  # type: ignore[no-redef]
        except ImportError:  # before the allocator
            return
    keep_freed_memory()


def child_train(args: argparse.Namespace) -> dict:
    as_train_py()
    step, flops, _, _ = train_step_function(args.config, args.precision, args.batch, args.tile)
    result = measure(step, args.repeats, args.precision)
    return result | {"gflop": flops / 1e9, "kpn": str(Path(kpn.__file__).parent)}


def stage_table(function: Callable[[], object], runs: int) -> dict[str, float]:
    """Milliseconds per run of each labelled stage, and of the whole, under the profiler."""
    function()
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        start = time.perf_counter()
        for _ in range(runs):
            function()
        total = (time.perf_counter() - start) / runs
    events = {event.key: event for event in profiler.key_averages()}
    table = {
        name: events[name].cpu_time_total / runs / 1e3
        for name in (*STAGES, "backward", "optimiser")
        if name in events
    }
    return table | {"total": total * 1e3}


def child_stages(args: argparse.Namespace) -> dict:
    as_train_py()
    step, _, model, noise_ab = train_step_function(
        args.config, args.precision, args.batch, args.tile
    )
    side = square_side(args.size)
    image = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0))

    def forward() -> None:
        with torch.no_grad():
            model(image, noise_ab)

    runs = max(1, args.repeats)
    return {"train": stage_table(step, runs), "forward": stage_table(forward, runs)}


def denoiser_of(args: argparse.Namespace) -> tuple[Denoiser, KPN]:
    """infer.py's denoiser of the config's model (float32 weights) in ``--precision``."""
    model, config = model_of(args.config, "fp32")
    # the network's speed: SURE (kpn.infer.sure) runs it twice
    return Denoiser.build(model, config.infer, precision=args.precision, sure=False), model


def child_infer(args: argparse.Namespace) -> dict:
    denoiser, model = denoiser_of(args)
    side = square_side(args.size)
    noisy = np.random.default_rng(0).random((side, side, 3), dtype=np.float32)  # the only image
    image_mb = noisy.nbytes / 2**20
    base_rss = peak_rss_mb()
    repeats = 1 if args.size >= 20 else args.repeats
    result = measure(lambda: denoiser(noisy, 20000.0, 20.0), repeats, args.precision)
    flops = flops_per_pixel(model.config, side, side) * side * side
    return result | {
        "gflop": flops / 1e9,
        "mpx": side * side / 1e6,
        "image_mb": image_mb,
        "rss_before_mb": base_rss,
        "peak_rss_mb": peak_rss_mb(),
    }


def child_images(args: argparse.Namespace) -> dict:
    """Seconds for ``--count`` images of ``--size`` Mpx, one after the other."""
    denoiser, _ = denoiser_of(args)
    side = square_side(args.size)
    noisy = np.random.default_rng(0).random((side, side, 3), dtype=np.float32)
    denoiser(noisy[:64, :64].copy(), 20000.0, 20.0)  # warm-up
    if args.sync:  # start together with a sibling process: the parent says when
        print("ready", flush=True)
        sys.stdin.readline()
    return {"seconds": timed(lambda: [denoiser(noisy, 20000.0, 20.0) for _ in range(args.count)])}


def child_quality(args: argparse.Namespace) -> dict:
    """PSNR of the shipped design model, bf16 minus fp32, per camera condition."""
    # here, not at the top: a --baseline child's kpn may lack what it imports
    from quality_data import CONDITIONS, PHOTOS, load_photo, make_noisy

    models = {p: kpn.load(precision=p) for p in ("fp32", "bf16")}
    rows = {}
    for condition in CONDITIONS:
        if condition.domain != "linear":
            continue
        differences = []
        for seed, name in enumerate(PHOTOS):
            clean, noisy = make_noisy(load_photo(name, None), condition, seed)
            scores = {
                p: psnr(np.clip(m(noisy, (condition.a, condition.b)), 0, 1), clean)
                for p, m in models.items()
            }
            differences.append(scores["bf16"] - scores["fp32"])
        rows[condition.name] = {"mean": float(np.mean(differences)), "worst": min(differences)}
    return rows


CHILDREN = {
    "train": child_train,
    "stages": child_stages,
    "infer": child_infer,
    "images": child_images,
    "quality": child_quality,
}
