"""Denoising quality and speed against classical denoisers, on photos never trained on.

    python benchmarks/quality.py [--model NAME=RUN_DIR_OR_WEIGHTS ...] [--images a,b,...]
        [--out benchmarks/results] [--quick] [--estimate] [--ensemble N,...]

Needs the ``bench`` extra (``pip install -e ".[bench]"``: scikit-image, matplotlib, and
bm3d for CBM3D, which is left out when not installed).

Images: scikit-image's bundled photos, decoded from sRGB to linear (the clean reference).
Noise, two settings:

- camera: the Gaussian-Poissonian noise of a Sony ILCE-7M3 (darktable's measured
  profiles) at high ISO, pushed in exposure by k EV as photographers do: the raw signal
  is 2^-k of the image, so the profile (a, b) of the pushed image is (a 4^k, b 2^k). The
  noise is docs/design.md §8's, added to the linear image; PSNR linear and sRGB.
- sRGB Gaussian sigma 15, 25, 50 (of 255), added to the sRGB-encoded image: the setting
  of the denoising literature. Every method sees the encoded values; ours is told the
  profile (a, b) = ((sigma / 255 * 65535)^2, 0), the same noise on its 0..65535 scale.

Each kpn model runs as infer.py runs it (``kpn NAME``: with its config's SURE blend,
:mod:`kpn.infer.sure`) and as the network alone (``kpn NAME, no SURE``); ``--profile-test``
tells the network alone a wrong profile, ``--estimate`` adds each model told the profile
estimated from the noisy image (``kpn NAME, told the estimate``: ``--noise auto``, an
image it refuses scored as the noisy input), ``--ensemble 2,4`` each model as infer.py
``--ensemble N`` runs it (``kpn NAME, ensemble N``: the mean over N orientations of the
image), ``--sure-split`` each model with a SURE weight for the luma of the network's
change and one for its chroma (``kpn NAME, SURE luma and chroma``: ``infer.sure_split =
luma_chroma``). Every other method is told the true noise.
The classical ones run through the
generalised Anscombe transform (Makitalo and Foi 2013, with its closed-form unbiased
inverse) for the signal-dependent camera noise, with sigma 1 after it; on the sRGB noise
they get sigma directly. Settings, each the best of a few tried on two of the photos:
non-local means as scikit-image's gallery example (5x5 patches, distance 6, fast mode,
h = 0.6 sigma; h 0.8 and 1.0 sigma and 7x7 patches at distance 11 were worse), wavelet
BayesShrink (soft, db2, in YCbCr; db1, sym4, sym8, coif1 and RGB were worse), CBM3D
``bm3d.bm3d_rgb``'s defaults.

Metrics on outputs clipped to [0, 1] (what is displayed): PSNR of the linear image
(peak 1), PSNR of the sRGB-encoded image, SSIM of the sRGB image (scikit-image, data
range 1, per channel), means over the images; seconds per megapixel of each method
(wall, with whatever threads it uses on this machine). Writes ``quality.md``,
``quality.csv`` (every image), ``quality.png`` (PSNR against noise level, one line per
method) and ``quality_crops.png`` (crops of one photo: noisy, each method, reference).

``--quick``: two photos cropped to 96x96, one camera profile and sigma 25.

The photos and noises are ``benchmarks/quality_data.py``'s.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from kpn.errors import KpnError
from kpn.infer.denoiser import Denoiser
from kpn.infer.noise_estimate import estimate_noise
from kpn.infer.weights import SHIPPED, SHIPPED_DIR, load_weights
from kpn.io.atomic import atomic_output
from kpn.io.images import linear_to_srgb, srgb_to_linear
from kpn.metrics import psnr

from quality_data import (
    CAMERA,
    CONDITIONS,
    PHOTOS,
    QUICK_CONDITIONS,
    QUICK_SIZE,
    U16,
    Condition,
    load_photo,
    make_noisy,
)
from report import markdown_table, missing_bench_extra, provenance, write_csv, write_text

CLASSICAL = ("non-local means", "wavelet", "CBM3D")
NUMBERS = ("a", "b", "psnr_linear", "psnr_srgb", "ssim", "seconds", "mpx")
CROP = 128  # side of the crops in quality_crops.png
CROP_PHOTO = "chelsea"
# --profile-test: each kpn model told a wrong profile too, (a, b) times these factors (a by
# the square): does the network use its noise input (kpn-t's readme asks)?
WRONG_PROFILE = (0.5, 2.0)


# --- the generalised Anscombe transform ----------------------------------------------------
def anscombe(z: np.ndarray, alpha: float, sigma: float) -> np.ndarray:
    """GAT of ``z = alpha * Poisson(x / alpha) + N(0, sigma^2)``: noise std about 1 after it.

    ``(2 / alpha) sqrt(max(alpha z + 3/8 alpha^2 + sigma^2, 0))``, elementwise.
    """
    return (2 / alpha) * np.sqrt(np.maximum(alpha * z + 0.375 * alpha**2 + sigma**2, 0))


def inverse_anscombe(d: np.ndarray, alpha: float, sigma: float) -> np.ndarray:
    """Closed-form approximation of the exact unbiased inverse of :func:`anscombe`
    (Makitalo and Foi, IEEE TIP 22(1), 2013): E[x] from a denoised ``d``, elementwise."""
    d = np.maximum(d, 1e-6)  # the expansion in 1/d holds away from 0; such d map to x = 0
    s = 1.5**0.5
    x = d**2 / 4 + s / 4 / d - 11 / 8 / d**2 + 5 / 8 * s / d**3 - 1 / 8 - (sigma / alpha) ** 2
    return alpha * np.maximum(x, 0)


def stabilised(denoise: Callable[[np.ndarray, float], np.ndarray]) -> Callable:
    """A Gaussian denoiser ``denoise(image, sigma)`` made a denoiser of a Condition's noise."""

    def run(noisy: np.ndarray, condition: Condition) -> np.ndarray:
        if condition.b == 0:
            return denoise(noisy, math.sqrt(condition.a) / U16)
        alpha, sigma = condition.b / U16, math.sqrt(condition.a) / U16
        white = float(anscombe(np.array(1.0), alpha, sigma))  # scale white to about 1
        stable = anscombe(noisy.astype(np.float64), alpha, sigma) / white
        denoised = denoise(stable, 1 / white) * white
        return inverse_anscombe(denoised, alpha, sigma).astype(np.float32)

    return run


