"""Where a model's error lies against CBM3D's: by scale, luma and chroma.

    python benchmarks/error_bands.py [--model NAME=RUN_DIR_OR_WEIGHTS] [--noises 3,4]
        [--out benchmarks/results] [--quick]

On the quality benchmark's photos and noises (``benchmarks/quality_data.py``, the same
seeds as ``quality.py``), the error ``e = clip(output, 0, 1) - clean`` of the model (as
infer.py runs it, SURE included; default the shipped model) and of CBM3D (as
``quality.py`` runs it) is split per pixel into luma (the mean over the channels) and
chroma (what is left in each), whose mean squares add up to the error's, and each of
those by Parseval's theorem into octave bands of its 2-D Fourier spectrum: periods below
4 px, 4 to 8, ..., 32 to 64, and 64 px and longer. The bands' mean squares add up exactly
to the error's: where the model's error lies, and its excess over CBM3D's where the gap
between them lies: the low-frequency noise a 5x5 kernel cannot reach (the pyramid's
job), or the finest scale.

The finest band's error is further split by its regression on the clean image's finest
band, ``e_f = beta * c_f + r``: ``1 + beta`` is the share of the clean image's finest
detail kept (1: all of it, 0: smoothed away), ``r`` the rest (noise left, artefacts).

``--quick``: two photos cropped to 96x96, at the first of ``--noises``.

Writes ``error-bands.md``.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from pathlib import Path

import numpy as np
import torch
from quality import cbm3d, stabilised

import kpn

from quality_data import CONDITIONS, PHOTOS, QUICK_SIZE, Condition, load_photo, make_noisy
from report import markdown_table, missing_bench_extra, provenance, write_text

# the bands: periods (1 / spatial frequency) below 3 px, 3 to 4 px, 4 to 8, ..., 64 px and longer
PERIODS = (3, 4, 8, 16, 32, 64)
BANDS = (
    f"< {PERIODS[0]} px",
    *(f"{low}-{high} px" for low, high in itertools.pairwise(PERIODS)),
    f">= {PERIODS[-1]} px",
)


def band_index(height: int, width: int) -> np.ndarray:
    """``[H,W]`` int: the band of each of ``fft2``'s frequencies, by its period."""
    fy, fx = np.meshgrid(np.fft.fftfreq(height), np.fft.fftfreq(width), indexing="ij")
    radius = np.hypot(fy, fx)  # cycles per pixel
    return np.searchsorted(-1 / np.array(PERIODS), -radius, side="left")


def spectra(image: np.ndarray) -> dict[str, np.ndarray]:
    """``[H,W,3]`` -> {"luma": ``[1,H,W]``, "chroma": ``[3,H,W]``}: the orthonormal 2-D
    Fourier transforms of the channels' mean and of what is left in each channel. Their
    mean squares add up to the image's: ``mean(e^2) = mean(L^2) + mean(C^2)`` per pixel,
    and Parseval's theorem splits each exactly across the bands."""
    luma = image.mean(axis=2, dtype=np.float64)
    chroma = np.moveaxis(image - luma[..., None], 2, 0)
    return {
        "luma": np.fft.fft2(luma[None], norm="ortho"),
        "chroma": np.fft.fft2(chroma, norm="ortho"),
    }


