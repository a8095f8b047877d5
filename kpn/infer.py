"""``python infer.py`` / ``kpn-infer``: denoise photos with trained weights.

    kpn-infer INPUT... [--weights W] [--config X | --preset NAME] [-o OUT | --out-dir DIR]
        [--format pfm|png|tiff|same] [--noise-a A --noise-b B | --nprof FILE
        | --nprof-dir DIR | --noise auto] [--tile N] [--device cpu|cuda]
        [--precision auto|model|fp32|bf16|vkdt-f16] [--vkdt-matmul coopmat|fallback]
        [--sure on|off] [--reference REF]

Weights ``W``: without ``--weights``, the shipped model in ``weights/`` (the design model,
or with ``--config`` the shipped model of that config's [model]); a training run's
directory (its ``checkpoint.pt``, else its ``weights.lut`` with its ``config.toml``), a
checkpoint, or a ``.lut``. The model's config comes from the run or checkpoint, or from
the kpn section of a ``.lut`` kpn wrote. A ``.lut`` without one (vkdt's) is refused
unless ``--config`` (which must agree with its trailer and supplies the rest) or
``--preset NAME`` (a config in ``configs/``, under the trailer's items) says what it is
(:func:`kpn.export.config_for_lut`). ``--config`` never overrides what the weights
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
estimate says the network does harm there (:mod:`kpn.sure`; ``infer.sure``, ``--sure``):
the network runs twice. vkdt's presets turn it off, as vkdt has no such stage.

Noise profile, first that applies: ``--noise-a``/``--noise-b`` (0..65535 scale);
``--nprof FILE``; the profile of a camera raw file's maker, model and ISO in
``--nprof-dir``; ``--noise auto`` (:mod:`kpn.noise_estimate`). Each file's profile is
printed.

Exit status: 0 when every input was denoised, 1 when some failed (each failure is one
line naming the file; the others are written), 2 for usage errors and for weights or
configs that cannot be used.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import imagecodecs
import numpy as np
import tifffile
import torch
import tqdm
from torch import Tensor

from kpn.cli import Parser
from kpn.config import MIN_TILE, Config, InferConfig, ModelConfig, load_config
from kpn.errors import KpnError
from kpn.export import (
    RUN_CHECKPOINT,
    check_same_model,
    config_for_lut,
    load_lut,
    load_training_state,
    model_from_state,
)
from kpn.fileio import atomic_output, atomic_write_bytes
from kpn.io import (
    IMAGE_EXTENSIONS,
    JPEG_QUALITY,  # write_image's, for the same files
    PFM_EXTENSIONS,
    RAW_EXTENSIONS,
    RawImage,
    check_finite,
    encode_srgb,
    read_any,
    read_raw,
    write_image,
    write_pfm,
)
from kpn.loss import psnr
from kpn.lut import read_lut
from kpn.model import KPN, kpn_forward
from kpn.noise_estimate import estimate_noise
from kpn.nprof import NoiseProfile, find_profile, read_nprof
from kpn.precision import VKDT_MATMULS
from kpn.sure import sure_blend
from kpn.tiling import plan_tiles, tiled_forward

SUFFIX = ".denoised"  # default output: NAME.denoised.EXT beside the input
RUN_WEIGHTS = "weights.lut"  # a run directory's vkdt weights (kpn.train.WEIGHTS)
RUN_CONFIG = "config.toml"  # a run directory's config (kpn.train.CONFIG)
FORMAT_EXTENSION = {"pfm": ".pfm", "png": ".png", "tiff": ".tif"}
WRITABLE = frozenset({".pfm", ".png", ".jpg", ".jpeg", ".tif", ".tiff"})
INPUT_EXTENSIONS = PFM_EXTENSIONS | IMAGE_EXTENSIONS | RAW_EXTENSIONS
GLOB_CHARACTERS = frozenset("*?[")
FLOAT32_MAX = float(np.finfo(np.float32).max)  # the model computes in float32
# The trained models in the repository (weights/NAME: a run directory with its model card),
# the first the default of an infer without --weights.
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "weights"
SHIPPED = ("design", "vkdt-w32")


# --- weights -----------------------------------------------------------------------------
@dataclass(frozen=True)
class LoadedWeights:
    """A model ready for inference, its whole config, and where both came from."""

    model: KPN
    config: Config
    description: str


def _from_lut(
    path: Path, config: Config | None, config_name: str, preset: str | None = None
) -> LoadedWeights:
    lut = read_lut(path)
    imported = config_for_lut(lut, config, config_name, preset)
    with torch.random.fork_rng(devices=[]):  # the discarded random init leaves no trace
        model = KPN(imported.config.model)
    load_lut(model.mlp, imported.config.model, lut)
    how = imported.source + "".join(f"; {note}" for note in imported.notes)
    if lut.model is None:
        how = f"trailer + {how}" if lut.trailer is not None else f"{how}, no trailer"
    return LoadedWeights(model, imported.config, f"{path} (config: {how})")


def load_weights(
    source: str | os.PathLike[str],
    config_path: str | os.PathLike[str] | None = None,
    preset: str | None = None,
) -> LoadedWeights:
    """The model of a run directory, a checkpoint or a ``.lut``, and its config.

    See the module docstring for where the config comes from; ``preset`` (``--preset``)
    names a config in ``configs/`` for a ``.lut`` that does not say its model. Every
    failure (missing or corrupt file, weights that do not fit, a ``--config`` that
    contradicts them, a ``.lut`` nobody says the model of) is a one-line
    :class:`KpnError`.
    """
    path = Path(source)
    user = load_config(config_path) if config_path is not None else None
    name = str(config_path)
    if not path.exists():
        raise KpnError(f"{path}: no such weights file or run directory")
    if preset is not None and (path.is_dir() or path.suffix.lower() != ".lut"):
        raise KpnError(
            f"--preset {preset}: {path} is a run or checkpoint, which says its model "
            "itself (--preset is for a .lut that does not)"
        )
    if path.is_dir() and not (path / RUN_CHECKPOINT).is_file() and (path / RUN_WEIGHTS).is_file():
        run_config = load_config(path / RUN_CONFIG) if (path / RUN_CONFIG).is_file() else None
        if run_config is None:
            raise KpnError(f"{path}: a run directory with {RUN_WEIGHTS} but no {RUN_CONFIG}")
        loaded = _from_lut(path / RUN_WEIGHTS, run_config, str(path / RUN_CONFIG))
        if user is not None:
            check_same_model(loaded.config.model, user.model, name, str(path))
            loaded = dataclasses.replace(
                loaded, config=dataclasses.replace(loaded.config, infer=user.infer)
            )
        return loaded
    if path.suffix.lower() == ".lut":
        return _from_lut(path, user, name, preset)
    state = load_training_state(path)
    model = model_from_state(state, str(path))
    config = state.config
    if user is not None:
        check_same_model(config.model, user.model, name, str(path))
        config = dataclasses.replace(config, infer=user.infer)
    return LoadedWeights(model, config, f"{path} (config: the run's, step {state.step})")


def shipped_weights(config_path: str | None = None) -> Path:
    """The shipped model for ``--config``'s [model] (without one: the design model).

    KpnError (one line) when no shipped model has that [model], or none is installed.
    """
    installed = [name for name in SHIPPED if (SHIPPED_DIR / name / RUN_CHECKPOINT).is_file()]
    if not installed:
        raise KpnError(f"{SHIPPED_DIR}: no shipped weights here: give --weights")
    if config_path is None:
        if SHIPPED[0] not in installed:
            raise KpnError(f"{SHIPPED_DIR / SHIPPED[0]}: the shipped design model is missing")
        return SHIPPED_DIR / SHIPPED[0]
    wanted = load_config(config_path).model
    for name in installed:
        if load_config(SHIPPED_DIR / name / RUN_CONFIG).model == wanted:
            return SHIPPED_DIR / name
    raise KpnError(
        f"{config_path}: no shipped weights have its [model] (shipped: "
        f"{', '.join(installed)} in {SHIPPED_DIR}): give --weights"
    )


# --- denoising ---------------------------------------------------------------------------
@dataclass
class Denoiser:
    """The network, switched for inference: ``denoiser(image, a, b) -> image``.

    ``precision`` (:func:`inference_precision`) sets the model's precision switch:
    ``fp32``, ``bf16`` (the hidden layers' products in bfloat16) or ``vkdt-f16``. ``tile``
    0 runs :func:`kpn.model.kpn_forward` on the whole image; otherwise
    :func:`kpn.tiling.tiled_forward` (the same result, in bounded memory). ``sure``: the
    output blended towards the input by :func:`kpn.sure.sure_blend` (the network runs
    twice), in windows of side ``sure_window``.
    """

    weights: tuple[Tensor, ...]
    config: ModelConfig
    levels: int
    tile: int
    device: torch.device
    sure: bool = True
    sure_window: int = 33

    @classmethod
    def build(
        cls,
        model: KPN,
        infer: InferConfig,
        *,
        precision: str | None = None,
        tile: int | None = None,
        device: str = "cpu",
        vkdt_matmul: str | None = None,
        sure: bool | None = None,
    ) -> Denoiser:
        """A denoiser of ``model`` with ``infer``'s settings; arguments override them.

        ``vkdt_matmul`` (``--vkdt-matmul``): vkdt's matrix path under the ``vkdt-f16``
        precision, by default the model's (``coopmat`` when the model is not vkdt-f16).
        """
        chosen = infer.precision if precision is None else precision
        tile = infer.tile if tile is None else tile
        if tile != 0 and tile < MIN_TILE:
            raise KpnError(f"--tile {tile}: must be 0 (untiled) or >= {MIN_TILE}")
        torch_device = _device(device)
        model_precision = inference_precision(chosen, model.config.precision, torch_device)
        if vkdt_matmul is not None and vkdt_matmul not in VKDT_MATMULS:
            raise KpnError(f"vkdt matmul {vkdt_matmul!r}: expected one of {list(VKDT_MATMULS)}")
        if vkdt_matmul is not None and model_precision != "vkdt-f16":
            raise KpnError(
                f"--vkdt-matmul {vkdt_matmul}: vkdt's matrix paths are float16 arithmetic, "
                f"this run computes in {model_precision} (add --precision vkdt-f16)"
            )
        if vkdt_matmul is None:
            own = model.config.vkdt_matmul
            vkdt_matmul = own if model_precision == "vkdt-f16" else "coopmat"
        config = dataclasses.replace(
            model.config, precision=model_precision, vkdt_matmul=vkdt_matmul
        )
        levels = infer.levels or model.config.levels
        weights = tuple(w.detach().to(torch_device) for w in model.mlp.weights)
        sure = infer.sure if sure is None else sure
        return cls(weights, config, levels, tile, torch_device, sure, infer.sure_window)

    def tiles(self, height: int, width: int) -> int:
        """Tiles an image of this size takes, each pass of the network (1: untiled)."""
        passes = 2 if self.sure else 1
        if self.tile == 0:
            return passes
        return passes * plan_tiles(height, width, self.config, self.levels, self.tile).tiles

    def __call__(
        self,
        image: np.ndarray,
        a: float,
        b: float,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Denoise a linear ``[H,W,3]`` float32 image with profile (a, b): a new array."""
        if not self.sure:
            return self.network(image, a, b, progress)
        return sure_blend(
            lambda noisy: self.network(noisy, a, b, progress), image, a, b, self.sure_window
        )

    def network(
        self,
        image: np.ndarray,
        a: float,
        b: float,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """The network alone on a linear ``[H,W,3]`` float32 image: a new array."""
        noisy = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).to(self.device)
        noise_ab = torch.tensor([[a, b]], dtype=torch.float32, device=self.device)
        out = np.empty_like(image, dtype=np.float32)
        on_cpu = self.device.type == "cpu"
        target = torch.from_numpy(out).permute(2, 0, 1).unsqueeze(0) if on_cpu else None
        with torch.no_grad():
            if self.tile == 0:
                result = kpn_forward(
                    noisy.contiguous(), noise_ab, self.weights, self.config, self.levels
                ).output
                if progress is not None:
                    progress(1)
            else:
                result = tiled_forward(
                    noisy,
                    noise_ab,
                    self.weights,
                    self.config,
                    self.levels,
                    self.tile,
                    out=target,
                    progress=progress,
                )
        if result is not target:
            out[...] = result[0].permute(1, 2, 0).float().cpu().numpy()
        return out


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices in hardware (AVX-512 BF16 or AMX on
    a CPU, compute capability 8 on CUDA): elsewhere bfloat16 is emulated, and slower."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if not torch.backends.mkldnn.is_available():
        return False
    try:  # oneDNN's own check (a private op): absent from some torch builds
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def inference_precision(chosen: str, model_precision: str, device: torch.device) -> str:
    """The model precision to denoise with for ``--precision`` / ``infer.precision``.

    ``model``: the model's own. ``auto`` (the default): the model's own, but a float32
    model runs ``bf16`` where the device has native bfloat16 (:func:`native_bf16`): the
    output changes by at most 0.002 dB PSNR on the benchmark photos at every noise
    level, for 1.2 to 1.4 times the speed at 1 Mpx (``benchmarks/speed.py``; README, Speed).
    ``fp32``, ``bf16`` and ``vkdt-f16`` as named.
    """
    if chosen not in ("auto", "model", "fp32", "bf16", "vkdt-f16"):
        raise KpnError(f"precision {chosen!r}: expected auto, model, fp32, bf16 or vkdt-f16")
    if chosen == "model":
        return model_precision
    if chosen == "auto":
        return "bf16" if model_precision == "fp32" and native_bf16(device) else model_precision
    return chosen


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise KpnError("--device cuda: CUDA is not available here (torch sees no GPU)")
    if name not in ("cpu", "cuda"):
        raise KpnError(f"--device {name!r}: expected cpu or cuda")
    return torch.device(name)


# --- noise profile -----------------------------------------------------------------------
@dataclass(frozen=True)
class NoiseOptions:
    """The noise profile sources a run was given, tried in this order."""

    explicit: tuple[float, float] | None = None
    nprof: NoiseProfile | None = None
    nprof_path: str = ""
    nprof_dir: str | None = None
    auto: bool = False
    unmarked: str | None = None  # scale of .nprof files without a scale line

    @property
    def any(self) -> bool:
        return bool(self.explicit or self.nprof or self.nprof_dir or self.auto)


@dataclass(frozen=True)
class Profile:
    """The (a, b) used for a file, on the 0..65535 scale, and where it came from."""

    a: float
    b: float
    source: str


def _raw_range(raw: RawImage | None) -> float | None:
    return None if raw is None else raw.white[0] - raw.black[0]


def resolve_profile(
    options: NoiseOptions, path: Path, image: np.ndarray, raw: RawImage | None
) -> Profile:
    """The noise profile of one input: the first of the run's sources that applies."""
    if options.explicit is not None:
        return Profile(*options.explicit, "--noise-a/--noise-b")
    if options.nprof is not None:
        try:
            profile = options.nprof.converted("u16", raw_range=_raw_range(raw))
        except KpnError as err:
            raise KpnError(f"{path}: --nprof {options.nprof_path}: {err}") from None
        return Profile(profile.a, profile.b, f"--nprof {options.nprof_path}")
    skipped = ""
    if options.nprof_dir is not None:
        if raw is None:
            skipped = "--nprof-dir holds camera profiles, and this is not a camera raw file"
        elif raw.maker is None or raw.model is None or raw.iso is None:
            skipped = "the raw file does not name its maker, model and ISO"
        else:
            try:
                match = find_profile(
                    options.nprof_dir,
                    raw.maker,
                    raw.model,
                    raw.iso,
                    unmarked=options.unmarked,  # type: ignore[arg-type]
                    raw_range=_raw_range(raw),
                )
            except KpnError as err:
                if not options.auto:
                    raise
                skipped = str(err)
            else:
                sources = ", ".join(source.name for source in match.sources)
                how = f"{match.how} for ISO {raw.iso}"
                return Profile(match.profile.a, match.profile.b, f"{sources} ({how})")
    if options.auto:
        estimate = estimate_noise(image, str(path))
        note = f"; {skipped}" if skipped else ""
        return Profile(
            estimate.a,
            estimate.b,
            f"estimated from the image ({estimate.samples} smooth samples, "
            f"{estimate.level_sets} level sets{note})",
        )
    reason = f" ({skipped})" if skipped else ""
    raise KpnError(
        f"{path}: no noise profile{reason}: give --noise-a and --noise-b, --nprof, "
        "--nprof-dir or --noise auto"
    )


# --- files -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """One input and the output it goes to."""

    source: Path
    output: Path


def expand_inputs(arguments: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Files named by the arguments (files, folders, glob patterns), in order, without
    repeats; and one error line per argument that names nothing."""
    files: list[Path] = []
    errors: list[str] = []
    seen: set[str] = set()

    def add(path: Path) -> None:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            files.append(path)

    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = [p for p in sorted(path.iterdir()) if _is_image_file(p)]
            if not found:
                errors.append(f"{argument}: folder holds no image files")
            for item in found:
                add(item)
        elif path.exists() or not GLOB_CHARACTERS & set(argument):
            add(path)  # a missing file fails when it is read, naming itself
        else:
            matches = [Path(p) for p in sorted(glob.glob(argument)) if _is_image_file(Path(p))]
            if not matches:
                errors.append(f"{argument}: matches no image files")
            for item in matches:
                add(item)
    return files, errors


def _is_image_file(path: Path) -> bool:
    """A file kpn-infer reads, not hidden, and not one of its own outputs."""
    return (
        path.is_file()
        and path.suffix.lower() in INPUT_EXTENSIONS
        and not path.name.startswith(".")
        and SUFFIX + "." not in path.name
    )


def output_extension(source: Path, fmt: str) -> str:
    """The extension written for ``source`` in format ``fmt`` (pfm, png, tiff, same)."""
    suffix = source.suffix.lower()
    if fmt != "same":
        return FORMAT_EXTENSION[fmt]
    if suffix in RAW_EXTENSIONS:
        return ".pfm"
    return source.suffix


def plan_jobs(
    sources: Sequence[Path], fmt: str, output: str | None, out_dir: str | None
) -> tuple[list[Job], list[str]]:
    """Each input's output path; refusals (an output that is an input, or the output of
    another input) as one error line each."""
    jobs, errors = [], []
    inputs = {os.path.realpath(source): source for source in sources}
    taken: dict[str, Path] = {}
    for source in sources:
        if output is not None:
            target = Path(output)
        else:
            extension = output_extension(source, fmt)
            if out_dir is not None:
                target = Path(out_dir) / (source.stem + extension)
            else:
                target = source.with_name(source.stem + SUFFIX + extension)
        key = os.path.realpath(target)
        if key in inputs:
            errors.append(
                f"{source}: refused: the output {target} would overwrite the input "
                f"{inputs[key]} (choose -o or --out-dir)"
            )
        elif key in taken:
            errors.append(f"{source}: refused: {taken[key]} is already written to {target}")
        else:
            taken[key] = source
            jobs.append(Job(source, target))
    return jobs, errors


@dataclass(frozen=True)
class Source:
    """An input image: linear float32 ``[H,W,3]``, its raw metadata, its stored bits."""

    image: np.ndarray
    raw: RawImage | None
    bits: int  # 8, 16 (integer samples) or 32 (float)


def read_source(path: Path) -> Source:
    """Read an input; NaN or Inf pixels are refused."""
    if path.suffix.lower() in RAW_EXTENSIONS:
        raw = read_raw(path, "demosaic")
        check_finite(raw.image, path)
        return Source(raw.image, raw, 16)
    image = read_any(path, require_finite=True)
    return Source(image, None, _stored_bits(path))


def _stored_bits(path: Path) -> int:
    """Bits per sample of a file read_any has just read: 8, 16, or 32 for float."""
    suffix = path.suffix.lower()
    if suffix == ".pfm":
        return 32
    if suffix in (".jpg", ".jpeg"):
        return 8
    if suffix == ".png":
        with open(path, "rb") as file:  # IHDR's bit depth: byte 24 of every PNG
            header = file.read(25)
        return 16 if len(header) == 25 and header[24] == 16 else 8
    with tifffile.TiffFile(path) as tif:
        dtype = tif.pages.first.dtype
    if dtype is not None and dtype.kind == "f":
        return 32
    return 16 if dtype is not None and dtype.itemsize >= 2 else 8


def output_bits(extension: str, source_bits: int) -> int:
    """Bits written: PFM is float; JPEG 8; PNG 8 or 16 as the input (16 from float);
    TIFF as the input (float stays float)."""
    extension = extension.lower()
    if extension == ".pfm":
        return 32
    if extension in (".jpg", ".jpeg"):
        return 8
    if extension == ".png":
        return 8 if source_bits == 8 else 16
    return source_bits


ENCODE_ROWS = 256  # rows encoded to sRGB codes at a time


def write_output(path: Path, image: np.ndarray, bits: int) -> None:
    """Write a linear ``[H,W,3]`` image as PFM, float TIFF, or 8/16-bit sRGB PNG, JPEG or
    TIFF, as :func:`kpn.io.write_image` writes them.

    The sRGB codes are computed ``ENCODE_ROWS`` rows at a time: ``write_image`` encodes
    through float64 copies of the whole image, about 2.3 GB more at 24 megapixels.
    """
    suffix = path.suffix.lower()
    if suffix == ".pfm":
        write_pfm(path, image)
        return
    if bits == 32 or suffix not in WRITABLE:  # float TIFF, or write_image's refusal
        write_image(path, image, bits=bits)
        return
    if not np.isfinite(image).all():
        raise KpnError(f"{path}: image has NaN or Inf, which {bits}-bit codes cannot hold")
    codes = np.empty(image.shape, dtype=np.uint8 if bits == 8 else np.uint16)
    for top in range(0, image.shape[0], ENCODE_ROWS):
        codes[top : top + ENCODE_ROWS] = encode_srgb(image[top : top + ENCODE_ROWS], bits)
    if suffix == ".png":
        atomic_write_bytes(path, imagecodecs.png_encode(codes))
    elif suffix in (".jpg", ".jpeg"):
        atomic_write_bytes(path, imagecodecs.jpeg8_encode(codes, level=JPEG_QUALITY))
    else:
        with atomic_output(path) as temp:
            tifffile.imwrite(temp, codes, photometric="rgb")


# --- command line ------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="kpn-infer",
        description=__doc__.split("\n\n")[0],  # its markup removed by Parser
        epilog="Exit status: 0 all written, 1 some inputs failed, 2 usage or weights errors.",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, globs")
    parser.add_argument(
        "--weights",
        help="run directory, checkpoint (.pt) or vkdt .lut; default: the shipped model that "
        "fits --config, without --config the shipped design model (weights/design)",
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
        "the network does harm (the network runs twice); default: the config's infer.sure, "
        "on but in vkdt's presets",
    )
    parser.add_argument("--reference", help="clean image (one input) or folder of them: print PSNR")
    return parser


def _check_noise_value(name: str, value: float) -> None:
    """KpnError unless ``value`` is a noise parameter the model can compute with.

    The model runs in float32: a Python float above its range (1e39) would become inf
    there and fail every file, so it is a usage error like nan.
    """
    if not math.isfinite(value) or value < 0 or value > FLOAT32_MAX:
        raise KpnError(
            f"{name} {value!r}: a noise parameter is a finite number >= 0 "
            f"and at most {FLOAT32_MAX:.4g} (float32)"
        )


def _noise_options(args: argparse.Namespace, infer: InferConfig) -> NoiseOptions:
    """The run's noise sources, checked up front (usage errors)."""
    if (args.noise_a is None) != (args.noise_b is None):
        raise KpnError("--noise-a and --noise-b go together")
    unmarked = None if infer.nprof_scale == "refuse" else infer.nprof_scale
    explicit = None
    if args.noise_a is not None:
        for name, value in (("--noise-a", args.noise_a), ("--noise-b", args.noise_b)):
            _check_noise_value(name, value)
        explicit = (float(args.noise_a), float(args.noise_b))
    nprof = read_nprof(args.nprof, unmarked=unmarked) if args.nprof else None  # type: ignore[arg-type]
    if args.nprof_dir is not None and not Path(args.nprof_dir).is_dir():
        raise KpnError(f"--nprof-dir {args.nprof_dir}: no such directory")
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
        try:
            Path(args.out_dir).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise KpnError(f"--out-dir {args.out_dir}: cannot create ({err.strerror})") from None
    if args.reference is not None and count > 1 and not Path(args.reference).is_dir():
        raise KpnError(f"--reference {args.reference}: a file fits one input; give a folder")


def read_reference(reference: Path, source: Path, image: np.ndarray) -> np.ndarray:
    """The clean image to measure ``image`` (read from ``source``) against, same size."""
    clean = read_any(reference, require_finite=True)
    if clean.shape != image.shape:
        raise KpnError(
            f"{source}: reference {reference} is {clean.shape[1]} x {clean.shape[0]}, "
            f"the input {image.shape[1]} x {image.shape[0]}"
        )
    return clean


def process(
    job: Job,
    denoiser: Denoiser,
    noise: NoiseOptions,
    reference: Path | None,
    show_progress: bool,
) -> None:
    """Denoise one file and write its output; a failure is one KpnError naming the file."""
    source = read_source(job.source)
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
        del source  # the input's memory is free while the output is encoded
        write_output(temp, denoised, bits)
    seconds = time.perf_counter() - start
    say(f"{job.source} -> {job.output} ({width} x {height}, {seconds:.1f} s)")
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
    message = str(error).strip().splitlines()[0] if str(error).strip() else "failed"
    return message if str(source) in message else f"{source}: {message}"


def _files(jobs: Sequence[Job], show: bool) -> Iterator[Job]:
    if len(jobs) < 2:
        yield from jobs
        return
    yield from tqdm.tqdm(jobs, desc="files", unit="file", disable=not show)


def main(argv: Sequence[str] | None = None) -> int:
    """Run kpn-infer; returns the exit status (see the module docstring)."""
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
        )
        sources, failures = expand_inputs(args.inputs)
        _check_output_arguments(args, len(sources))
    except KpnError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    arithmetic = denoiser.config.precision
    if arithmetic == "vkdt-f16":
        arithmetic += f" ({denoiser.config.vkdt_matmul})"
    print(
        f"{'shipped ' if args.weights is None else ''}weights {loaded.description}; "
        f"{denoiser.levels} levels, {arithmetic}, tile {denoiser.tile or 'none'}, "
        + (f"SURE blend (window {denoiser.sure_window or 'image'})" if denoiser.sure else "no SURE")
    )
    jobs, refused = plan_jobs(sources, args.format, args.output, args.out_dir)
    failures += refused
    for line in failures:
        print(f"error: {line}", file=sys.stderr)
    show = sys.stderr.isatty()
    for job in _files(jobs, show):
        reference = _reference_for(args.reference, job.source)
        try:
            process(job, denoiser, noise, reference, show)
        except KpnError as error:
            line = _failure_line(error, job.source)
        except (MemoryError, torch.OutOfMemoryError):
            line = f"{job.source}: out of memory (try a smaller --tile)"
        else:
            continue
        say(f"error: {line}", sys.stderr)
        failures.append(line)
    return 1 if failures else 0


def run() -> None:
    """Console script entry point."""
    sys.exit(main())
