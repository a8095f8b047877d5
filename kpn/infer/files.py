"""Input and output files of inference: which files the arguments name, where each
output goes, reading an input and writing its output in the input's bit depth and
channels (grey stays grey, an alpha plane passes through untouched)."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kpn.errors import KpnError, mention
from kpn.io.images import (
    READABLE_EXTENSIONS,
    UNASSOCIATED_ALPHA,
    alpha_samples,
    as_rgb,
    check_writable,
    encode_srgb,
    read_any,
    read_image_planes,
    with_alpha,
    write_image,
    write_samples,
)
from kpn.io.pfm import PFM_EXTENSIONS, read_pfm, write_pfm
from kpn.io.raw import RAW_EXTENSIONS, RawImage, read_raw
from kpn.io.shared import check_finite

SUFFIX = ".denoised"  # default output: NAME.denoised.EXT beside the input
FORMAT_EXTENSION = {"pfm": ".pfm", "png": ".png", "tiff": ".tif"}
WRITABLE = frozenset({".pfm", ".png", ".jpg", ".jpeg", ".tif", ".tiff"})
GLOB_CHARACTERS = frozenset("*?[")


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
        and path.suffix.lower() in READABLE_EXTENSIONS
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
                f"{inputs[key]} (choose {mention('output')} or {mention('out_dir')})"
            )
        elif key in taken:
            errors.append(f"{source}: refused: {taken[key]} is already written to {target}")
        else:
            taken[key] = source
            jobs.append(Job(source, target))
    return jobs, errors


@dataclass(frozen=True)
class Kept:
    """What of an input the network does not see and its output gets back: a grey file
    (the network denoises it as three equal channels, the output is grey again) and an
    alpha plane (the stored samples, written back untouched; see kpn.io.images)."""

    gray: bool = False
    alpha: np.ndarray | None = None
    alpha_kind: int = UNASSOCIATED_ALPHA

    def note(self) -> str:
        """What kpn-infer says of the file: ``grayscale, denoised as gray``, ``alpha kept
        unchanged``, both, or nothing for RGB."""
        notes = ["grayscale, denoised as gray"] if self.gray else []
        if self.alpha is not None:
            notes.append("alpha kept unchanged")
        return "; ".join(notes)


@dataclass(frozen=True)
class Source:
    """An input image: linear float32 ``[H,W,3]`` (a grey file's channel three times), its
    raw metadata, its stored bits, and what its output keeps of it."""

    image: np.ndarray
    raw: RawImage | None
    bits: int  # 8, 16 (integer samples) or 32 (float)
    kept: Kept = Kept()


NO_ALPHA = {".pfm": "PFM", ".jpg": "JPEG", ".jpeg": "JPEG"}  # formats without an alpha channel


def read_source(path: Path, output: Path | None = None) -> Source:
    """Read an input; NaN or Inf pixels are refused, and so is an alpha channel that
    ``output``'s format cannot hold (before any work)."""
    suffix = path.suffix.lower()
    if suffix in RAW_EXTENSIONS:
        raw = read_raw(path, "demosaic")
        check_finite(raw.image, path)
        return Source(raw.image, raw, 16)
    if suffix in PFM_EXTENSIONS:
        image = read_pfm(path, require_finite=True)
        return Source(as_rgb(image), None, 32, Kept(gray=image.ndim == 2))
    planes = read_image_planes(path, require_finite=True)
    kept = Kept(planes.color.ndim == 2, planes.alpha, planes.alpha_kind)
    if kept.alpha is not None and output is not None and output.suffix.lower() in NO_ALPHA:
        raise KpnError(
            f"{path}: has an alpha channel, which {NO_ALPHA[output.suffix.lower()]} "
            f"({output}) cannot hold: write PNG or TIFF"
        )
    return Source(as_rgb(planes.color), None, planes.bits, kept)


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


def gray_of(image: np.ndarray) -> np.ndarray:
    """A grey input's denoised value: the mean of the three channels, in float64 (exact
    when they are equal, as the network's shared kernels leave them), ``ENCODE_ROWS``
    rows at a time. ``[H,W,3] -> [H,W]`` float32
    """
    gray = np.empty(image.shape[:2], dtype=np.float32)
    for top in range(0, image.shape[0], ENCODE_ROWS):
        gray[top : top + ENCODE_ROWS] = image[top : top + ENCODE_ROWS].mean(2, dtype=np.float64)
    return gray


def write_output(path: Path, image: np.ndarray, bits: int, kept: Kept = Kept()) -> None:
    """Write a linear ``[H,W,3]`` image as PFM, float TIFF, or 8/16-bit sRGB PNG, JPEG or
    TIFF, as :func:`kpn.io.images.write_image` writes them; grey (:func:`gray_of`) and
    with its alpha plane as ``kept`` says.

    The sRGB codes are computed ``ENCODE_ROWS`` rows at a time: ``write_image`` encodes
    through float64 copies of the whole image, about 2.3 GB more at 24 megapixels.
    """
    suffix = path.suffix.lower()
    color = gray_of(image) if kept.gray else image
    if suffix in NO_ALPHA and kept.alpha is not None:
        raise KpnError(f"{path}: {NO_ALPHA[suffix]} holds no alpha channel (write PNG or TIFF)")
    if suffix == ".pfm":
        write_pfm(path, color)
        return
    if bits == 32 or suffix not in WRITABLE:  # float TIFF, or write_image's refusal
        write_image(path, color, bits=bits, alpha=kept.alpha, alpha_kind=kept.alpha_kind)
        return
    check_writable(path, bits)
    if not np.isfinite(color).all():
        raise KpnError(f"{path}: image has NaN or Inf, which {bits}-bit codes cannot hold")
    codes = np.empty(color.shape, dtype=np.uint8 if bits == 8 else np.uint16)
    for top in range(0, color.shape[0], ENCODE_ROWS):
        codes[top : top + ENCODE_ROWS] = encode_srgb(color[top : top + ENCODE_ROWS], bits)
    alpha = None if kept.alpha is None else alpha_samples(kept.alpha, bits)
    write_samples(path, with_alpha(codes, alpha), alpha_kind=kept.alpha_kind)


def read_reference(reference: Path, source: Path, image: np.ndarray) -> np.ndarray:
    """The clean image to measure ``image`` (read from ``source``) against, same size."""
    clean = read_any(reference, require_finite=True)
    if clean.shape != image.shape:
        raise KpnError(
            f"{source}: reference {reference} is {clean.shape[1]} x {clean.shape[0]}, "
            f"the input {image.shape[1]} x {image.shape[0]}"
        )
    return clean
