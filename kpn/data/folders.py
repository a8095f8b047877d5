"""Training images read from folders (``data.source`` ``clean`` and ``pairs``) and the
noise profiles of ``data.nprof_dir``.

- ``clean``: a folder of clean images (PFM, PNG/JPEG/TIFF, camera raw); the input is the
  reference, noisy in the noise modes.
- ``pairs``: folders of noisy and reference images matched by file name (without the
  extension). A noisy file's profile: the ``.nprof`` of its camera and ISO (from the file's
  tags) in ``data.nprof_dir``, or without that folder in the noisy file's own folder;
  for a file without camera tags or with no profile folder, ``data.noise_a``/``noise_b``.

Files are read, checked and held in memory when the dataset is made, so a bad file stops
the run before the first step, with one line naming it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from kpn.config import DataConfig
from kpn.data.sources import ImagePair
from kpn.errors import KpnError, require_folder
from kpn.io.images import IMAGE_EXTENSIONS, READABLE_EXTENSIONS, read_any
from kpn.io.nprof import find_profile, read_nprof
from kpn.io.pfm import PFM_EXTENSIONS
from kpn.io.raw import RAW_EXTENSIONS, camera_tags, read_raw
from kpn.io.shared import check_finite

PHOTOS_HINT = "`python -m kpn photos DIR` assembles real photographs to train on"


def image_files(folder: Path, key: str) -> list[Path]:
    """The readable images in ``folder``, sorted by name; hidden files and others skipped."""
    require_folder(folder, f"data.{key}", PHOTOS_HINT if key.endswith("reference_dir") else "")
    files = sorted(
        path
        for path in folder.iterdir()
        if path.is_file()
        and not path.name.startswith(".")
        and path.suffix.lower() in READABLE_EXTENSIONS
    )
    if not files:
        kinds = ", ".join(sorted(PFM_EXTENSIONS | IMAGE_EXTENSIONS))
        raise KpnError(f"{folder}: no images ({kinds} or camera raw) (data.{key})")
    return files


def as_tensor(image: np.ndarray) -> Tensor:
    """``[H,W,3]`` numpy -> ``[3,H,W]`` float32 torch, contiguous."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))


def check_size(image: Tensor, path: Path, tile: int, tile_key: str) -> None:
    height, width = image.shape[-2:]
    if height < tile or width < tile:
        raise KpnError(
            f"{path}: {width}x{height} is smaller than the {tile}x{tile} tile (data.{tile_key})"
        )


def read_reference(path: Path, config: DataConfig, tile: int, tile_key: str) -> Tensor:
    """A clean image ``[3,H,W]``; KpnError naming it if unreadable, not finite or small."""
    image = as_tensor(read_any(path, raw_mode=config.raw_mode, require_finite=True))
    check_size(image, path, tile, tile_key)
    return image


@dataclass(frozen=True)
class NoisyFile:
    """A noisy image ``[3,H,W]`` with what its profile lookup needs."""

    image: Tensor
    maker: str | None
    model: str | None
    iso: int | None
    raw_range: float | None  # white - black in raw units, for raw-scale profiles


def read_noisy(path: Path, config: DataConfig) -> NoisyFile:
    """A noisy image and its camera; KpnError naming it if unreadable or not finite."""
    if path.suffix.lower() in RAW_EXTENSIONS:
        raw = read_raw(path, config.raw_mode)
        check_finite(raw.image, path)
        raw_range = float(np.mean(raw.white) - np.mean(raw.black))
        return NoisyFile(as_tensor(raw.image), raw.maker, raw.model, raw.iso, raw_range)
    image = read_any(path, raw_mode=config.raw_mode, require_finite=True)
    maker, model, iso = camera_tags(path)
    return NoisyFile(as_tensor(image), maker, model, iso, None)


def unmarked_scale(config: DataConfig) -> str | None:
    """The scale assumed for .nprof files without a scale line; None: refuse them."""
    return None if config.nprof_scale == "refuse" else config.nprof_scale