def band_rows(error: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    """The error's mean square in each part (luma, chroma) and band, and the finest band's
    detail kept (1 + beta) and rest (the mean square of ``e - beta c`` there)."""
    height, width = error.shape[:2]
    index = band_index(height, width)
    pixels = height * width
    row = {}
    for (part, e), c in zip(spectra(error).items(), spectra(clean).values(), strict=True):
        channels = 1 if part == "luma" else 3  # the chroma's mean is over the 3 channels
        power = (np.abs(e) ** 2).sum(axis=0) / (pixels * channels)
        for band, name in enumerate(BANDS):
            row[f"{part} {name}"] = float(power[index == band].sum())
        finest = index == 0
        beta = float(np.real(np.sum(e[:, finest] * np.conj(c[:, finest]))))
        beta /= float(np.sum(np.abs(c[:, finest]) ** 2))
        row[f"{part} finest detail kept"] = 1 + beta
        rest = np.abs(e[:, finest] - beta * c[:, finest]) ** 2
        row[f"{part} finest rest"] = float(rest.sum() / (pixels * channels))
    row["whole"] = float(np.mean(error.astype(np.float64) ** 2))
    return row


def measure(
    model: kpn.Model, conditions: list[Condition], photos: tuple[str, ...] = PHOTOS,
    size: int | None = None,
) -> dict[str, dict[str, dict[str, float]]]:  # fmt: skip
    """condition -> method -> band (and 'detail kept', 'finest rest') -> mean over photos."""
    runs = {
        "kpn": lambda noisy, c: model(np.ascontiguousarray(noisy, dtype=np.float32), (c.a, c.b)),
        "CBM3D": stabilised(cbm3d),
    }
    table: dict[str, dict[str, dict[str, float]]] = {}
    for condition in conditions:
        index = CONDITIONS.index(condition)
        sums: dict[str, dict[str, float]] = {name: {} for name in runs}
        for p, photo in enumerate(photos):
            clean, noisy = make_noisy(load_photo(photo, size), condition, seed=1000 * p + index)
            for name, run in runs.items():
                error = np.clip(run(noisy, condition), 0, 1) - clean
                row = band_rows(error, clean)
                for key, value in row.items():
                    sums[name][key] = sums[name].get(key, 0.0) + value / len(photos)
            print(f"{condition.name} {photo}", flush=True)
        table[condition.name] = sums
    return table


def report(table: dict[str, dict[str, dict[str, float]]], model_name: str) -> str:
    lines = [
        "# Where the error lies: by scale, luma and chroma, against CBM3D",
        "",
        *provenance(),
        f"- model: {model_name}, as infer.py runs it (SURE blend); CBM3D as quality.py runs it",
        "- photos and noises: quality.py's (scikit-image, never trained on), its seeds",
        "- mean square error per pixel and channel, mean over the photos, split into luma "
        "(the channels' mean) and chroma, each into octave bands of the Fourier spectrum by "
        "period (they add up exactly to the whole); 'gap share': the band's part of kpn's "
        "excess over CBM3D",
        "- finest band split by its regression on the clean image's: 'detail kept' 1 + beta "
        "(1: all of the clean finest detail, 0: none), 'rest' what it leaves (noise, artefacts)",
        "",
    ]
    for condition, sums in table.items():
        kpn_row, cbm3d_row = sums["kpn"], sums["CBM3D"]
        gap = kpn_row["whole"] - cbm3d_row["whole"]
        psnr = [10 * math.log10(1 / row["whole"]) for row in (kpn_row, cbm3d_row)]
        lines += [
            f"## {condition}",
            "",
            f"Linear PSNR of the mean squared error: kpn {psnr[0]:.2f}, CBM3D {psnr[1]:.2f} dB.",
            "",
        ]
        rows = []
        for band in [f"{part} {name}" for part in ("luma", "chroma") for name in BANDS]:
            excess = kpn_row[band] - cbm3d_row[band]
            rows.append([band, f"{kpn_row[band]:.3e}", f"{cbm3d_row[band]:.3e}",
                         f"{excess:+.2e}", f"{100 * excess / gap:+.0f}%"])  # fmt: skip
        rows.append(["whole", f"{kpn_row['whole']:.3e}", f"{cbm3d_row['whole']:.3e}",
                     f"{gap:+.2e}", "100%"])  # fmt: skip
        lines += [markdown_table(["band", "kpn", "CBM3D", "kpn - CBM3D", "gap share"], rows), ""]
        rows = [
            [part, f"{kpn_row[f'{part} finest detail kept']:.3f}",
             f"{cbm3d_row[f'{part} finest detail kept']:.3f}",
             f"{kpn_row[f'{part} finest rest']:.3e}", f"{cbm3d_row[f'{part} finest rest']:.3e}"]
            for part in ("luma", "chroma")
        ]  # fmt: skip
        header = ["finest band", "kpn detail kept", "CBM3D detail kept", "kpn rest", "CBM3D rest"]
        lines += [markdown_table(header, rows), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="", help="NAME=RUN_DIR_OR_WEIGHTS (default: shipped)")
    parser.add_argument("--noises", default="3,4", help="indices into quality_data.CONDITIONS")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--quick", action="store_true", help="2 photos of 96x96, 1 noise")
    args = parser.parse_args(argv)
    missing = missing_bench_extra("scipy", "bm3d", "skimage")
    if missing is not None:
        return missing
    torch.manual_seed(0)
    name, _, path = args.model.partition("=")
    model = kpn.load(path) if path else kpn.load()
    indices = args.noises.split(",")
    if not all(i.isdigit() and int(i) < len(CONDITIONS) for i in indices):
        parser.error(f"--noises {args.noises!r}: expected indices 0..{len(CONDITIONS) - 1}")
    conditions = [CONDITIONS[int(i)] for i in indices]
    if args.quick:
        table = measure(model, conditions[:1], PHOTOS[:2], QUICK_SIZE)
    else:
        table = measure(model, conditions)
    out = Path(args.out)
    write_text(out / "error-bands.md", report(table, name or "the shipped model"))
    print(f"wrote error-bands.md into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
