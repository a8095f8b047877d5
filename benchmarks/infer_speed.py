"""Inference speed of kpn-infer's denoiser at 1, 4 and 24 Mpx, with memory and FLOP use.

    python benchmarks/infer_speed.py [--config configs/design.toml] [--sizes 1,4,24]
        [--variants fp32,bf16,compile] [--tile 1024] [--compile-tile 128] [--repeats 3]
        [--quick]

Each variant runs in its own process (so that its peak resident memory is its own) and
denoises a generated noisy image of each size through :class:`kpn.infer.Denoiser`, the
path the command line takes (tiled, ``torch.no_grad``, output preallocated). Per size it
prints seconds (median of ``--repeats``; one run at 20 Mpx and above), Mpx/s, the MLP's
GFLOP/s (FLOPs per pixel from ``kpn.summary.flops_per_pixel``) as a fraction of a float32
matmul measured in the same process between the runs (the machine's FLOP limit as
torch sees it), the peak resident memory so far (``ru_maxrss``), and the PSNR of the
output against the clean image, and its difference from fp32's ("cost").

Variants: ``fp32``; ``bf16`` (fp32 with the matrix products in bfloat16, autocast);
``compile`` (fp32, the per-tile function through ``torch.compile``; its first run
compiles, cached by inductor on disk across runs, and is not timed; it tiles with
``--compile-tile``, as Dynamo unrolls ``filter_level``'s loop over bands of 16384 pixels
for every tile shape: a 1024 tile is 64 bands and did not finish compiling in 25 minutes,
a 128 tile took about 8 minutes and 8 recompilations). The model is the
config's, freshly initialised with a fixed seed (vkdt's Xavier): the speed of a trained
model is the same, the PSNR cost of bf16 is indicative only. ``--quick``: 1 and 4 Mpx,
one repeat.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from kpn.config import load_config
from kpn.infer import Denoiser
from kpn.model import KPN
from kpn.summary import flops_per_pixel

from report import matmul_gflops, peak_rss_mb

NOISE_AB = (2e5, 40.0)  # sigma ~ 0.03 at mid grey
BAND = 256  # rows per band when generating and scoring


def scene_rows(top: int, bottom: int, height: int, width: int) -> np.ndarray:
    """Rows top..bottom of a smooth colour scene with hard-edged discs, ``[h,W,3]``."""
    y = (np.arange(top, bottom, dtype=np.float32) / height)[:, None]
    x = (np.arange(width, dtype=np.float32) / width)[None, :]
    image = np.stack(
        np.broadcast_arrays(0.2 + 0.6 * x, 0.2 + 0.6 * y, 0.25 * (x + y) + 0 * x), axis=-1
    ).astype(np.float32)
    rng = np.random.default_rng(0)
    aspect = width / height
    for _ in range(12):
        cx, cy, radius = rng.uniform(0, 1, 3)
        colour = rng.uniform(0, 1, 3).astype(np.float32)
        inside = ((x - cx) * aspect) ** 2 + (y - cy) ** 2 < (0.05 + 0.15 * radius) ** 2
        image[inside] = colour
    return image


def noisy_scene(height: int, width: int) -> np.ndarray:
    """The scene with SPEC 8's noise of ``NOISE_AB``, made band by band (one full copy)."""
    a, b = NOISE_AB
    noisy = np.empty((height, width, 3), dtype=np.float32)
    rng = np.random.default_rng(1)
    for top in range(0, height, BAND):
        clean = scene_rows(top, min(top + BAND, height), height, width)
        sigma = np.sqrt(a + 65535 * np.maximum(clean, 0) * b) / 65535
        noisy[top : top + len(clean)] = clean + sigma * rng.standard_normal(clean.shape, np.float32)
    return noisy


def psnr_to_scene(image: np.ndarray) -> float:
    height, width = image.shape[:2]
    total = 0.0
    for top in range(0, height, BAND):
        clean = scene_rows(top, min(top + BAND, height), height, width)
        total += float(np.square(image[top : top + len(clean)] - clean, dtype=np.float64).sum())
    return 10 * math.log10(image.size / total)