def non_local_means(image: np.ndarray, sigma: float) -> np.ndarray:
    from skimage.restoration import denoise_nl_means

    return denoise_nl_means(
        image, h=0.6 * sigma, sigma=sigma, fast_mode=True, patch_size=5, patch_distance=6,
        channel_axis=-1,
    )  # fmt: skip


def wavelet(image: np.ndarray, sigma: float) -> np.ndarray:
    from skimage.restoration import denoise_wavelet

    return denoise_wavelet(
        image, sigma=sigma, wavelet="db2", method="BayesShrink", mode="soft",
        rescale_sigma=True, convert2ycbcr=True, channel_axis=-1,
    )  # fmt: skip


def cbm3d(image: np.ndarray, sigma: float) -> np.ndarray:
    import bm3d

    return bm3d.bm3d_rgb(image, sigma_psd=sigma)


def kpn_method(
    denoiser: Denoiser, noise_factor: float = 1.0
) -> Callable[[np.ndarray, Condition], np.ndarray]:
    """The model told the condition's profile, its noise std scaled by ``noise_factor``."""

    def run(noisy: np.ndarray, condition: Condition) -> np.ndarray:
        a, b = condition.a * noise_factor**2, condition.b * noise_factor
        return denoiser(np.ascontiguousarray(noisy, dtype=np.float32), a, b)

    return run


def estimated_method(denoiser: Denoiser) -> Callable[[np.ndarray, Condition], np.ndarray]:
    """The model told the profile estimated from the noisy image (``--noise auto``); an
    image the estimate refuses is left as it is, as kpn-infer leaves it (the refusal
    printed)."""

    def run(noisy: np.ndarray, condition: Condition) -> np.ndarray:
        try:
            estimate = estimate_noise(noisy, condition.name)
        except KpnError as error:
            print(f"  told the estimate: {error}", flush=True)
            return noisy
        return denoiser(np.ascontiguousarray(noisy, dtype=np.float32), estimate.a, estimate.b)

    return run


