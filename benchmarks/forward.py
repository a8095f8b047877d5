"""Forward throughput of a preset beside the machine's matmul speed, measured in one run.

    python benchmarks/forward.py [--config configs/design.toml] [--sizes 1,4] [--repeats 5]

For each size (megapixels) it prints the forward pass's Mpx/s, the MLP GFLOP/s this
implies (FLOPs per pixel from ``kpn.summary``) and that as a fraction of the FLOP limit:
a large square float32 matmul timed in the same run, interleaved with the forward
passes so that both see the same machine load. Medians over ``--repeats``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from kpn.config import load_config
from kpn.model import KPN
from kpn.summary import flops_per_pixel

MATMUL_SIZE = 2048


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/design.toml")
    parser.add_argument("--sizes", default="1,4", help="megapixels, comma separated")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    config = load_config(args.config)
    model = KPN(config.model).to(device)
    a = torch.rand(MATMUL_SIZE, MATMUL_SIZE, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def matmul() -> None:
        a @ a
        sync()

    threads = torch.get_num_threads()
    print(f"{args.config} on {device}, {threads} threads, torch {torch.__version__}")
    for megapixels in (float(s) for s in args.sizes.split(",")):
        side = int(round((megapixels * 1e6) ** 0.5 / 16) * 16)
        noisy = torch.rand(1, 3, side, side, device=device)
        noise_ab = torch.tensor([[1e4, 10.0]], device=device)

        def forward(noisy=noisy, noise_ab=noise_ab) -> None:
            with torch.no_grad():
                model(noisy, noise_ab)
            sync()

        forward(), matmul()  # warm up
        forward_s, matmul_s = [], []
        for _ in range(args.repeats):
            forward_s.append(timed(forward))
            matmul_s.append(timed(matmul))
        seconds = statistics.median(forward_s)
        limit = 2 * MATMUL_SIZE**3 / statistics.median(matmul_s) / 1e9
        pixels = side * side
        achieved = flops_per_pixel(config.model, side, side) * pixels / seconds / 1e9
        print(
            f"{side}x{side} ({pixels / 1e6:.2f} Mpx): {seconds:.3f} s, "
            f"{pixels / seconds / 1e6:.2f} Mpx/s, MLP {achieved:.1f} GFLOP/s of "
            f"matmul {limit:.1f} GFLOP/s = {achieved / limit:.0%} of the FLOP limit"
        )


if __name__ == "__main__":
    main()
