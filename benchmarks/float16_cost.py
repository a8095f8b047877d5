"""What vkdt's float16 arithmetic costs the shipped design, on the quality benchmark.

    python benchmarks/float16_cost.py [--weights weights/design] [--images a,b,...]
        [--out benchmarks/results] [--quick]

The design as vkdt runs it (``--precision vkdt-f16``: docs/design.md §10's emulation of
vkdt's float16 weights, activations, kernels, pyramid images and accumulation) against
float32, both the network alone (``--sure off``: vkdt has no SURE blend), on
``benchmarks/quality_data.py``'s photos at its five camera levels. Both matrix paths of
vkdt: ``coopmat`` (a GPU with cooperative matrices: float16 products, float16
accumulation per 16-wide block) and ``fallback`` (what lavapipe runs, and the oracle
proves). Per level: mean and worst photo PSNR of vkdt-f16 minus float32, and the largest
absolute difference between the two outputs. Issue 24's bound: at most 0.1 dB at every
level. Writes ``float16-cost.md`` and ``float16-cost.csv``. Needs the ``bench`` extra
(scikit-image's photos). ``--quick``: two photos of 96x96 at ISO 12800 +3 EV.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from kpn.infer.denoiser import Denoiser
from kpn.infer.weights import SHIPPED_DIR, load_weights
from kpn.metrics import psnr

from quality_data import CONDITIONS, PHOTOS, QUICK_CONDITIONS, QUICK_SIZE, load_photo, make_noisy
from report import markdown_table, missing_bench_extra, provenance, write_csv, write_text

BOUND_DB = 0.1
VARIANTS = {  # name -> (precision, vkdt_matmul)
    "fp32": ("fp32", None),
    "vkdt-f16 coopmat": ("vkdt-f16", "coopmat"),
    "vkdt-f16 fallback": ("vkdt-f16", "fallback"),
}


def denoisers(weights: str) -> dict[str, Denoiser]:
    """The variants of :data:`VARIANTS` for ``weights``, SURE off."""
    loaded = load_weights(weights)
    return {
        name: Denoiser.build(
            loaded.model, loaded.config.infer, precision=precision, vkdt_matmul=matmul, sure=False
        )
        for name, (precision, matmul) in VARIANTS.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--weights", default=str(SHIPPED_DIR / "design"))
    parser.add_argument("--images", default=",".join(PHOTOS), help="scikit-image photos")
    parser.add_argument("--out", default="benchmarks/results", help="where the results go")
    parser.add_argument("--quick", action="store_true", help="2 photos of 96x96, 1 noise")
    args = parser.parse_args(argv)
    missing = missing_bench_extra()
    if missing:
        print(f"float16_cost.py: {missing}", file=sys.stderr)
        return 2
    models = denoisers(args.weights)
    photos = [name for name in args.images.split(",") if name]
    photos, size = (photos[:2], QUICK_SIZE) if args.quick else (photos, None)
    conditions = [
        c for c in (QUICK_CONDITIONS if args.quick else CONDITIONS) if c.domain == "linear"
    ]
    rows = []
    for condition in conditions:
        for seed, photo in enumerate(photos):
            clean, noisy = make_noisy(load_photo(photo, size), condition, seed)
            noisy = np.ascontiguousarray(noisy, dtype=np.float32)
            outputs = {
                name: np.clip(model(noisy, condition.a, condition.b), 0, 1)
                for name, model in models.items()
            }
            row = {"noise": condition.name, "photo": photo}
            row |= {f"psnr {name}": psnr(out, clean) for name, out in outputs.items()}
            for name in VARIANTS:
                if name != "fp32":
                    row[f"max |d| {name}"] = float(np.abs(outputs[name] - outputs["fp32"]).max())
            rows.append(row)
            print(", ".join(f"{k}: {v:.4f}" if isinstance(v, float) else v for k, v in row.items()))
    lines = [
        "# What vkdt's float16 costs the design (network alone, SURE off)",
        "",
        *provenance(),
        f"- weights: `{args.weights}`; photos: {', '.join(photos)} "
        + (f"({size}x{size} crops)" if size else "(full size)"),
        "",
        "PSNR (linear, outputs clipped to [0, 1]) of vkdt-f16 minus float32; max |d| between "
        f"the two outputs. Bound (issue 24): at most {BOUND_DB} dB below float32 at every level.",
        "",
    ]
    table = []
    for condition in conditions:
        mine = [r for r in rows if r["noise"] == condition.name]
        cells = [condition.name, f"{np.mean([r['psnr fp32'] for r in mine]):.3f}"]
        for name in VARIANTS:
            if name == "fp32":
                continue
            cost = [r[f"psnr {name}"] - r["psnr fp32"] for r in mine]
            cells += [
                f"{np.mean(cost):+.4f}",
                f"{min(cost):+.4f}",
                f"{max(r[f'max |d| {name}'] for r in mine):.2e}",
            ]
        table.append(cells)
    header = ["noise", "fp32 dB"]
    for name in (n for n in VARIANTS if n != "fp32"):
        header += [f"{name}: mean", "worst photo", "max \\|d\\|"]
    worst = min(r[f"psnr {n}"] - r["psnr fp32"] for r in rows for n in VARIANTS if n != "fp32")
    verdict = "met" if worst >= -BOUND_DB else "missed"
    lines += [
        markdown_table(header, table),
        "",
        f"Worst photo and level: {worst:+.4f} dB ({verdict}).",
    ]
    out = Path(args.out)
    write_text(out / "float16-cost.md", "\n".join(lines) + "\n")
    write_csv(out / "float16-cost.csv", rows)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
