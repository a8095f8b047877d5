"""Ablation: the questions vkdt's kpn-t readme leaves open, each at an equal training budget.

    python benchmarks/ablation.py [--steps 500] [--seeds 0,1] [--jobs 2] [--only KEY,...]
        [--out benchmarks/results] [--work runs/ablation] [--quick]

Every variant is ``configs/quick.toml`` (the design model on dead leaves, batch 8 of 64x64
tiles, smape, Adam with cosine decay) with one question's switches changed, trained for
``--steps`` steps from each seed in ``--seeds`` (model initialisation and data) and
scored on the one fixed validation set (32 tiles of 128x128, the quick preset's). Each
run is a child process with ``--threads`` torch threads, ``--jobs`` at a time; a finished
run leaves ``ablation.json`` in its run directory under ``--work`` and is not run again,
so a killed benchmark goes on where it stopped. Writes ``ablation.md`` (a table of
validation PSNR per seed, per question) and ``ablation.csv`` into ``--out``.

``--quick``: three variants, 3 steps, 4 validation tiles of 64x64 (for the test).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from report import ROOT, markdown_table, provenance, write_csv, write_text

BASE_CONFIG = "configs/quick.toml"  # relative to the repository root
RESULT = "ablation.json"

# vkdt HEAD's shipped network (config.h), and what docs/design.md §10 lists as its defects
HEAD_MODEL = {
    "model.down": "binomial5",
    "model.up": "bilinear",
    "model.mlp_input": "detail",
    "model.blend": "add",
    "model.features": "patch8x8",
    "model.width": 64,
    "model.kernel_activation": "plain",
    "model.alpha_activation": "const",
}
HEAD_DEFECTS = {
    "model.block_transpose": True,
    "model.vkdt_kernel_grad_untransposed": True,
    "model.denoise_levels": 2,
    "model.gradient_stop": True,
    "model.precision": "vkdt-f16",
}

# key -> (label, overrides of the base config)
VARIANTS: dict[str, tuple[str, dict[str, object]]] = {
    "base": ("design (base)", {}),
    "down-binomial5": ("down binomial5", {"model.down": "binomial5"}),
    "down-box2-vkdt": ("down box2_vkdt (vkdt's aliasing mip)", {"model.down": "box2_vkdt"}),
    "up-bilinear": ("up bilinear", {"model.up": "bilinear"}),
    "detail-add": ("detail + add", {"model.mlp_input": "detail", "model.blend": "add"}),
    "post-diff": ("mip + post_diff", {"model.blend": "post_diff"}),
    "width-64": ("W 64", {"model.width": 64}),
    "patch8x8-64": ("patch8x8, W 64", {"model.features": "patch8x8", "model.width": 64}),
    "kernel-plain": ("kernel plain", {"model.kernel_activation": "plain"}),
    "alpha-const": ("alpha const", {"model.alpha_activation": "const"}),
    "alpha-plain": ("alpha plain", {"model.alpha_activation": "plain"}),
    "alpha-clamped": ("alpha clamped", {"model.alpha_activation": "clamped"}),
    "loss-l2": ("loss l2", {"train.loss": "l2"}),
    "loss-cosh": ("loss cosh", {"train.loss": "cosh"}),
    **{f"levels-{n}": (f"{n} level{'s' * (n > 1)}", {"model.levels": n}) for n in (1, 2, 3, 5, 6)},
    "denoise-levels-2": ("only levels 0 and 1 filtered", {"model.denoise_levels": 2}),
    "head-fixed": ("vkdt HEAD's network, defects off", HEAD_MODEL),
    "head-defects": ("vkdt HEAD's network, defects on", HEAD_MODEL | HEAD_DEFECTS),
    "head-defects-true-gradient": (
        "defects on, but the kernel gradient transposed like the forward pass",
        HEAD_MODEL | HEAD_DEFECTS | {"model.vkdt_kernel_grad_untransposed": False},
    ),
}

# question -> variants compared, the reference first
QUESTIONS: dict[str, list[str]] = {
    "Pyramid down filter (aliasing)": ["base", "down-binomial5", "down-box2-vkdt"],
    "Pyramid up filter": ["base", "up-bilinear"],
    "Network input and blend": ["base", "detail-add", "post-diff"],
    "Input features (at W 64, which patch8x8 needs)": ["width-64", "patch8x8-64"],
    "Hidden width": ["base", "width-64"],
    "Kernel activation": ["base", "kernel-plain"],
    "Alpha activation": ["base", "alpha-const", "alpha-plain", "alpha-clamped"],
    "Loss": ["base", "loss-l2", "loss-cosh"],
    "Pyramid levels": ["levels-1", "levels-2", "levels-3", "base", "levels-5", "levels-6"],
    "Filtered levels": ["base", "denoise-levels-2"],
    "vkdt HEAD's defects (design §10)": [
        "head-fixed",
        "head-defects",
        "head-defects-true-gradient",
    ],
}
QUICK_VARIANTS = ["base", "levels-2", "head-defects"]
HEAD_NOTE = (
    "HEAD's network is binomial5, bilinear, detail + add, patch8x8, W 64, plain kernels, "
    "constant alpha; its defects are the block transpose with the untransposed kernel "
    "gradient, only levels 0 and 1 filtered, the gradient stop and float16 arithmetic "
    "(vkdt-f16). Both train with our optimiser (vkdt's Adam defects are not part of it)."
)


def overrides(key: str, steps: int, quick: bool) -> list[str]:
    """``--set`` arguments of one variant at this budget."""
    budget = {
        "train.steps": steps,
        "train.warmup_steps": max(1, steps // 10),
        "train.val_every": steps,
        "train.checkpoint_every": steps,
        "train.image_every": steps,
        "train.log_every": max(1, steps // 5),
        "data.workers": 0,
    }
    if quick:
        budget |= {"data.validation_count": 4, "data.validation_tile": 64}
    return [f"{k}={json.dumps(v)}" for k, v in (budget | VARIANTS[key][1]).items()]


def child(args: argparse.Namespace) -> None:
    """Train one variant from one seed in this process; its result as JSON on stdout."""
    import torch

    from kpn.config import apply_overrides, load_config
    from kpn.train.loop import Plan, train

    torch.set_num_threads(args.threads)
    run_dir = Path(args.work) / f"{args.child}-seed{args.seed}"
    shutil.rmtree(run_dir, ignore_errors=True)  # an unfinished earlier attempt
    settings = overrides(args.child, args.steps, args.quick)
    config = apply_overrides(load_config(ROOT / BASE_CONFIG), settings)
    start = time.perf_counter()
    final = train(Plan(config, run_dir), seed=args.seed).final
    result = {
        "variant": args.child,
        "seed": args.seed,
        "steps": args.steps,
        "psnr_noisy": final.psnr_noisy,
        "psnr_denoised": final.psnr_denoised,
        "gain": final.gain,
        "seconds": time.perf_counter() - start,
    }
    write_text(run_dir / RESULT, json.dumps(result))
    print(json.dumps(result))


def run_one(key: str, seed: int, args: argparse.Namespace) -> dict[str, object]:
    """The result of one run: from its run directory when done before, else trained now."""
    done = Path(args.work) / f"{key}-seed{seed}" / RESULT
    if done.is_file():
        result = json.loads(done.read_text())
        if result["steps"] == args.steps:
            return result
    command = [sys.executable, __file__, "--child", key, "--seed", str(seed), "--steps",
               str(args.steps), "--work", args.work, "--threads", str(args.threads)]  # fmt: skip
    if args.quick:
        command.append("--quick")
    env = os.environ | {"OMP_NUM_THREADS": str(args.threads)}
    finished = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if finished.returncode:
        lines = finished.stderr.strip().splitlines() or ["no message"]
        return {"variant": key, "seed": seed, "error": lines[-1]}
    return json.loads(finished.stdout.strip().splitlines()[-1])


def cell(result: dict[str, object] | None) -> str:
    if result is None:
        return "-"
    return f"{result['psnr_denoised']:.2f}" if "error" not in result else "failed"


def tables(results: dict[tuple[str, int], dict], keys: list[str], seeds: list[int]) -> str:
    """One Markdown table per question: PSNR per seed, mean, and change against its first."""

    def mean(key: str) -> float | None:
        values = [results[key, s]["psnr_denoised"] for s in seeds if "error" not in results[key, s]]
        return statistics.mean(values) if len(values) == len(seeds) else None

    sections = []
    for question, members in QUESTIONS.items():
        members = [key for key in members if key in keys]
        if len(members) < 2:
            continue
        reference = mean(members[0])
        rows = []
        for key in members:
            value = mean(key)
            delta = "" if value is None or reference is None else f"{value - reference:+.2f}"
            seconds = [results[key, s].get("seconds", 0.0) for s in seeds]
            rows.append([VARIANTS[key][0], *(cell(results[key, s]) for s in seeds),
                         "-" if value is None else f"{value:.2f}", delta,
                         f"{statistics.mean(seconds):.0f}"])  # fmt: skip
        header = ["variant", *(f"seed {s}" for s in seeds), "mean", "vs first", "s/run"]
        sections.append(f"### {question}\n\n{markdown_table(header, rows)}\n")
    return "\n".join(sections)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--steps", type=int, default=500, help="training steps per run")
    parser.add_argument("--seeds", default="0,1", help="comma separated")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--only", help="comma separated variant keys (default: all)")
    parser.add_argument("--out", default="benchmarks/results", help="where the tables go")
    parser.add_argument("--work", default="runs/ablation", help="run directories")
    parser.add_argument("--quick", action="store_true", help="3 variants, 3 steps")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0
    if args.quick:
        args.steps = 3
    keys = args.only.split(",") if args.only else QUICK_VARIANTS if args.quick else list(VARIANTS)
    unknown = [key for key in keys if key not in VARIANTS]
    if unknown:
        parser.error(f"--only: unknown variant {unknown[0]!r} (known: {', '.join(VARIANTS)})")
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [(key, seed) for key in keys for seed in seeds]
    results: dict[tuple[str, int], dict] = {}
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(run_one, key, seed, args): (key, seed) for key, seed in jobs}
        for future in concurrent.futures.as_completed(futures):
            key, seed = futures[future]
            results[key, seed] = result = future.result()
            done = f"{len(results)}/{len(jobs)}"
            if "error" in result:
                print(f"{done} {key} seed {seed}: failed: {result['error']}", flush=True)
            else:
                print(f"{done} {key} seed {seed}: {result['psnr_denoised']:.2f} dB "
                      f"({result['seconds']:.0f} s)", flush=True)  # fmt: skip

    first = next((r for r in results.values() if "error" not in r), None)
    noisy = f"{first['psnr_noisy']:.2f} dB" if first else "-"
    minutes = sum(r.get("seconds", 0) for r in results.values()) / 60
    text = "\n".join([
        "# Ablation: validation PSNR per variant at an equal training budget", "",
        *provenance(),
        f"- budget per run: {args.steps} steps of 8 tiles 64x64 (dead leaves, "
        f"{BASE_CONFIG}'s noise and optimiser, warm-up {max(1, args.steps // 10)} steps, "
        f"cosine decay); {args.threads} torch thread(s) per run, {args.jobs} at a time; "
        f"{minutes:.0f} min of training in all, {(time.perf_counter() - start) / 60:.0f} min wall",
        f"- seeds: {', '.join(map(str, seeds))} (model initialisation and training data)",
        f"- validation: the fixed set of {BASE_CONFIG} (seed 0); noisy PSNR {noisy}; "
        "PSNR of the denoised validation tiles in dB, linear, peak 1",
        "- base: the design model (box2 down, bspline up, mip + mix, star15, W 32, softmax "
        "kernels, sigmoid alpha, smape loss, 4 levels); each table changes one thing",
        f"- {HEAD_NOTE}", "",
        tables(results, keys, seeds),
    ])  # fmt: skip
    out = Path(args.out)
    write_text(out / "ablation.md", text)
    write_csv(out / "ablation.csv", [results[job] for job in jobs])
    print(f"wrote {out / 'ablation.md'} and {out / 'ablation.csv'}")
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
