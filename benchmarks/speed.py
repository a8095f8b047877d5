"""Speed: where the time goes, training steps per hour, inference seconds and memory, each
figure as a fraction of the machine's matrix-product limit measured in the same process.

    python benchmarks/speed.py [--config configs/long.toml] [--sizes 1,24] [--repeats 3]
        [--baseline REV] [--no-quality] [--out benchmarks/results] [--quick]

Every measurement runs in a child process of its own (``benchmarks/speed_children.py``;
its peak resident memory is its own), which times a square ``MATMUL_SIZE`` matmul in
float32 and in bfloat16 between its repeats: the FLOP limit as torch sees it under the
load of that moment. A figure's fraction is the network's FLOPs (``kpn.model.summary``:
the MLP's products over the levels it filters) per second over the limit of its dtype:
float32 variants against the float32 limit, bf16 ones (``model.precision = "bf16"``: the
hidden layers' products in bfloat16) against the bfloat16 limit. Medians of ``--repeats``.

Sections of ``speed.md``:

- stages: the forward pass of a 1 Mpx image and a training step of ``--config``'s batch,
  per stage (``torch.profiler`` over the ``record_function`` labels of ``kpn.model.network``
  and ``kpn.model.level_filter``: pyramid, features, mlp, kernel_weights, apply, blend,
  copies; a training step's MLP,
  kernel weights and apply are one ``band``, :mod:`kpn.model.band`); the training step's
  backward pass and optimiser as one row each;
- training: a step of ``--config``'s batch and tile (forward, loss, backward, gradient
  clipping, Adam), float32 and bf16, and steps per hour, in a process set up as
  train.py's (:mod:`kpn.train.allocator`); with ``--baseline REV`` also the steps of the code at
  git revision REV (a temporary worktree; REV must know bf16, 66c22be or later) and each
  one's speed-up over it; ``--repeats`` rounds, each running every variant in turn;
- inference: the command line's path (:class:`kpn.infer.denoiser.Denoiser`, tiled) on a noisy
  image of each ``--sizes`` megapixels, float32 and bf16: seconds, Mpx/s, fraction, peak
  RSS against the image's own size;
- threads: two 1 Mpx images by one process of two threads, one after the other, against
  two processes of one thread, one image each, at once;
- quality cost of bf16 (``--no-quality`` skips it; needs the ``bench`` extra): PSNR of
  the shipped design model in bf16 minus float32 on the quality benchmark's photos and
  camera noises (``benchmarks/quality.py``).

``--quick``: a 2-tile batch, 0.06 and 0.25 Mpx, one repeat, no quality section.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from kpn.config import load_config

from report import ROOT, markdown_table, provenance, write_csv, write_text
from speed_children import CHILDREN, DTYPES, STAGES

DEFAULT_CONFIG = "configs/long.toml"


def child_command(task: str, args: argparse.Namespace, **options: object) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", task]
    command += ["--config", args.config, "--repeats", str(args.repeats)]
    for key, value in options.items():
        command += [f"--{key}"] + ([str(value)] if value != "" else [])
    return command


def run_child(command: list[str], env: dict[str, str] | None = None, threads: int = 0) -> dict:
    environment = dict(os.environ, **(env or {}))
    if threads:
        environment["OMP_NUM_THREADS"] = str(threads)
    done = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"speed.py: child {command[3:]} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def baseline_tree(revision: str, folder: Path) -> Path:
    """A worktree of ``revision`` in ``folder``, for its kpn package."""
    tree = folder / "baseline"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(tree), revision],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    return tree


def two_processes(command: list[str]) -> float:
    """Seconds until both of two one-thread children, started together after their
    warm-up, have denoised their image."""
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    pair = [
        subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=environment,
            cwd=ROOT,
        )
        for _ in range(2)
    ]
    for process in pair:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    for process in pair:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    results = [json.loads(process.communicate()[0].strip().splitlines()[-1]) for process in pair]
    return max(result["seconds"] for result in results)


def fraction(result: dict) -> float:
    return result["gflop"] / result["seconds"] / result["limit_gflops"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="the model and batch measured")
    parser.add_argument("--sizes", default="1,24", help="inference image sizes, Mpx")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", help="git revision whose training step to compare")
    parser.add_argument("--no-quality", action="store_true", help="skip bf16's PSNR cost")
    parser.add_argument("--out", default="benchmarks/results", help="where the tables go")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat")
    parser.add_argument("--child", choices=CHILDREN, help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--sync", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--tile", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child](args)))
        return 0

    if args.quick:
        args.repeats, args.sizes, args.no_quality = 1, "0.06,0.25", True
    small = {"batch": 2, "tile": 32} if args.quick else {}
    sizes = [float(size) for size in args.sizes.split(",")]
    config = load_config(args.config)
    rows: list[dict[str, object]] = []
    lines = ["# Speed", "", *provenance(), ""]

    # stages
    stages = {
        p: run_child(child_command("stages", args, precision=p, size=min(sizes), **small))
        for p in DTYPES
    }
    header = ["stage", *[f"{task} {p} ms" for task in ("forward", "train") for p in DTYPES]]
    names = [*STAGES, "backward", "optimiser", "total"]
    table = []
    for name in names:
        cells = [stages[p][task].get(name) for task in ("forward", "train") for p in DTYPES]
        if any(cell is not None for cell in cells):
            table.append([name, *("-" if c is None else f"{c:.1f}" for c in cells)])
    lines += [
        f"## Where the time goes ({min(sizes):g} Mpx forward; training step of "
        f"{small.get('batch', config.data.batch)} tiles of {small.get('tile', config.data.tile)}"
        " px)",
        "",
        "Stages by `torch.profiler` over the `record_function` labels of kpn.model.network "
        "and kpn.model.level_filter (forward stages only; the backward pass is one row); "
        "the profiler adds its own overhead.",
        "",
        markdown_table(header, table),
        "",
    ]

    # training
    train_rows = []
    variants: list[tuple[str, str, dict[str, str]]] = [(p, p, {}) for p in DTYPES]
    with tempfile.TemporaryDirectory() as scratch:
        if args.baseline:
            tree = baseline_tree(args.baseline, Path(scratch))
            env = {"PYTHONPATH": str(tree)}
            variants = [(f"{args.baseline} {p}", p, env) for p in DTYPES] + variants
        # rounds of every variant in turn: the machine's drift between minutes falls on
        # all of them, and each round's ratio to the baseline is measured side by side
        runs: dict[str, list[dict]] = {name: [] for name, _, _ in variants}
        try:
            for _ in range(args.repeats):
                for name, precision, env in variants:
                    command = child_command("train", args, precision=precision, **small)
                    runs[name].append(run_child(command, env))
        finally:
            if args.baseline:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT)
    for name, precision, _ in variants:
        result = {
            key: statistics.median(run[key] for run in runs[name])
            for key in ("seconds", "limit_gflops")
        } | {"gflop": runs[name][0]["gflop"], "kpn": runs[name][0]["kpn"]}
        ratio = "-"
        if args.baseline:
            base = runs[f"{args.baseline} {precision}"]
            ratio = statistics.median(
                b["seconds"] / r["seconds"] for b, r in zip(base, runs[name], strict=True)
            )
            result["speedup"] = ratio
            ratio = f"{ratio:.2f}"
        train_rows.append([
            name, f"{result['seconds'] * 1e3:.0f}", f"{3600 / result['seconds']:.0f}",
            f"{result['gflop'] / result['seconds']:.1f}", f"{result['limit_gflops']:.0f}",
            f"{statistics.median(fraction(run) for run in runs[name]):.0%}", ratio,
        ])  # fmt: skip
        rows.append({"section": "train", "variant": name, **result})
    train_header = ["code", "ms/step", "steps/hour", "GFLOP/s", "limit GFLOP/s", "of limit"]
    train_header.append(f"x {args.baseline or 'baseline'}")
    lines += [
        f"## Training step ({args.config}: {small.get('batch', config.data.batch)} tiles of "
        f"{small.get('tile', config.data.tile)} px)",
        "",
        f"Medians of {args.repeats} rounds, each running every variant in turn; "
        f"'x {args.baseline or 'baseline'}': the median over rounds of the baseline's step "
        "time over this one's, in the same precision.",
        "",
        markdown_table(train_header, train_rows),
        "",
    ]

    # inference
    infer_rows = []
    for size in sizes:
        for precision in DTYPES:
            result = run_child(child_command("infer", args, precision=precision, size=size))
            infer_rows.append([
                f"{result['mpx']:.2f}", precision, f"{result['seconds']:.2f}",
                f"{result['mpx'] / result['seconds']:.2f}", f"{fraction(result):.0%}",
                f"{result['peak_rss_mb']:.0f}", f"{result['image_mb']:.0f}",
                f"{(result['peak_rss_mb'] - 2 * result['image_mb']):.0f}",
            ])  # fmt: skip
            rows.append({"section": "infer", "variant": precision, "size": size, **result})
    lines += [
        "## Inference (kpn.infer.denoiser.Denoiser, tiled as infer.py)",
        "",
        "Peak RSS is the child process's (Python, torch, the noisy input and the output "
        "included); 'beyond 2 images' is peak RSS minus twice the image's float32 size.",
        "",
        markdown_table(
            [
                "Mpx",
                "precision",
                "seconds",
                "Mpx/s",
                "of limit",
                "peak RSS MB",
                "image MB",
                "beyond 2 images MB",
            ],
            infer_rows,
        ),
        "",
    ]

    # threads
    size = min(sizes)
    one = run_child(child_command("images", args, size=size, count=2), threads=2)
    both = two_processes(child_command("images", args, size=size, count=1, sync=""))
    lines += [
        f"## Threads (two {size:g} Mpx images, fp32)",
        "",
        markdown_table(
            ["how", "seconds"],
            [
                ["one process, 2 threads, images in turn", f"{one['seconds']:.2f}"],
                ["two processes, 1 thread each, one image each at once", f"{both:.2f}"],
            ],
        ),
        "",
    ]
    rows.append({"section": "threads", "variant": "2 threads", "seconds": one["seconds"]})
    rows.append({"section": "threads", "variant": "2 processes", "seconds": both})

    if not args.no_quality:
        result = run_child(child_command("quality", args))
        lines += [
            "## Quality cost of bf16 (shipped design model, benchmark photos, PSNR bf16 - fp32)",
            "",
            markdown_table(
                ["noise", "mean dB", "worst photo dB"],
                [[name, f"{r['mean']:+.4f}", f"{r['worst']:+.4f}"] for name, r in result.items()],
            ),
            "",
        ]
        rows += [{"section": "quality", "variant": name, **r} for name, r in result.items()]

    out = Path(args.out)
    write_text(out / "speed.md", "\n".join(lines))
    write_csv(out / "speed.csv", rows)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
