"""Speed: where the time goes, training steps per hour, inference seconds and memory, each
figure as a fraction of the machine's matrix-product limit measured in the same process.

    python benchmarks/speed.py [--config configs/long.toml] [--sizes 1,24] [--repeats 3]
        [--baseline REV] [--no-quality] [--out benchmarks/results] [--quick]

Every measurement runs in a child process of its own (its peak resident memory is its
own), which times a square ``MATMUL_SIZE`` matmul in float32 and in bfloat16 between its
repeats: the FLOP limit as torch sees it under the load of that moment. A figure's
fraction is the network's FLOPs (``kpn.model.summary``: the MLP's products over the levels it
filters) per second over the limit of its dtype: float32 variants against the float32
limit, bf16 ones (``model.precision = "bf16"``: the hidden layers' products in bfloat16)
against the bfloat16 limit. Medians of ``--repeats``.

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
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
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

from report import (
    ROOT,
    markdown_table,
    matmul_gflops,
    peak_rss_mb,
    provenance,
    write_csv,
    write_text,
)

# "band": training's MLP, kernel weights and apply in one (kpn.model.band, hand-written backward)
STAGES = ("pyramid", "features", "mlp", "kernel_weights", "apply", "band", "blend", "copies")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
DEFAULT_CONFIG = "configs/long.toml"


# --- measuring, in a child process ----------------------------------------------------------
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
    import quality  # the bench extra's scikit-image, only here

    models = {p: kpn.load(precision=p) for p in ("fp32", "bf16")}
    rows = {}
    for condition in quality.CONDITIONS:
        if condition.domain != "linear":
            continue
        differences = []
        for seed, name in enumerate(quality.PHOTOS):
            clean, noisy = quality.make_noisy(quality.load_photo(name, None), condition, seed)
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


# --- the parent -----------------------------------------------------------------------------
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
