"""Ship a finished training run as a model of the repository: ``weights/NAME/``.

    python scripts/ship_weights.py RUN_DIR NAME --command "how it was trained"
        [--quality benchmarks/results/quality.csv]

Copies the run's checkpoint, ``.lut`` (where one holds the model) and resolved config,
and writes ``MODEL.md``, the model card: the network, the data, the noise range, the
budget, the seed, the commit, the validation and benchmark scores, and the command that
reproduces it. ``infer.py`` without ``--weights`` loads the first of
``kpn.infer.weights.SHIPPED``.
"""

from __future__ import annotations

import argparse
import csv
import math
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from kpn.io.checkpoint import load_checkpoint
from kpn.io.run_folder import RunFolder
from kpn.model.summary import parameter_count
from kpn.vkdt.export import lut_holds

ROOT = Path(__file__).resolve().parent.parent
CAMERA_A_MAX = 4e6  # configs/photos.toml's: the highest ISO pushed +4 EV


def events_summary(run_dir: Path) -> tuple[float, float, float]:
    """(minutes of training, noisy validation PSNR, denoised validation PSNR)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    psnr = events.Scalars("metrics/val_psnr")
    gain = events.Scalars("metrics/val_psnr_gain")
    minutes = (psnr[-1].wall_time - events.FirstEventTimestamp()) / 60
    return minutes, psnr[-1].value - gain[-1].value, psnr[-1].value


def benchmark_rows(path: Path, name: str) -> list[str]:
    """The quality benchmark's means for this model beside the noisy input and NLM."""
    if not path.is_file():
        return ["(not benchmarked)"]
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    conditions = list(dict.fromkeys(r["condition"] for r in rows))
    methods = ["noisy", f"kpn {name}", f"kpn {name}, no SURE", "non-local means", "CBM3D"]
    lines = ["| method | " + " | ".join(conditions) + " |", "| :-- |" + " --: |" * len(conditions)]
    for method in methods:
        cells = []
        for condition in conditions:
            key = "psnr_srgb" if condition.startswith("sRGB") else "psnr_linear"
            values = [
                float(r[key]) for r in rows if r["method"] == method and r["condition"] == condition
            ]
            cells.append(f"{statistics.mean(values):.2f}" if values else "-")
        if any(c != "-" for c in cells):
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def noise_range(a_max: float) -> str:
    """What the noise range covers, said in cameras and, past them, in sRGB sigmas."""
    cameras = "darktable's profiles from base ISO to the highest ISO pushed +4 EV"
    if a_max <= CAMERA_A_MAX:
        return cameras
    sigma = math.sqrt(a_max) / 65535 * 255  # read noise as Gaussian noise on 8-bit values
    return f"{cameras}, and read noise up to sRGB sigma {sigma:.0f}'s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("run", help="finished training run directory")
    parser.add_argument("name", help="weights/NAME")
    parser.add_argument("--command", required=True, help="the command that trained it")
    parser.add_argument("--quality", default=str(ROOT / "benchmarks/results/quality.csv"))
    parser.add_argument("--notes", default="", help="a paragraph for the card")
    args = parser.parse_args(argv)
    run = Path(args.run)
    source = RunFolder(run)
    state = load_checkpoint(source.checkpoint)
    config = state.config
    model, data, train = config.model, config.data, config.train
    target = ROOT / "weights" / args.name
    target.mkdir(parents=True, exist_ok=True)
    shipped = RunFolder(target)
    parts = [(source.checkpoint, shipped.checkpoint), (source.config, shipped.config)]
    if not lut_holds(config.model):  # the checkpoint is the model
        shipped.weights.unlink(missing_ok=True)
    else:
        parts.append((source.weights, shipped.weights))
    for original, copy in parts:
        shutil.copyfile(original, copy)
    minutes, noisy, denoised = events_summary(run)

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout

    commit = git("rev-parse", "--short", "HEAD").strip()
    code = ("kpn", ":(exclude)kpn/weights")  # the weights just copied are not code
    if git("status", "--porcelain", "--untracked-files=no", "--", *code).strip():
        commit += "+changes"  # the code differs from the commit: the card says so
    sources = (
        f"real photographs (`python -m kpn photos data/photos`: Debian's wallpaper packages, "
        f"licences in its manifest) from `{data.reference_dir}`, "
        f"{data.deadleaves_fraction:.0%} of the tiles dead leaves instead"
        if data.source == "clean"
        else f"{data.source}"
    )
    chroma = (
        ", a chroma kernel and alpha (kpn only: no .lut holds it)" if model.chroma_kernel else ""
    )
    chroma += ", the taps' opponent colours as input" if model.chroma_input else ""
    card = [
        f"# kpn model `{args.name}`",
        "",
        f"- network: {model.levels} levels, {model.down} down, {model.up} up, "
        f"{model.mlp_input} + {model.blend}, {model.features} input, W {model.width}, "
        f"{model.n_hidden} hidden layers, {model.kernel_activation} {model.kernel_taps} kernels, "
        f"{model.alpha_activation} alpha{chroma}, {model.precision}; "
        f"{parameter_count(model)} parameters; every setting in `config.toml`",
        f"- data: {sources}; tiles {data.tile}x{data.tile}, batch {data.batch}",
        f"- noise: {data.noise} a in [{data.noise_a_min:g}, {data.noise_a_max:g}], "
        f"b in [{data.noise_b_min:g}, {data.noise_b_max:g}] on the 0..65535 scale "
        f"({noise_range(data.noise_a_max)})",
        f"- training: {state.step} steps, {train.loss} loss, Adam lr {train.lr:g} "
        f"({train.lr_schedule}, warm-up {train.warmup_steps}), clip {train.grad_clip:g}"
        f"{', hidden products in bfloat16' if train.precision == 'bf16' else ''}; "
        f"{minutes:.0f} minutes on this project's 2-core CPU machine; seed in the command",
        f"- commit: {commit} (the code that shipped it)",
        f"- validation (held-out photos): noisy {noisy:.2f} dB -> denoised {denoised:.2f} dB",
        "- reproduce: `python -m kpn photos data/photos` then",
        f"  `{args.command}`",
        "",
        *([args.notes, ""] if args.notes else []),
        "## Benchmark (benchmarks/quality.py, mean PSNR over scikit-image's photos, dB)",
        "",
        "Linear PSNR for camera noise (Sony ILCE-7M3's darktable profiles), sRGB PSNR for "
        "sRGB Gaussian noise; `benchmarks/results/quality.md` has every score. "
        f"`kpn {args.name}` runs as infer.py runs it, the network blended towards the input "
        "by SURE (`kpn/infer/sure.py`); `no SURE` is the network alone.",
        "",
        *benchmark_rows(Path(args.quality), args.name),
        "",
    ]
    (target / "MODEL.md").write_text("\n".join(card))
    print(f"shipped {run} as {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