def noisy_profile(path: Path, noisy: NoisyFile, config: DataConfig) -> Tensor:
    """The profile ``[2]`` (0..65535 scale) of a noisy file (module docstring's rule)."""
    folder = Path(config.nprof_dir) if config.nprof_dir else path.parent
    camera = (noisy.maker, noisy.model, noisy.iso)
    if all(camera) and any(folder.glob("*.nprof")):
        try:
            match = find_profile(
                folder,
                noisy.maker,
                noisy.model,
                noisy.iso,
                unmarked=unmarked_scale(config),
                raw_range=noisy.raw_range,
            )
        except KpnError as err:
            raise KpnError(f"{path}: {err}") from None
        return torch.tensor([match.profile.a, match.profile.b], dtype=torch.float32)
    if config.noise_a or config.noise_b:
        return torch.tensor([config.noise_a, config.noise_b], dtype=torch.float32)
    why = "no camera tags" if not all(camera) else f"no .nprof file in {folder}"
    raise KpnError(
        f"{path}: no noise profile ({why}): give data.nprof_dir with its camera's "
        "profile, or data.noise_a and data.noise_b"
    )


def by_name(files: Sequence[Path]) -> dict[str, Path]:
    """Files by name without extension; two files of one name are an error."""
    named: dict[str, Path] = {}
    for path in files:
        other = named.setdefault(path.stem, path)
        if other != path:
            raise KpnError(
                f"{path.parent}: {other.name} and {path.name} have the same name (pairs are "
                "matched by name without extension)"
            )
    return named


def load_clean(
    reference_dir: Path, config: DataConfig, tile: int, tile_key: str, key: str
) -> list[ImagePair]:
    """Every usable image of a folder of clean photos; a corrupt or too small one is
    skipped with a warning naming it (one bad file in a folder of hundreds should not
    stop a run), and a folder with none left is a one-line error."""
    pairs, skipped = [], 0
    for path in image_files(reference_dir, key):
        try:
            pairs.append(ImagePair(read_reference(path, config, tile, tile_key)))
        except KpnError as err:
            print(f"warning: skipped {err}", file=sys.stderr)
            skipped += 1
    if not pairs:
        raise KpnError(
            f"{reference_dir}: none of its {skipped} images is usable (data.{key}; "
            "the warnings above say why)"
        )
    if skipped:
        total = skipped + len(pairs)
        print(f"warning: {reference_dir}: skipped {skipped} of {total} images", file=sys.stderr)
    return pairs


def load_pairs(
    reference_dir: Path, noisy_dir: Path, config: DataConfig, tile: int, tile_key: str
) -> list[ImagePair]:
    references = by_name(image_files(reference_dir, "reference_dir"))
    noisies = by_name(image_files(noisy_dir, "noisy_dir"))
    for name, path in references.items():
        if name not in noisies:
            raise KpnError(f"{path}: no noisy file of the same name in {noisy_dir}")
    for name, path in noisies.items():
        if name not in references:
            raise KpnError(f"{path}: no reference file of the same name in {reference_dir}")
    # the noise modes replace the noisy input by synthetic noise (vkdt): the noisy files are
    # checked but neither kept nor profiled
    real_input = config.generate not in (2, 4)
    pairs = []
    for name, reference_path in references.items():
        noisy_path = noisies[name]
        reference = read_reference(reference_path, config, tile, tile_key)
        noisy = read_noisy(noisy_path, config)
        if noisy.image.shape != reference.shape:
            size = "x".join(str(n) for n in noisy.image.shape[:0:-1])
            expected = "x".join(str(n) for n in reference.shape[:0:-1])
            raise KpnError(
                f"{noisy_path}: {size} does not match its reference {reference_path} ({expected})"
            )
        if real_input:
            profile = noisy_profile(noisy_path, noisy, config)
            pairs.append(ImagePair(reference, noisy.image, profile))
        else:
            pairs.append(ImagePair(reference))
    return pairs


def camera_profiles(config: DataConfig) -> Tensor:
    """``[K,2]`` every profile in ``data.nprof_dir`` (0..65535 scale), for the cameras law."""
    folder = require_folder(config.nprof_dir, "data.nprof_dir")
    paths = sorted(folder.glob("*.nprof"))
    if not paths:
        raise KpnError(f"{folder}: no .nprof files (data.nprof_dir, for data.noise = 'cameras')")
    profiles = []
    for path in paths:
        profile = read_nprof(path, unmarked=unmarked_scale(config))
        try:
            profile = profile.converted("u16")
        except KpnError as err:
            raise KpnError(f"{path}: {err}") from None
        profiles.append((profile.a, profile.b))
    return torch.tensor(profiles, dtype=torch.float32)