def child(args: argparse.Namespace) -> None:
    """One variant, every size: one JSON line per size on stdout."""
    config = load_config(args.config)
    torch.manual_seed(0)
    model = KPN(config.model)
    infer = config.infer
    precision = "bf16" if args.variant == "bf16" else "fp32"
    tile = args.compile_tile if args.variant == "compile" else args.tile
    denoiser = Denoiser.build(model, infer, precision=precision, tile=tile)
    denoiser.compile = args.variant == "compile"
    for megapixels in (float(s) for s in args.sizes.split(",")):
        width = round(math.sqrt(megapixels * 1e6 * 1.5))  # 3:2, as a camera's
        height = round(megapixels * 1e6 / width)
        noisy = noisy_scene(height, width)
        if args.variant == "compile":
            compile_start = time.perf_counter()
            denoiser(noisy, *NOISE_AB)  # compiles (or loads from inductor's cache)
            compile_s = time.perf_counter() - compile_start
        else:
            compile_s = 0.0
        repeats = 1 if megapixels >= 20 else args.repeats
        seconds, limits = [], []
        for _ in range(repeats):
            limits.append(matmul_gflops(torch.float32))
            start = time.perf_counter()
            denoised = denoiser(noisy, *NOISE_AB)
            seconds.append(time.perf_counter() - start)
        limits.append(matmul_gflops(torch.float32))
        median = statistics.median(seconds)
        pixels = height * width
        mlp = flops_per_pixel(denoiser.config, height, width) * pixels / median / 1e9
        limit = statistics.median(limits)
        print(
            json.dumps(
                {
                    "variant": args.variant,
                    "size": f"{width}x{height}",
                    "mpx": pixels / 1e6,
                    "seconds": median,
                    "mpx_s": pixels / median / 1e6,
                    "mlp_gflops": mlp,
                    "limit_gflops": limit,
                    "bf16_limit_gflops": matmul_gflops(torch.bfloat16),
                    "peak_rss_mb": peak_rss_mb(),
                    "psnr_noisy": psnr_to_scene(noisy),
                    "psnr": psnr_to_scene(denoised),
                    "compile_s": compile_s,
                }
            ),
            flush=True,
        )
        del noisy, denoised


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/design.toml")
    parser.add_argument("--sizes", default="1,4,24", help="megapixels, comma separated")
    parser.add_argument("--variants", default="fp32,bf16,compile")
    parser.add_argument("--tile", type=int, default=None, help="default: the config's")
    parser.add_argument("--compile-tile", type=int, default=128, help="tile of 'compile'")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 and 4 Mpx, one repeat")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # child process
    args = parser.parse_args(argv)
    if args.variant:
        child(args)
        return
    if args.quick:
        args.sizes, args.repeats = "1,4", 1
    print(
        f"{args.config}, tile {args.tile or 'from config'}, {torch.get_num_threads()} threads, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, torch "
        f"{torch.__version__}, noise (a, b) = {NOISE_AB}, load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    results = []
    for variant in args.variants.split(","):
        command = [sys.executable, __file__, "--variant", variant, "--config", args.config,
                   "--sizes", args.sizes, "--repeats", str(args.repeats)]  # fmt: skip
        if args.tile is not None:
            command += ["--tile", str(args.tile)]
        command += ["--compile-tile", str(args.compile_tile)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            print(f"{variant}: failed\n{done.stderr.strip()}")
            continue
        for line in done.stdout.splitlines():
            row = json.loads(line)
            results.append(row)
            extra = f", compile {row['compile_s']:.0f} s" if row["compile_s"] else ""
            print(
                f"{row['variant']:>8} {row['size']:>10} ({row['mpx']:.1f} Mpx): "
                f"{row['seconds']:.2f} s, {row['mpx_s']:.2f} Mpx/s, MLP "
                f"{row['mlp_gflops']:.1f} GFLOP/s = {row['mlp_gflops'] / row['limit_gflops']:.0%} "
                f"of fp32 matmul {row['limit_gflops']:.0f} (bf16 matmul "
                f"{row['bf16_limit_gflops']:.0f}), peak RSS {row['peak_rss_mb']:.0f} MB, "
                f"PSNR {row['psnr_noisy']:.2f} -> {row['psnr']:.3f} dB{extra}",
                flush=True,
            )
    reference = {r["size"]: r["psnr"] for r in results if r["variant"] == "fp32"}
    for row in results:
        if row["variant"] != "fp32" and row["size"] in reference:
            cost = reference[row["size"]] - row["psnr"]
            print(f"{row['variant']} at {row['size']}: PSNR cost {cost:+.4f} dB vs fp32")


if __name__ == "__main__":
    main()