def methods(
    models: dict[str, Denoiser], classical: bool = True, cbm3d_too: bool = True,
    profile_test: bool = False, estimate: bool = False, ensembles: tuple[int, ...] = (),
    sure_split: bool = False,
) -> dict[str, Callable]:  # fmt: skip
    """Method name -> ``run(noisy, condition) -> denoised``, in table order."""
    chosen: dict[str, Callable] = {"noisy": lambda noisy, condition: noisy}
    for name, denoiser in models.items():
        network = dataclasses.replace(denoiser, sure=False)
        chosen[f"kpn {name}"] = kpn_method(denoiser)
        if denoiser.sure:
            chosen[f"kpn {name}, no SURE"] = kpn_method(network)
        if sure_split and denoiser.sure and denoiser.sure_split == "none":
            split = dataclasses.replace(denoiser, sure_split="luma_chroma")
            chosen[f"kpn {name}, SURE luma and chroma"] = kpn_method(split)
        if estimate:
            chosen[f"kpn {name}, told the estimate"] = estimated_method(denoiser)
        for count in ensembles:
            averaged = dataclasses.replace(denoiser, ensemble=count)
            chosen[f"kpn {name}, ensemble {count}"] = kpn_method(averaged)
        if profile_test:  # the network alone: SURE, told the wrong profile too, would blur it
            for factor in WRONG_PROFILE:
                chosen[f"kpn {name}, no SURE, noise told x{factor:g}"] = kpn_method(network, factor)
    if classical:
        chosen |= {"non-local means": stabilised(non_local_means), "wavelet": stabilised(wavelet)}
    try:
        import bm3d  # noqa: F401
    except ImportError:
        cbm3d_too = False
    if cbm3d_too:
        chosen["CBM3D"] = stabilised(cbm3d)
    return chosen


# --- scores -----------------------------------------------------------------------------
def scores(output: np.ndarray, clean: np.ndarray, domain: str) -> dict[str, float]:
    """PSNR linear and sRGB and SSIM (sRGB) of ``output`` clipped to [0, 1]."""
    from skimage.metrics import structural_similarity

    shown = np.clip(output, 0, 1)
    if domain == "linear":
        linear, reference = shown, clean
        srgb, srgb_reference = linear_to_srgb(shown), linear_to_srgb(clean)
    else:
        linear, reference = srgb_to_linear(shown), srgb_to_linear(clean)
        srgb, srgb_reference = shown, clean
    ssim = structural_similarity(srgb, srgb_reference, data_range=1.0, channel_axis=-1)
    return {
        "psnr_linear": psnr(linear, reference),
        "psnr_srgb": psnr(srgb, srgb_reference),
        "ssim": float(ssim),
    }


# --- outputs ----------------------------------------------------------------------------
def headline(condition: Condition) -> str:
    return "psnr_linear" if condition.domain == "linear" else "psnr_srgb"


def summary(rows: list[dict], names: list[str], conditions: tuple[Condition, ...]) -> dict:
    """(condition, method) -> mean scores and seconds per megapixel."""
    table = {}
    for condition in conditions:
        for name in names:
            mine = [r for r in rows if r["condition"] == condition.name and r["method"] == name]
            if not mine:  # a method left out at this noise (--cbm3d-at)
                continue
            means = {
                k: statistics.mean(r[k] for r in mine) for k in ("psnr_linear", "psnr_srgb", "ssim")
            }
            means["s_per_mpx"] = sum(r["seconds"] for r in mine) / sum(r["mpx"] for r in mine)
            table[condition.name, name] = means
    return table


