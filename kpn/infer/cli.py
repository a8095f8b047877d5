"""``python infer.py`` / ``kpn-infer``: denoise photos with trained weights.

    kpn-infer INPUT... [--weights W] [--config X | --preset NAME] [-o OUT | --out-dir DIR]
        [--format pfm|png|tiff|same] [--noise-a A --noise-b B | --nprof FILE
        | --nprof-dir DIR | --noise auto] [--tile N] [--device cpu|cuda]
        [--precision auto|model|fp32|bf16|vkdt-f16] [--vkdt-matmul coopmat|fallback]
        [--sure on|off] [--ensemble 1|2|4|8] [--reference REF]

Weights ``W``: without ``--weights``, the shipped model in ``weights/`` (the design model,
or with ``--config`` the shipped model of that config's [model]); a training run's
directory (its ``checkpoint.pt``, else its ``weights.lut`` with its ``config.toml``), a
checkpoint, or a ``.lut``. The model's config comes from the run or checkpoint, or from
the kpn section of a ``.lut`` kpn wrote. A ``.lut`` without one (vkdt's) is refused
unless ``--config`` (which must agree with its trailer and supplies the rest) or
``--preset NAME`` (a config in ``configs/``, under the trailer's items) says what it is
(:func:`kpn.vkdt.lut_model.config_for_lut`). ``--config`` never overrides what the weights
record: with a run, checkpoint or kpn's ``.lut`` its ``[model]`` must be the same (its
``[infer]`` is used).

Inputs: PFM, PNG, JPEG and TIFF (8- and 16-bit files are sRGB, decoded to linear and
encoded back), camera raw files (demosaiced, linear; written as PFM, or 16-bit TIFF or
PNG), folders (their image files, not those named ``*.denoised.*``) and glob patterns.

Outputs: beside the input as ``NAME.denoised.EXT``, in ``--out-dir`` as ``NAME.EXT``, or
``-o`` (one input). ``--format same`` keeps the input's format (PFM for camera raw); the
bit depth follows the input (8-bit stays 8-bit; float inputs give float TIFF; 16 bits
otherwise). Writes are atomic, and an output that would replace an input is refused.

The output is blended towards the input, pixel by pixel, as far as Stein's unbiased risk
estimate says the network does harm there (:mod:`kpn.infer.sure`; ``infer.sure``, ``--sure``):
1.7 times the network alone's time on a 24 Mpx photo (``infer.sure_divergence``). vkdt's
presets turn it off, as vkdt has no such stage. ``--ensemble N`` (``infer.ensemble``, kpn
only): the mean of the outputs of N orientations of the image (transposed, turned, flipped),
N times the time, +0.02 to +0.18 dB on the benchmark (docs/design.md §19).

Noise profile, first that applies: ``--noise-a``/``--noise-b`` (0..65535 scale);
``--nprof FILE``; the profile of a camera raw file's maker, model and ISO in
``--nprof-dir``; ``--noise auto`` (:mod:`kpn.infer.noise_estimate`: estimated from the
image's flattest patches, printed with its standard error; an image too small, clipped, flat or
textured, or whose noise is correlated between pixels, is refused). Each file's profile is
printed.

Exit status: 0 when every input was denoised, 1 when some failed (each failure is one
line naming the file; the others are written), 2 for usage errors and for weights or
configs that cannot be used. Ctrl-C (SIGINT) or SIGTERM stops the run with one line naming
the file it was on (not written: no partial output or temporary file stays) and the files
written before it (kept), exit status 130 (SIGINT) or 143 (SIGTERM), 128 plus the signal.

Also ``python -m kpn compare-precision``: the fp32 and vkdt-f16 outputs of a model side by
side (:mod:`kpn.infer.compare`).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

import torch
import tqdm

from kpn.cli import Parser
from kpn.config import InferConfig
from kpn.errors import KpnError, make_folder, require_folder
from kpn.infer.compare import compare_precision
from kpn.infer.denoiser import Denoiser
from kpn.infer.files import (
    FORMAT_EXTENSION,
    WRITABLE,
    Job,
    expand_inputs,
    output_bits,
    plan_jobs,
    read_reference,
    read_source,
    write_output,
)
from kpn.infer.interrupt import Progress, stops_raise
from kpn.infer.profile import NoiseOptions, check_noise_parameter, resolve_profile
from kpn.infer.weights import load_weights, shipped_weights
from kpn.io.atomic import atomic_output
from kpn.io.nprof import read_nprof
from kpn.metrics import psnr
from kpn.model.precision import VKDT_MATMULS

# The library's parameters as this command line names them (KpnError.worded).
FLAGS = {
    "path": "--weights",
    "config": "--config",
    "preset": "--preset",
    "tile": "--tile",
    "precision": "--precision",
    "device": "--device",
    "vkdt_matmul": "--vkdt-matmul",
    "sure": "--sure",
    "ensemble": "--ensemble",
    "noise_a": "--noise-a",
    "noise_b": "--noise-b",
    "noise": "--noise",
    "nprof": "--nprof",
    "nprof_dir": "--nprof-dir",
    "output": "-o",
    "out_dir": "--out-dir",
}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="kpn-infer",
        description=__doc__.split("\n\n")[0],  # its markup removed by Parser
        epilog="Exit status: 0 all written, 1 some inputs failed, 2 usage or weights errors, "
        "130 interrupted (143 terminated).",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, globs")
    parser.add_argument(
        "--weights",
        help="run directory, checkpoint (.pt) or vkdt .lut; default: the shipped model that "
        "fits --config, without --config the shipped default (weights/design-star21)",
    )
    told = parser.add_mutually_exclusive_group()
    told.add_argument(
        "--config",
        help="TOML config: [infer] settings; the model of a .lut that does not say it (vkdt's)",
    )
    told.add_argument(
        "--preset",
        metavar="NAME",
        help="the model of a .lut that does not say it (vkdt's): a config in configs/ under "
        "the trailer's items, e.g. vkdt-head-w32",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("-o", "--output", help="output file (one input only)")
    where.add_argument("--out-dir", help="folder for the outputs, named as the inputs")
    parser.add_argument(
        "--format",
        choices=("pfm", "png", "tiff", "same"),
        default="same",
        help="output format (default: the input's; PFM for camera raw)",
    )
    noise = parser.add_argument_group("noise profile (the first that applies is used)")
    noise.add_argument("--noise-a", type=float, help="Gaussian part a, 0..65535 scale")
    noise.add_argument("--noise-b", type=float, help="Poissonian part b, 0..65535 scale")
    noise.add_argument("--nprof", help="a maker-model-iso.nprof file")
    noise.add_argument("--nprof-dir", help="folder of .nprof files, looked up for raw files")
    noise.add_argument("--noise", choices=("auto",), help="auto: estimate from the image")
    parser.add_argument("--tile", type=int, help="tile side in pixels, 0 = untiled")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--precision",
        choices=("auto", "model", "fp32", "bf16", "vkdt-f16"),
        help="default: the config's infer.precision; auto: the model's own, a float32 model "
        "in bfloat16 where the device has it natively",
    )
    parser.add_argument(
        "--vkdt-matmul",
        choices=VKDT_MATMULS,
        help="with vkdt-f16: vkdt's matrix path, coopmat (GPUs with cooperative matrices) or "
        "fallback (all others; docs/vkdt.md); default: the model's",
    )
    parser.add_argument(
        "--sure",
        choices=("on", "off"),
        help="blend the output towards the input where Stein's unbiased risk estimate says "
        "the network does harm (1.7 times its time); default: the config's infer.sure, "
        "on but in vkdt's presets",
    )
    parser.add_argument(
        "--ensemble",
        type=int,
        choices=(1, 2, 4, 8),
        help="the mean of the outputs of this many orientations of the image (N times the "
        "time); default: the config's infer.ensemble, 1",
    )
    parser.add_argument("--reference", help="clean image (one input) or folder of them: print PSNR")
    return parser


def _given_profile(args: argparse.Namespace) -> tuple[float, float] | None:
    """``--noise-a`` and ``--noise-b``, both or neither, each checked; None without them."""
    if (args.noise_a is None) != (args.noise_b is None):
        raise KpnError("--noise-a and --noise-b go together")
    if args.noise_a is None:
        return None
    return (
        check_noise_parameter("noise_a", args.noise_a),
        check_noise_parameter("noise_b", args.noise_b),
    )


def _noise_options(args: argparse.Namespace, infer: InferConfig) -> NoiseOptions:
    """The run's noise sources, checked up front (usage errors)."""
    explicit = _given_profile(args)
    unmarked = None if infer.nprof_scale == "refuse" else infer.nprof_scale
    nprof = read_nprof(args.nprof, unmarked=unmarked) if args.nprof else None  # type: ignore[arg-type]
    if args.nprof_dir is not None:
        require_folder(args.nprof_dir, "--nprof-dir")
    options = NoiseOptions(
        explicit, nprof, args.nprof or "", args.nprof_dir, args.noise == "auto", unmarked
    )
    if not options.any:
        raise KpnError(
            "no noise profile: give --noise-a and --noise-b, --nprof, --nprof-dir or --noise auto"
        )
    return options


