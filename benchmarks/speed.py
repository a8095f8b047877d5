"""Forward, training-step and inference throughput of each preset, against the FLOP limit.

    python benchmarks/speed.py [--presets design,vkdt-2024-02,...] [--variants eager-fp32,...]
        [--compile-presets design] [--repeats 5] [--out benchmarks/results] [--quick]

Presets with the same ``[model]`` are one row (design, quick and long are one network).
For each preset and variant a child process (so that its peak resident memory is its
own) measures, medians of ``--repeats``:

- forward: ``kpn_forward`` of a 256x256 image without gradients (compiling a larger one
  takes minutes: Dynamo unrolls the loop over bands of 16384 pixels);
- train step: forward, the preset's loss, backward, gradient clipping and the preset's
  optimiser on a batch of 8 tiles of 64x64 (our three MLP products per pixel: 3x the
  forward's FLOPs); compiled only with ``--compile-train``: Inductor's C++ for the
  backward pass kept gcc busy for over 13 minutes on this machine without finishing;
- inference: :class:`kpn.infer.Denoiser` (tiled, as ``infer.py``) on a 2 Mpx image,
  eager only: compiling it is ``infer.py``'s per-tile ``torch.compile``, which needs
  minutes per tile shape (``benchmarks/infer_speed.py --variants compile`` measures it).

Forward and train step run the preset's model precision (the vkdt presets emulate vkdt's
float16 arithmetic, ``vkdt-f16``, which is slow on a CPU); inference runs float32 or
bfloat16 as ``infer.py --precision`` does. Variants: ``eager-fp32``, ``eager-bf16``
(matrix products in bfloat16 under autocast), ``compiled-fp32`` and ``compiled-bf16``
(``torch.compile`` of the forward, and with ``--compile-train`` of the training step's
forward and backward; the untimed first run, which compiles, is reported). Compiled
variants run for ``--compile-presets`` only, as each costs minutes of compiling on a
small CPU. The FLOP limit is a 2048x2048 matmul in the variant's dtype timed between the
repeats in the same process; the fraction is MLP FLOPs (``kpn.summary.flops_per_pixel``)
over it. Writes ``speed.md`` and ``speed.csv``. ``--quick``: the design preset, 64x64 forward,
two 32x32 tiles, a 128x128 image, one repeat, compiled fp32 included.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from kpn.config import Config, load_config
from kpn.infer import Denoiser
from kpn.loss import kpn_loss
from kpn.model import KPN, kpn_forward
from kpn.optim import clip_gradients_, make_optimizer
from kpn.summary import flops_per_pixel

from report import (
    ROOT,
    markdown_table,
    matmul_gflops,
    peak_rss_mb,
    provenance,
    write_csv,
    write_text,
)

PRESETS = ("design", "vkdt-2024-02", "vkdt-head", "vkdt-head-w32")
SAME_MODEL = {"design": "design, quick, long"}
VARIANTS = ("eager-fp32", "eager-bf16", "compiled-fp32", "compiled-bf16")
NOISE_AB = (2e5, 40.0)
FULL = {"forward": 256, "tiles": 8, "tile": 64, "image": (1200, 1700)}
QUICK = {"forward": 64, "tiles": 2, "tile": 32, "image": (128, 128)}


def measure(function: Callable[[], object], repeats: int, dtype: torch.dtype) -> dict:
    """Median seconds of ``function`` and of the matmul between its runs; the first call
    (compiling, warming caches) is timed apart."""
    start = time.perf_counter()
    function()
    first = time.perf_counter() - start
    seconds, limits = [], [matmul_gflops(dtype)]
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
        limits.append(matmul_gflops(dtype))
    return {"seconds": statistics.median(seconds), "first": first,
            "limit": statistics.median(limits)}  # fmt: skip


def child(args: argparse.Namespace) -> None:
    """One preset and variant: a JSON line per task on stdout."""
    sizes = QUICK if args.quick else FULL
    config: Config = load_config(ROOT / "configs" / f"{args.preset}.toml")
    compiled = args.variant.startswith("compiled")
    bf16 = args.variant.endswith("bf16")
    dtype = torch.bfloat16 if bf16 else torch.float32
    torch.manual_seed(0)
    model = KPN(config.model)
    weights = model.mlp.weights
    generator = torch.Generator().manual_seed(1)

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()

    def emit(task: str, pixels: int, flops: float, result: dict) -> None:
        mpx_s = pixels / result["seconds"] / 1e6
        gflops = flops / result["seconds"] / 1e9
        row = {"preset": args.preset, "variant": args.variant, "task": task, "mpx_s": mpx_s,
               "gflops": gflops, "limit_gflops": result["limit"],
               "fraction": gflops / result["limit"], "seconds": result["seconds"],
               "first_s": result["first"], "peak_rss_mb": peak_rss_mb()}  # fmt: skip
        print(json.dumps(row), flush=True)

    # forward
    side = sizes["forward"]
    noisy = torch.rand(1, 3, side, side, generator=generator)
    noise_ab = torch.tensor([NOISE_AB])

    def forward_pass(noisy: torch.Tensor, noise_ab: torch.Tensor) -> torch.Tensor:
        return kpn_forward(noisy, noise_ab, weights, config.model).output

    forward = torch.compile(forward_pass) if compiled else forward_pass

    def run_forward() -> None:
        with torch.no_grad(), autocast():
            forward(noisy, noise_ab)

    flops = flops_per_pixel(config.model, side, side) * side * side
    emit("forward", side * side, flops, measure(run_forward, args.repeats, dtype))

    if compiled and not args.compile_train:
        return

    # training step
    tile, count = sizes["tile"], sizes["tiles"]
    reference = torch.rand(count, 3, tile, tile, generator=generator)
    batch = reference + 0.05 * torch.randn(reference.shape, generator=generator)
    batch_ab = torch.tensor([NOISE_AB] * count)
    optimizer = make_optimizer(weights, config.train)
    loss_of = torch.compile(forward_pass) if compiled else forward_pass
    train = config.train
    buffer = (config.model.n_hidden + 1) * config.model.width**2  # vkdt's, as kpn.train

    def run_step() -> None:
        with autocast():
            output = loss_of(batch, batch_ab)
        loss = kpn_loss(output.float(), reference, train.loss, train.loss_reduction)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_gradients_(weights, train, buffer)
        optimizer.step()

    flops = 3 * flops_per_pixel(config.model, tile, tile) * tile * tile * count
    emit("train step", count * tile * tile, flops, measure(run_step, args.repeats, dtype))

    if compiled:  # inference is eager only
        return

    # inference
    height, width = sizes["image"]
    image = np.random.default_rng(2).random((height, width, 3), dtype=np.float32)
    denoiser = Denoiser.build(model, config.infer, precision="bf16" if bf16 else "fp32")
    pixels = height * width
    flops = flops_per_pixel(denoiser.config, height, width) * pixels
    result = measure(lambda: denoiser(image, *NOISE_AB), args.repeats, dtype)
    emit("inference", pixels, flops, result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--compile-presets", default="design", help="presets compiled too")
    parser.add_argument(
        "--compile-train", action="store_true",
        help="compile the training step too (gcc needed over 13 minutes for it here)",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results", help="where the tables go")
    parser.add_argument("--quick", action="store_true", help="design, tiny sizes, 1 repeat")
    parser.add_argument("--preset", help=argparse.SUPPRESS)  # child process
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.preset:
        child(args)
        return 0
    if args.quick:
        args.presets, args.variants, args.repeats = "design", "eager-fp32,compiled-fp32", 1
        args.compile_train = True
    presets, variants = args.presets.split(","), args.variants.split(",")
    for preset in presets:
        if not (ROOT / "configs" / f"{preset}.toml").is_file():
            parser.error(f"--presets: no configs/{preset}.toml")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {unknown[0]!r} (known: {', '.join(VARIANTS)})")
    compile_presets = set(args.compile_presets.split(",")) | ({"design"} if args.quick else set())

    rows, failures = [], []
    for preset in presets:
        for variant in variants:
            if variant.startswith("compiled") and preset not in compile_presets:
                continue
            command = [sys.executable, __file__, "--preset", preset, "--variant", variant,
                       "--repeats", str(args.repeats)]  # fmt: skip
            command += ["--quick"] if args.quick else []
            command += ["--compile-train"] if args.compile_train else []
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            for line in done.stdout.splitlines():
                row = json.loads(line)
                rows.append(row)
                print(
                    f"{preset:>14} {variant:>13} {row['task']:>10}: {row['mpx_s']:.3f} Mpx/s, "
                    f"{row['fraction']:.0%} of {row['limit_gflops']:.0f} GFLOP/s, first run "
                    f"{row['first_s']:.1f} s, peak RSS {row['peak_rss_mb']:.0f} MB",
                    flush=True,
                )
            if done.returncode:
                why = (done.stderr.strip().splitlines() or ["no message"])[-1]
                failures.append(f"{preset} {variant}: {why}")
                print(f"{preset} {variant}: failed: {why}", flush=True)

    sizes = QUICK if args.quick else FULL
    table = [
        [SAME_MODEL.get(r["preset"], r["preset"]), r["variant"], r["task"], f"{r['mpx_s']:.3f}",
         f"{r['gflops']:.1f}", f"{r['limit_gflops']:.0f}", f"{r['fraction']:.0%}",
         f"{r['first_s']:.1f}", f"{r['peak_rss_mb']:.0f}"]
        for r in rows
    ]  # fmt: skip
    header = ["preset", "variant", "task", "Mpx/s", "MLP GFLOP/s", "matmul GFLOP/s",
              "of limit", "first run s", "peak RSS MB"]  # fmt: skip
    height, width = sizes["image"]
    text = "\n".join([
        "# Speed: throughput against the machine's FLOP limit", "",
        *provenance(),
        f"- forward: one {sizes['forward']}x{sizes['forward']} image, no gradients; train step: "
        f"{sizes['tiles']} tiles of {sizes['tile']}x{sizes['tile']}, the preset's loss and "
        f"optimiser; inference: a {width}x{height} image through infer.py's tiled Denoiser",
        f"- medians of {args.repeats} runs; noise (a, b) = {NOISE_AB}; freshly initialised "
        "weights (speed does not depend on training)",
        "- FLOP limit: a 2048x2048 matmul in the variant's dtype (fp32 or bf16), timed "
        "between the runs; MLP FLOPs from kpn.summary (train step: 3x the forward's)",
        "- first run: the untimed first call, which compiles for compiled variants",
        "- compiled inference is not run here: see benchmarks/infer_speed.py",
        "- compiled train step: " + ("measured" if args.compile_train else "not run (see "
        "--compile-train: gcc needed over 13 minutes for its backward pass here)"),
        *(f"- failed: {failure}" for failure in failures),
        "", markdown_table(header, table), "",
    ])  # fmt: skip
    out = Path(args.out)
    write_text(out / "speed.md", text)
    write_csv(out / "speed.csv", rows or [{"preset": ""}])
    print(f"wrote {out / 'speed.md'} and {out / 'speed.csv'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
