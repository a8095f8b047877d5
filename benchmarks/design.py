"""The shipped design chosen by measurement: validation PSNR against training time.

    python benchmarks/design.py [--steps 3000] [--seeds 0,1] [--candidates a,b,...]
        [--jobs 2] [--runs runs/design] [--out benchmarks/results] [--report design]

Each candidate is ``configs/photos.toml`` (photos mixed with dead leaves, noise from base
ISO to pushed high ISO) with ``SCREENING_BASE`` and one or two changes, trained
``--steps`` steps from each seed with one torch thread, ``--jobs`` runs at a time (one
per core: two torch processes that both spin on two cores run many times slower). The
held-out photos are the validation set (``data/photos/validation``, 64 tiles of 128x128,
the same in every run); its PSNR is
read from each run's TensorBoard events. The runs' wall times depend on what else the
machine did meanwhile, so the time axis is each candidate's step count times its cost per
training step, measured at the end in one process, candidates alternating: a candidate
that costs more per step is compared at equal time too. A run whose directory already
holds a finished run of the same resolved config is read, not trained again.

Also each seed-0 model on the held-out photos themselves: a 384x384 centre crop of each,
with the quality benchmark's camera noises (a real camera from ISO 800 to ISO 25600 +4
EV), mean PSNR over photos and noises, beside the noisy input's.

Writes ``design.md`` (final PSNR per seed, mean, seconds per step, PSNR at the time the
cheapest candidate took, held-out photos) and ``design.png`` (the curves against time), or
``--report``'s name: candidates whose validation noise differs (``SRGB_RANGE``) go in a
report of their own.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from kpn.config import apply_overrides, load_config
from kpn.io.atomic import atomic_output
from kpn.io.run_folder import RunFolder

from report import ROOT, markdown_table, provenance, write_text

BASE_CONFIG = ROOT / "configs" / "photos.toml"
# the shipped design's changes to SCREENING_BASE
DESIGN: dict[str, object] = {"model.width": 64, "data.texture_candidates": 4, "train.loss": "psnr"}
# the design's input, loss and crops at SCREENING_BASE's W 32: the pyramid candidates' base
PSNR_BASE: dict[str, object] = {
    "model.features": "star15_snr",
    "data.texture_candidates": 4,
    "train.loss": "psnr",
}
# the same pixels a step as 16 tiles of 64x64, in tiles whose coarsest level has content
TILE_128: dict[str, object] = {"data.tile": 128, "data.batch": 4}
GUIDE: dict[str, object] = {"model.guide": "centre"}
POST_DIFF: dict[str, object] = {"model.blend": "post_diff"}
# a, read noise, up to sRGB sigma 50's (50/255 * 65535)^2 = 1.65e8 (the quality benchmark's
# sRGB noise), not only real cameras' up to 4e6
SRGB_RANGE: dict[str, object] = {"data.noise_a_max": 2e8}
# configs/photos-tune.toml's second stage, from its weights (configs/photos-post-diff.toml)
# (bfloat16 products), with sRGB-range noise
FINE_TUNE: dict[str, object] = (
    DESIGN
    | SRGB_RANGE
    | {
        "train.init": "runs/photos-tune/weights.lut",  # stage two (weights/design at 11ad411)
        "train.lr": 0.001,
        "train.warmup_steps": 100,
        "data.deadleaves_fraction": 0.25,
        "train.precision": "bf16",
    }
)
# weights/design-star21's design: the chroma kernel and input, star21 kernels, post_diff
STAR21: dict[str, object] = (
    DESIGN
    | POST_DIFF
    | SRGB_RANGE
    | {
        "model.chroma_kernel": "true",
        "model.chroma_input": "true",
        "model.kernel_taps": "star21",
        "data.deadleaves_fraction": 0.25,
        "train.precision": "bf16",
    }
)
ONE_LEVEL: dict[str, object] = {"model.levels": 1}
# name -> (what it is, --set overrides on configs/photos.toml)
CANDIDATES: dict[str, tuple[str, dict[str, object]]] = {
    "star15": ("vkdt's star15 input, W 32", {"model.features": "star15"}),
    "star15_snr": ("star15_snr input (noise units), W 32", {"model.features": "star15_snr"}),
    "star15_snr-w64": ("star15_snr, W 64", {"model.features": "star15_snr", "model.width": 64}),
    "detail-add": (
        "star15_snr, detail + add",
        {"model.features": "star15_snr", "model.mlp_input": "detail", "model.blend": "add"},
    ),
    "texture-4": (
        "star15_snr, each photo tile the most textured of 4 crops",
        {"model.features": "star15_snr", "data.texture_candidates": 4},
    ),
    "levels-3": ("star15_snr, 3 levels", {"model.features": "star15_snr", "model.levels": 3}),
    "loss-l2": ("star15_snr, l2 loss", {"model.features": "star15_snr", "train.loss": "l2"}),
    "loss-psnr": (
        "star15_snr, most textured of 4 crops, psnr loss (-PSNR per tile)",
        {"model.features": "star15_snr", "data.texture_candidates": 4, "train.loss": "psnr"},
    ),
    "design": ("the design: star15_snr, W 64, most textured of 4 crops, psnr loss", DESIGN),
    # the pyramid (issue 23): each on loss-psnr, the design at W 32
    "one-level": ("loss-psnr with one level: no pyramid", PSNR_BASE | {"model.levels": 1}),
    "post-diff": ("loss-psnr, post_diff blend", PSNR_BASE | POST_DIFF),
    "tile-128": ("loss-psnr, tiles 128x128, 4 a step", PSNR_BASE | TILE_128),
    "one-level-128": (
        "loss-psnr with one level, tiles 128x128",
        PSNR_BASE | TILE_128 | {"model.levels": 1},
    ),
    "post-diff-128": (
        "loss-psnr, post_diff blend, tiles 128x128",
        PSNR_BASE | TILE_128 | POST_DIFF,
    ),
    "post-diff-5": (
        "loss-psnr, post_diff blend, 5 levels",
        PSNR_BASE | POST_DIFF | {"model.levels": 5},
    ),
    "post-diff-2pass": (
        "loss-psnr, post_diff blend, level 0 filtered twice with its kernels",
        PSNR_BASE | POST_DIFF | {"model.fine_passes": 2},
    ),
    "design-128": ("the design, tiles 128x128, 4 a step", DESIGN | TILE_128),
    "guide": ("the design, guided by the coarser output (model.guide)", DESIGN | GUIDE),
    "guide-128": ("the design, guided, tiles 128x128", DESIGN | GUIDE | TILE_128),
    "design-post-diff": ("the design, post_diff blend", DESIGN | POST_DIFF),
    "guide-post-diff": ("the design, guided, post_diff blend", DESIGN | GUIDE | POST_DIFF),
    # from the second stage's weights (weights/design at 11ad411): the guide's columns
    # read as zeros, so each starts as that network; noise up to sRGB sigma 50's a
    "tune-mix": ("the design, fine-tuned, sRGB-range noise", FINE_TUNE),
    "tune-post-diff": ("the design, fine-tuned post_diff, sRGB-range noise", FINE_TUNE | POST_DIFF),
    "tune-guide-post-diff": (
        "the design, fine-tuned guided post_diff, sRGB-range noise",
        FINE_TUNE | GUIDE | POST_DIFF,
    ),
    "tune-post-diff-jitter": (
        "the design, fine-tuned post_diff, sRGB-range noise, told sigma x0.8..1.25",
        FINE_TUNE | POST_DIFF | {"data.noise_told_jitter": 1.25},
    ),
    "detail-add-128": (
        "loss-psnr, detail + add, tiles 128x128",
        PSNR_BASE | TILE_128 | {"model.mlp_input": "detail", "model.blend": "add"},
    ),
    "design-bf16": (
        "the design trained with bfloat16 hidden products (train.precision = bf16)",
        DESIGN | {"train.precision": "bf16"},
    ),
    # the shipped model's design (weights/design-star21) from scratch, and with one level:
    # issue 23's pyramid target at the screening's length
    "star21-design": ("the shipped design: post_diff, chroma, star21, sRGB-range noise", STAR21),
    "star21-one-level": ("the shipped design with one level: no pyramid", STAR21 | ONE_LEVEL),
}
TAG = "metrics/val_psnr"
GAIN_TAG = "metrics/val_psnr_gain"


def budget(steps: int) -> dict[str, object]:
    """The schedule of a run of ``steps`` steps: six validations, three checkpoints."""
    return {
        "train.steps": steps,
        "train.warmup_steps": max(1, steps // 15),
        "train.val_every": max(1, steps // 6),
        "train.log_every": max(1, steps // 6),
        "train.checkpoint_every": max(1, steps // 3),
    }


# What the candidates share, set here rather than taken from configs/photos.toml, whose
# model and loss are the outcome of this comparison: the design of before it (W 32, smape,
# random photo crops). Each candidate changes one or two of these.
SCREENING_BASE: dict[str, object] = {
    "model.features": "star15_snr",
    "model.width": 32,
    "train.loss": "smape",
    "data.texture_candidates": 1,
    "train.precision": "model",  # float32, as the screening ran (photos.toml trains bf16)
}


def settings(name: str, steps: int) -> list[str]:
    chosen = budget(steps) | SCREENING_BASE | CANDIDATES[name][1]
    return [f"{key}={value}" for key, value in chosen.items()]


@dataclass(frozen=True)
class Curve:
    name: str
    seed: int
    psnr: list[float]
    steps: list[int]
    noisy: float  # the validation set's noisy PSNR


def step_seconds(names: list[str], rounds: int = 3, steps: int = 8) -> dict[str, float]:
    """Seconds per training step of each candidate (batch and tile of its config, one
    thread): the median over ``rounds`` rounds in which the candidates take turns."""
    import time

    import torch

    from kpn.model.network import KPN
    from kpn.train.loss import kpn_loss

    torch.set_num_threads(1)
    setups = {}
    for name in names:
        config = apply_overrides(load_config(BASE_CONFIG), settings(name, 1))
        torch.manual_seed(0)
        model = KPN(config.training_model)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        batch, tile = config.data.batch, config.data.tile
        noisy = torch.rand(batch, 3, tile, tile)
        noise_ab = torch.tensor([[1e4, 10.0]]).expand(batch, 2)
        setups[name] = (model, optimizer, noisy, noise_ab, config.train.loss)
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for name, (model, optimizer, noisy, noise_ab, loss_name) in setups.items():
            start = time.perf_counter()
            for _ in range(steps):
                loss = kpn_loss(model(noisy, noise_ab), noisy, loss_name, "mean")
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            times[name].append((time.perf_counter() - start) / steps)
    return {name: statistics.median(values) for name, values in times.items()}


def read_curve(run_dir: Path, name: str, seed: int) -> Curve | None:
    """The validation PSNR of a run from its events; None when it did not finish."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    if TAG not in events.Tags().get("scalars", []):
        return None
    points = events.Scalars(TAG)
    gain = events.Scalars(GAIN_TAG)[-1].value
    return Curve(
        name, seed, [p.value for p in points], [p.step for p in points], points[-1].value - gain
    )