def _reference_for(reference: str | None, source: Path) -> Path | None:
    """The clean image for ``source``: ``--reference`` itself, or its file of that name."""
    if reference is None:
        return None
    path = Path(reference)
    return path / source.name if path.is_dir() else path


def _check_output_arguments(args: argparse.Namespace, count: int) -> None:
    if args.output is not None:
        if count > 1:
            raise KpnError(f"-o names one output, but there are {count} inputs: use --out-dir")
        suffix = Path(args.output).suffix.lower()
        if suffix not in WRITABLE:
            raise KpnError(
                f"-o {args.output}: cannot write {suffix or 'no extension'!r} "
                f"(expected one of {sorted(WRITABLE)})"
            )
        if (
            args.format != "same"
            and FORMAT_EXTENSION[args.format] != suffix
            and not (args.format == "tiff" and suffix == ".tiff")
        ):
            raise KpnError(f"-o {args.output} contradicts --format {args.format}")
    if args.out_dir is not None:
        make_folder(args.out_dir)
    if args.reference is not None and count > 1 and not Path(args.reference).is_dir():
        raise KpnError(f"--reference {args.reference}: a file fits one input; give a folder")


def process(
    job: Job,
    denoiser: Denoiser,
    noise: NoiseOptions,
    reference: Path | None,
    show_progress: bool,
) -> None:
    """Denoise one file and write its output; a failure is one KpnError naming the file."""
    source = read_source(job.source, job.output)
    clean = None if reference is None else read_reference(reference, job.source, source.image)
    profile = resolve_profile(noise, job.source, source.image, source.raw)
    say(f"{job.source}: noise (a, b) = ({profile.a:.6g}, {profile.b:.6g}) from {profile.source}")
    height, width = source.image.shape[:2]
    start = time.perf_counter()
    with (
        atomic_output(job.output) as temp,  # fails here, before the work, when unwritable
        tqdm.tqdm(
            total=denoiser.tiles(height, width),
            desc=job.source.name,
            unit="tile",
            leave=False,
            disable=not show_progress,
        ) as bar,
    ):
        denoised = denoiser(source.image, profile.a, profile.b, bar.update)
        noisy_psnr = psnr(source.image, clean) if clean is not None else None
        bits = output_bits(job.output.suffix, source.bits)
        kept = source.kept  # grey, alpha: what the output gets back of the input
        del source  # the input's memory is free while the output is encoded
        write_output(temp, denoised, bits, kept)
    seconds = time.perf_counter() - start
    note = f"; {kept.note()}" if kept.note() else ""  # a grey file, an alpha plane
    say(f"{job.source} -> {job.output} ({width} x {height}, {seconds:.1f} s{note})")
    if clean is not None:
        say(
            f"{job.source}: PSNR noisy {noisy_psnr:.2f} dB -> denoised "
            f"{psnr(denoised, clean):.2f} dB"
        )