def plot(path: Path, table: dict, names: list[str], conditions: tuple[Condition, ...]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = [d for d in ("linear", "srgb") if any(c.domain == d for c in conditions)]
    figure, axes = plt.subplots(1, len(domains), figsize=(6 * len(domains), 4.5), squeeze=False)
    for axis, domain in zip(axes[0], domains, strict=True):
        chosen = [c for c in conditions if c.domain == domain]
        levels = [c.level * (255 if domain == "srgb" else 1) for c in chosen]
        for name in names:
            values = [table.get((c.name, name), {}).get(headline(c), math.nan) for c in chosen]
            axis.plot(levels, values, marker="o", label=name)
        if domain == "linear":
            axis.set_xlabel(f"noise std at 18% grey ({CAMERA}, pushed; linear, white = 1)")
            axis.set_ylabel("PSNR of the linear image (dB)")
            axis.set_title("camera noise")
        else:
            axis.set_xlabel("Gaussian noise sigma (of 255, sRGB)")
            axis.set_ylabel("PSNR of the sRGB image (dB)")
            axis.set_title("sRGB Gaussian noise")
        axis.set_xticks(levels, [c.name for c in chosen], rotation=15, fontsize=8)
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    with atomic_output(path) as temp:
        figure.savefig(temp, dpi=100)
    plt.close(figure)


def crop_grid(path: Path, crops: dict, psnrs: dict) -> None:
    """Rows: conditions; columns: noisy, each method, reference (sRGB, 2x nearest)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(crops)
    columns = list(crops[rows[0]])
    figure, axes = plt.subplots(
        len(rows), len(columns), figsize=(2.2 * len(columns), 2.5 * len(rows)), squeeze=False
    )
    for r, condition in enumerate(rows):
        for c, name in enumerate(columns):
            axis = axes[r][c]
            axis.set_xticks([]), axis.set_yticks([])
            if name not in crops[condition]:  # not run at this noise
                continue
            axis.imshow(crops[condition][name], interpolation="nearest")
            score = psnrs.get((condition, name))
            axis.set_title(name + ("" if score is None else f"\n{score:.2f} dB"), fontsize=8)
            axis.set_xticks([]), axis.set_yticks([])
        axes[r][0].set_ylabel(condition, fontsize=8)
    figure.tight_layout()
    with atomic_output(path) as temp:
        figure.savefig(temp, dpi=100)
    plt.close(figure)


def ensemble_counts(text: str) -> tuple[int, ...]:
    """``--ensemble``'s comma-separated counts, each one of 2, 4, 8."""
    parts = [part.strip() for part in text.split(",")]
    if not all(part in ("2", "4", "8") for part in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: expected counts among 2, 4, 8, e.g. 2,4")
    return tuple(map(int, parts))


def parse_models(pairs: list[str]) -> dict[str, Denoiser]:
    models = {}
    for pair in pairs:
        name, sep, source = pair.partition("=")
        if not sep or not name or not source:
            raise KpnError(f"--model {pair!r}: expected NAME=RUN_DIR_OR_WEIGHTS")
        loaded = load_weights(source)
        models[name] = Denoiser.build(loaded.model, loaded.config.infer)
        print(f"kpn {name}: {loaded.description}")
    return models


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument(
        "--model", action="append", metavar="NAME=WEIGHTS",
        help="a run directory, checkpoint or .lut (repeatable; default: the shipped models, "
        "design-star21, design-chroma, design and vkdt-w32 from weights/)",
    )  # fmt: skip
    parser.add_argument("--images", default=",".join(PHOTOS), help="scikit-image photos")
    parser.add_argument("--out", default="benchmarks/results", help="where the results go")
    parser.add_argument("--quick", action="store_true", help="2 photos of 96x96, 2 noises")
    parser.add_argument("--no-cbm3d", action="store_true", help="leave out CBM3D (slow)")
    parser.add_argument(
        "--cbm3d-at", default="", metavar="NOISE,...",
        help="run CBM3D (70-120 s/Mpx) only at these noise settings, e.g. 'ISO 12800 +3 EV' "
        "(with --classical-from: run it there in place of the earlier rows)",
    )  # fmt: skip
    parser.add_argument(
        "--only-kpn", action="store_true", help="the models and the noisy input alone"
    )
    parser.add_argument(
        "--classical-from", metavar="CSV",
        help="take the classical methods' rows from an earlier quality.csv of the same photos "
        "and noises (the same noisy inputs: seeds depend on photo and noise only)",
    )  # fmt: skip
    parser.add_argument(
        "--profile-test", action="store_true",
        help="also run each model told a wrong noise profile (std x0.5 and x2)",
    )  # fmt: skip
    parser.add_argument(
        "--estimate", action="store_true",
        help="also run each model told the profile estimated from the noisy image "
        "(--noise auto; a refused image is scored as the noisy input)",
    )  # fmt: skip
    parser.add_argument(
        "--ensemble", type=ensemble_counts, default=(), metavar="N,...",
        help="also run each model as infer.py --ensemble N runs it, for each N (2, 4, 8)",
    )  # fmt: skip
    parser.add_argument(
        "--sure-split", action="store_true",
        help="also run each model with a SURE weight for the luma and one for the chroma "
        "(infer.sure_split = luma_chroma)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if (missing := missing_bench_extra("matplotlib", "skimage")) is not None:
        return missing
    try:
        models = parse_models(args.model or [f"{n}={SHIPPED_DIR / n}" for n in SHIPPED])
    except KpnError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    names_of_photos = args.images.split(",")[: 2 if args.quick else None]
    unknown = [n for n in names_of_photos if n not in PHOTOS]
    if unknown:
        parser.error(f"--images: unknown photo {unknown[0]!r} (known: {', '.join(PHOTOS)})")
    conditions = QUICK_CONDITIONS if args.quick else CONDITIONS
    cbm3d_at = {name.strip() for name in args.cbm3d_at.split(",") if name.strip()}
    unknown = cbm3d_at - {c.name for c in conditions}
    if unknown:
        parser.error(f"--cbm3d-at: unknown noise {sorted(unknown)[0]!r}")
    size = QUICK_SIZE if args.quick else None
    photos = {name: load_photo(name, size) for name in names_of_photos}
    earlier = []
    if args.classical_from:
        with open(args.classical_from, newline="") as handle:
            earlier = [
                {**r, **{k: float(r[k]) for k in NUMBERS}}
                for r in csv.DictReader(handle)
                if r["method"] in CLASSICAL
            ]
    reuse = bool(earlier)
    classical = not (args.only_kpn or reuse)
    # reused rows and --cbm3d-at: CBM3D runs at those noises, its earlier rows there dropped
    cbm3d_too = not args.no_cbm3d and (classical or (reuse and bool(cbm3d_at)))
    denoisers = methods(
        models, classical, cbm3d_too, args.profile_test, args.estimate, args.ensemble,
        args.sure_split,
    )  # fmt: skip
    if "CBM3D" in denoisers and reuse:
        earlier = [r for r in earlier if r["method"] != "CBM3D" or r["condition"] not in cbm3d_at]
    names = [name for name in denoisers if name not in CLASSICAL]
    names += [m for m in CLASSICAL if m in denoisers or any(r["method"] == m for r in earlier)]
    crop_photo = CROP_PHOTO if CROP_PHOTO in photos else names_of_photos[0]
    crop_conditions = {c.name for c in QUICK_CONDITIONS}

    rows, crops, crop_psnrs = [], {}, {}
    for p, (photo_name, srgb) in enumerate(photos.items()):
        for c, condition in enumerate(conditions):
            clean, noisy = make_noisy(srgb, condition, seed=1000 * p + c)
            mpx = clean.shape[0] * clean.shape[1] / 1e6
            line = []
            for name, denoise in denoisers.items():
                if name == "CBM3D" and cbm3d_at and condition.name not in cbm3d_at:
                    continue
                start = time.perf_counter()
                output = denoise(noisy, condition)
                seconds = time.perf_counter() - start if name != "noisy" else 0.0
                score = scores(output, clean, condition.domain)
                rows.append({"image": photo_name, "condition": condition.name,
                             "a": condition.a, "b": condition.b, "method": name,
                             **score, "seconds": seconds, "mpx": mpx})  # fmt: skip
                line.append(f"{name} {score[headline(condition)]:.2f}")
                if photo_name == crop_photo and condition.name in crop_conditions:
                    crops.setdefault(condition.name, {})[name] = crop(output, condition)
                    crop_psnrs[condition.name, name] = score[headline(condition)]
            for row in earlier:
                if (row["image"], row["condition"]) == (photo_name, condition.name):
                    if (row["a"], row["b"]) != (condition.a, condition.b):
                        parser.error(f"--classical-from: {condition.name} had another profile")
                    rows.append(row)
            if photo_name == crop_photo and condition.name in crop_conditions:
                crops[condition.name]["reference"] = crop(clean, condition)
            print(f"{photo_name} {condition.name}: " + ", ".join(line), flush=True)

    table = summary(rows, names, conditions)
    out = Path(args.out)
    write_csv(out / "quality.csv", rows)
    plot(out / "quality.png", table, names, conditions)
    crop_grid(out / "quality_crops.png", crops, crop_psnrs)
    write_text(out / "quality.md", report(models, photos, conditions, names, table, rows))
    print(f"wrote quality.md, quality.csv, quality.png and quality_crops.png into {out}")
    return 0


def crop(image: np.ndarray, condition: Condition) -> np.ndarray:
    """The centred ``CROP`` square, clipped and sRGB-encoded for display."""
    height, width = image.shape[:2]
    top, left = max(0, (height - CROP) // 2), max(0, (width - CROP) // 2)
    part = np.clip(image[top : top + CROP, left : left + CROP], 0, 1)
    return linear_to_srgb(part) if condition.domain == "linear" else part


def report(
    models: dict[str, Denoiser],
    photos: dict[str, np.ndarray],
    conditions: tuple[Condition, ...],
    names: list[str],
    table: dict,
    rows: list[dict],
) -> str:
    """quality.md: where the figures come from, the headline table, each model's worst
    photo against its noisy input, and every score."""
    sizes = ", ".join(f"{n} {p.shape[1]}x{p.shape[0]}" for n, p in photos.items())
    profiles = "; ".join(
        f"{c.name}: (a, b) = ({c.a:.4g}, {c.b:.4g})" for c in conditions if c.domain == "linear"
    )
    lines = [
        "# Denoising quality against classical denoisers",
        "",
        *provenance(),
        f"- photos (scikit-image, never trained on): {sizes}",
        f"- camera noise: {CAMERA} (darktable's profiles), pushed; {profiles}, on the "
        "0..65535 scale of the linear image",
        "- sRGB noise: Gaussian, sigma of 255, added to the encoded image; ours is given "
        "(a, b) = ((sigma/255*65535)^2, 0)",
        "- every method gets the true noise ('told the estimate': the profile estimated from "
        "the noisy image, a refused image left noisy); classical methods run through the "
        "generalised Anscombe transform for camera noise; outputs clipped to [0, 1] before scoring",
        *(
            f"- kpn {n}: {d.levels} levels, W {d.config.width}, "
            f"{d.config.features}, {d.config.kernel_taps} kernels, tile {d.tile}; "
            + (
                f"SURE blend, window {d.sure_window}, weights {d.sure_split} (kpn.infer.sure)"
                if d.sure
                else "no SURE"
            )
            for n, d in models.items()
        ),
        "",
        "## PSNR (dB), mean over the photos",
        "",
        "Linear PSNR for camera noise, sRGB PSNR for sRGB noise; s/Mpx over all of them.",
        "",
    ]
    header = ["method", *(c.name for c in conditions), "s/Mpx"]
    table_rows = []
    for name in names:
        ran = [c for c in conditions if (c.name, name) in table]
        seconds = statistics.mean(table[c.name, name]["s_per_mpx"] for c in ran)
        cells = [f"{table[c.name, name][headline(c)]:.2f}" if c in ran else "-" for c in conditions]
        table_rows.append([name, *cells, f"{seconds:.2f}"])
    lines += [markdown_table(header, table_rows), ""]
    lines += never_worse(rows, [n for n in names if n.startswith("kpn ")], conditions)
    lines += ["## Every score", ""]
    table_rows = [
        [c.name, name, *(f"{table[c.name, name][k]:.2f}" for k in ("psnr_linear", "psnr_srgb")),
         f"{table[c.name, name]['ssim']:.4f}", f"{table[c.name, name]['s_per_mpx']:.2f}"]
        for c in conditions for name in names if (c.name, name) in table
    ]  # fmt: skip
    header = ["noise", "method", "PSNR linear", "PSNR sRGB", "SSIM", "s/Mpx"]
    lines += [markdown_table(header, table_rows), ""]
    return "\n".join(lines)


def never_worse(rows: list[dict], names: list[str], conditions: tuple[Condition, ...]) -> list[str]:
    """The section of quality.md on each model's worst photo: its PSNR gain over the noisy
    input (headline metric) on the photo where that gain is least, per condition."""
    if not names:
        return []
    lines = [
        "## Never worse than the input",
        "",
        "PSNR gain over the noisy input on the photo where it is least (headline metric); "
        "negative: the model made that photo worse.",
        "",
    ]
    header = ["method", *(c.name for c in conditions)]
    body = []
    for name in names:
        cells = [name]
        for condition in conditions:
            key = headline(condition)
            score = {r["image"]: r[key] for r in rows
                     if r["condition"] == condition.name and r["method"] == name}  # fmt: skip
            noisy = {r["image"]: r[key] for r in rows
                     if r["condition"] == condition.name and r["method"] == "noisy"}  # fmt: skip
            worst = min(score, key=lambda image: score[image] - noisy[image])
            cells.append(f"{score[worst] - noisy[worst]:+.2f} ({worst})")
        body.append(cells)
    return [*lines, markdown_table(header, body), ""]


if __name__ == "__main__":
    sys.exit(main())