def run(name: str, seed: int, args: argparse.Namespace) -> Curve | None:
    run_dir = Path(args.runs) / f"{name}-seed{seed}"
    wanted = apply_overrides(load_config(BASE_CONFIG), settings(name, args.steps))
    config_file = RunFolder(run_dir).config
    # compared as configs, not text: a key added since keeps its default in the old file
    if config_file.is_file() and load_config(config_file) == wanted:
        curve = read_curve(run_dir, name, seed)
        if curve is not None and curve.steps[-1] == args.steps:
            return curve
    if args.no_train:
        return None
    command = [sys.executable, str(ROOT / "train.py"), "--config", str(BASE_CONFIG),
               "--out", str(run_dir), "--seed", str(seed)]  # fmt: skip
    if run_dir.exists():
        command = [sys.executable, str(ROOT / "train.py"), "--resume", str(run_dir)]
    for setting in settings(name, args.steps):
        command += ["--set", setting]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        print(f"{name} seed {seed}: failed: {done.stderr.strip().splitlines()[-1:]}")
        return None
    return read_curve(run_dir, name, seed)


HELD_OUT = ROOT / "data" / "photos" / "validation"
HELD_OUT_CROP = 384


@dataclass(frozen=True)
class HeldOut:
    """Mean PSNR over the held-out photos, per noise of the quality benchmark (name -> dB)."""

    noisy: dict[str, float]
    denoised: dict[str, float]

    @property
    def mean(self) -> tuple[float, float]:
        """(noisy, denoised) over the camera noises."""
        from quality_data import CONDITIONS

        cameras = [c.name for c in CONDITIONS if c.domain == "linear"]
        return (
            statistics.mean(self.noisy[name] for name in cameras),
            statistics.mean(self.denoised[name] for name in cameras),
        )