def say(line: str, file: TextIO | None = None) -> None:
    """Print ``line`` (to stdout by default) above the progress bars: tqdm clears them,
    writes, and draws them again; a plain print would land on a bar's line, after it."""
    tqdm.tqdm.write(line, file=sys.stdout if file is None else file)


def _failure_line(error: KpnError, source: Path) -> str:
    text = error.worded(FLAGS).strip()
    message = text.splitlines()[0] if text else "failed"
    return message if str(source) in message else f"{source}: {message}"


def _files(jobs: Sequence[Job], show: bool) -> Iterator[Job]:
    if len(jobs) < 2:
        yield from jobs
        return
    yield from tqdm.tqdm(jobs, desc="files", unit="file", disable=not show)


def main(argv: Sequence[str] | None = None) -> int:
    """Run kpn-infer; returns the exit status (see the module docstring)."""
    done = Progress()
    with stops_raise():
        try:
            return _main(argv, done)
        except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM (stops_raise)
            say(done.interrupted_line(stop), sys.stderr)
            return 128 + getattr(stop, "signum", signal.SIGINT)


def _main(argv: Sequence[str] | None, done: Progress) -> int:
    """:func:`main`, noting in ``done`` each file it writes."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # usage errors: argparse has printed them
        return int(exit_.code or 0)
    try:
        weights = args.weights if args.weights is not None else shipped_weights(args.config)
        loaded = load_weights(weights, args.config, args.preset)
        infer = loaded.config.infer
        noise = _noise_options(args, infer)
        denoiser = Denoiser.build(
            loaded.model,
            infer,
            precision=args.precision,
            tile=args.tile,
            device=args.device,
            vkdt_matmul=args.vkdt_matmul,
            sure=None if args.sure is None else args.sure == "on",
            ensemble=args.ensemble,
        )
        sources, failures = expand_inputs(args.inputs)
        _check_output_arguments(args, len(sources))
    except KpnError as error:
        print(f"error: {error.worded(FLAGS)}", file=sys.stderr)
        return 2
    arithmetic = denoiser.config.precision
    if arithmetic == "vkdt-f16":
        arithmetic += f" ({denoiser.config.vkdt_matmul})"
    print(
        f"{'shipped ' if args.weights is None else ''}weights {loaded.description}; "
        f"{denoiser.levels} levels, {arithmetic}, tile {denoiser.tile or 'none'}, "
        + (f"SURE blend (window {denoiser.sure_window or 'image'})" if denoiser.sure else "no SURE")
        + (f", mean of {denoiser.ensemble} orientations" if denoiser.ensemble > 1 else "")
    )
    jobs, refused = plan_jobs(sources, args.format, args.output, args.out_dir)
    failures += refused
    for line in failures:
        print(f"error: {line}", file=sys.stderr)
    show = sys.stderr.isatty()
    done.total = len(jobs)
    for job in _files(jobs, show):
        reference = _reference_for(args.reference, job.source)
        done.start(job)
        try:
            process(job, denoiser, noise, reference, show)
        except KpnError as error:
            line = _failure_line(error, job.source)
        except (MemoryError, torch.OutOfMemoryError):
            line = f"{job.source}: out of memory (try a smaller --tile)"
        else:
            done.finish(written=True)
            continue
        done.finish(written=False)
        say(f"error: {line}", sys.stderr)
        failures.append(line)
    return 1 if failures else 0


# --- python -m kpn compare-precision -----------------------------------------------------
def command_compare_precision(args: argparse.Namespace) -> None:
    explicit = _given_profile(args)
    if explicit is None and args.noise != "auto":
        raise KpnError("give the noise profile: --noise-a A --noise-b B, or --noise auto")
    noise = NoiseOptions(explicit=explicit, auto=args.noise == "auto")
    references = [Path(r) for r in args.reference] if args.reference else [None] * len(args.images)
    images = [Path(i) for i in args.images]
    for result in compare_precision(
        args.weights, images, references, noise, args.config, args.tile
    ):
        line = f"{result.image}: fp32 vs vkdt-f16 {result.fp32_vs_f16:.2f} dB"
        if result.fp32_vs_reference is not None:
            line += (
                f"; against the reference: fp32 {result.fp32_vs_reference:.2f} dB, "
                f"vkdt-f16 {result.f16_vs_reference:.2f} dB"
            )
        print(f"{line}  [{result.profile}]")


def add_compare_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``python -m kpn compare-precision``: fp32 against vkdt-f16 outputs (design §10)."""
    compare = commands.add_parser(
        "compare-precision", help="PSNR between fp32 and vkdt-f16 outputs of a model"
    )
    compare.add_argument("images", nargs="+", metavar="IMAGE")
    compare.add_argument("--weights", required=True, help="run directory, checkpoint or .lut")
    compare.add_argument("--config", help="TOML config (a .lut without trailer needs one)")
    compare.add_argument("--reference", action="append", help="clean image, one per IMAGE")
    compare.add_argument("--noise-a", type=float, help="Gaussian part a, 0..65535 scale")
    compare.add_argument("--noise-b", type=float, help="Poissonian part b, 0..65535 scale")
    compare.add_argument("--noise", choices=("auto",), help="auto: estimate from the image")
    compare.add_argument("--tile", type=int, help="tile side in pixels, 0 = untiled")
    compare.set_defaults(handler=command_compare_precision)