def held_out_psnr(run_dir: Path) -> HeldOut:
    """Mean PSNR of a run's model on the held-out photos' centre crops under each of the
    quality benchmark's noises (linear for a camera's, sRGB for sRGB noise), and of the
    noisy crops."""
    import numpy as np

    from kpn.infer.denoiser import Denoiser
    from kpn.infer.weights import load_weights
    from kpn.io.images import linear_to_srgb
    from kpn.io.pfm import read_pfm
    from kpn.metrics import psnr

    from quality_data import CONDITIONS, make_noisy

    loaded = load_weights(run_dir)
    denoiser = Denoiser.build(loaded.model, loaded.config.infer, sure=False)  # the network alone
    noisy_scores: dict[str, list[float]] = {c.name: [] for c in CONDITIONS}
    denoised_scores: dict[str, list[float]] = {c.name: [] for c in CONDITIONS}
    for p, path in enumerate(sorted(HELD_OUT.glob("*.pfm"))):
        image = read_pfm(path)
        top = max(0, (image.shape[0] - HELD_OUT_CROP) // 2)
        left = max(0, (image.shape[1] - HELD_OUT_CROP) // 2)
        crop = np.ascontiguousarray(image[top : top + HELD_OUT_CROP, left : left + HELD_OUT_CROP])
        for c, condition in enumerate(CONDITIONS):
            clean, noisy = make_noisy(linear_to_srgb(crop), condition, 100 * p + c)
            noisy_scores[condition.name].append(psnr(np.clip(noisy, 0, 1), clean))
            output = denoiser(np.ascontiguousarray(noisy), condition.a, condition.b)
            denoised_scores[condition.name].append(psnr(np.clip(output, 0, 1), clean))
    return HeldOut(
        {name: statistics.mean(scores) for name, scores in noisy_scores.items()},
        {name: statistics.mean(scores) for name, scores in denoised_scores.items()},
    )


def psnr_at(curve: Curve, step: float) -> float:
    """The last validated PSNR at or before ``step``."""
    reached = [p for s, p in zip(curve.steps, curve.psnr, strict=True) if s <= step + 1e-9]
    return reached[-1] if reached else math.nan


def report(
    curves: dict[tuple[str, int], Curve | None],
    names: list[str],
    seeds: list[int],
    cost: dict[str, float],
    held_out: dict[str, HeldOut],
    report_name: str = "design",
) -> str:
    done = [c for c in curves.values() if c is not None]
    budget = min(c.steps[-1] * cost[c.name] for c in done)  # the cheapest full run
    header = ["candidate", *(f"seed {s}" for s in seeds), "mean", "s/step",
              f"mean at {budget / 60:.1f} min", "held-out photos"]  # fmt: skip
    noises = list(next(iter(held_out.values())).noisy) if held_out else []
    header += noises
    rows = []
    for name in names:
        mine = [curves.get((name, s)) for s in seeds]
        finals = [f"{c.psnr[-1]:.2f}" if c else "-" for c in mine]
        ok = [c for c in mine if c]
        mean = f"{statistics.mean(c.psnr[-1] for c in ok):.2f}" if ok else "-"
        at_time = statistics.mean(psnr_at(c, budget / cost[name]) for c in ok) if ok else None
        at = "-" if at_time is None or math.isnan(at_time) else f"{at_time:.2f}"
        mine_held = held_out.get(name)
        photos = f"{mine_held.mean[1]:.2f}" if mine_held else "-"
        per_noise = [f"{mine_held.denoised[n]:.2f}" if mine_held else "-" for n in noises]
        rows.append(
            [f"{name}: {CANDIDATES[name][0]}", *finals, mean, f"{cost[name]:.3f}", at, photos,
             *per_noise]
        )  # fmt: skip
    first = done[0]
    return "\n".join(
        [
            "# The design: validation PSNR against training time",
            "",
            *provenance(),
            f"- base: configs/photos.toml; {first.steps[-1]} steps of 16 tiles 64x64 (or 4 of "
            "128x128) per run, "
            "one torch thread per run",
            "- validation: the held-out photos (data/photos/validation), 64 tiles of 128x128, "
            f"noise drawn from the training law, the same in every run (noisy PSNR "
            f"{first.noisy:.2f} dB); PSNR of the denoised tiles, linear, peak 1",
            "- time: steps x seconds per training step (s/step: one thread, measured in one "
            "process with the candidates taking turns, median of 3 rounds); the last column "
            "is each candidate's PSNR at the time the cheapest full run took (the last "
            "validation before it)",
            "- held-out photos: the seed-0 model on a 384x384 centre crop of each held-out "
            "photo under the quality benchmark's five camera noises (Sony ILCE-7M3, ISO 800 "
            "to ISO 25600 +4 EV), mean linear PSNR; then per noise, the camera's and the "
            "quality benchmark's sRGB noise (sRGB PSNR) (noisy: "
            f"{held_out_noisy(held_out)})"
            if held_out
            else "- held-out photos: not measured",
            f"- curves in {report_name}.png",
            "",
            markdown_table(header, rows),
            "",
        ]
    )


def held_out_noisy(held_out: dict[str, HeldOut]) -> str:
    """The noisy crops' PSNR, the same for every run: mean, then per noise."""
    first = next(iter(held_out.values()))
    per_noise = ", ".join(f"{name} {value:.2f}" for name, value in first.noisy.items())
    return f"{first.mean[0]:.2f} dB; {per_noise}"


def plot(path: Path, curves: dict[tuple[str, int], Curve | None], cost: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    colours: dict[str, str] = {}
    for (name, seed), curve in curves.items():
        if curve is None:
            continue
        colour = colours.setdefault(name, f"C{len(colours)}")
        minutes = [step * cost[name] / 60 for step in curve.steps]
        axis.plot(minutes, curve.psnr, marker="o", color=colour,
                  linestyle="-" if seed == min(s for _, s in curves) else "--",
                  label=f"{name} seed {seed}")  # fmt: skip
    done = [c for c in curves.values() if c is not None]
    trained = [p for c in done for s, p in zip(c.steps, c.psnr, strict=True) if s]
    if trained:  # the untrained model's point would squash the curves
        axis.set_ylim(bottom=min(trained) - 0.5, top=max(trained) + 0.3)
    axis.set_xlabel("training time (minutes: steps x seconds per step, one thread)")
    axis.set_ylabel("validation PSNR on held-out photos (dB)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    with atomic_output(path) as temp:
        figure.savefig(temp, dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one per core)")
    parser.add_argument("--runs", default="runs/design", help="where the runs go")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument(
        "--report", default="design", help="the report's name: REPORT.md and REPORT.png"
    )
    parser.add_argument(
        "--no-train", action="store_true", help="report the finished runs, train none"
    )
    args = parser.parse_args(argv)
    names = args.candidates.split(",")
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        parser.error(f"--candidates: unknown {unknown[0]!r} (known: {', '.join(CANDIDATES)})")
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [(name, seed) for seed in seeds for name in names]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = pool.map(lambda job: run(*job, args), jobs)
        curves = dict(zip(jobs, results, strict=True))
    for (name, seed), curve in curves.items():
        if curve is not None:
            print(f"{name} seed {seed}: {curve.psnr[-1]:.2f} dB after {curve.steps[-1]} steps")
    if not any(curves.values()):
        print("no run finished: nothing to report")
        return 1
    cost = step_seconds(names)
    held_out = {
        name: held_out_psnr(Path(args.runs) / f"{name}-seed{seed}")
        for (name, seed), curve in curves.items()
        if curve is not None and seed == seeds[0] and HELD_OUT.is_dir()
    }
    out = Path(args.out)
    write_text(out / f"{args.report}.md", report(curves, names, seeds, cost, held_out, args.report))
    plot(out / f"{args.report}.png", curves, cost)
    print(f"wrote {args.report}.md and {args.report}.png into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
