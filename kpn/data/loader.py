"""Training data: datasets chosen by ``data.source``, the loader, the fixed validation set.

Sources:

- ``deadleaves`` (default): procedural dead-leaves references (:mod:`kpn.data.deadleaves`),
  made on the fly; nothing on disk.
- ``clean``: a folder of clean images (PFM, PNG/JPEG/TIFF, camera raw); the input is the
  reference, noisy in the noise modes.
- ``pairs``: folders of noisy and reference images matched by file name (without the
  extension). A noisy file's profile: the ``.nprof`` of its camera and ISO (from the file's
  tags) in ``data.nprof_dir``, or without that folder in the noisy file's own folder;
  for a file without camera tags or with no profile folder, ``data.noise_a``/``noise_b``.

Every tile then goes through cnngenin's synthesis (:mod:`kpn.data.synthesis`). Files are read,
checked and held in memory when the dataset is made, so a bad file stops the run before
the first step, with one line naming it.

Sample i of a stream is a pure function of (seed, stream, i): its generator is seeded from
those three numbers alone. A batch is samples ``[first, first + B)``, whichever process
makes it, so the number of loader workers does not change the data, and resuming is
starting the stream at the number of samples already seen.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from kpn.config import DataConfig, TileOffset
from kpn.data.deadleaves import draw_scenes, render_scenes
from kpn.data.synthesis import Sample, draw_offset, synthesize, uniforms
from kpn.errors import KpnError
from kpn.io.images import (
    IMAGE_EXTENSIONS,
    PFM_EXTENSIONS,
    RAW_EXTENSIONS,
    camera_tags,
    check_finite,
    read_any,
    read_raw,
)
from kpn.io.nprof import find_profile, read_nprof
from kpn.model.features import luminance

TRAINING, VALIDATION = 0, 1  # stream numbers: the two never share a tile
READABLE = PFM_EXTENSIONS | IMAGE_EXTENSIONS | RAW_EXTENSIONS


@dataclass(frozen=True)
class TrainingBatch:
    """A batch of tiles: ``noisy [B,3,T,T]``, ``reference [B,3,T,T]``, ``noise_ab [B,2]``
    (0..65535 scale), float32."""

    noisy: Tensor
    reference: Tensor
    noise_ab: Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TrainingBatch:
        return TrainingBatch(*(t.to(device, non_blocking=non_blocking) for t in self._tensors()))

    def pin_memory(self) -> TrainingBatch:
        """Page-locked copies, for asynchronous copies to the GPU (the loader calls this)."""
        return TrainingBatch(*(t.pin_memory() for t in self._tensors()))

    def _tensors(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.noisy, self.reference, self.noise_ab


def collate(samples: Sequence[Sample]) -> TrainingBatch:
    """Stack samples into a batch."""
    return TrainingBatch(
        torch.stack([s.noisy for s in samples]),
        torch.stack([s.reference for s in samples]),
        torch.stack([s.noise_ab for s in samples]),
    )


def sample_generator(seed: int, stream: int, index: int) -> torch.Generator:
    """The generator of sample ``index`` of ``stream``: seeded from the three numbers alone.

    numpy's SeedSequence hashes them, so neighbouring indices give unrelated streams.
    """
    entropy = [seed % 2**64, stream, index]
    state = np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


# ------------------------------------------------------------------------------------------
# Sources: the images tiles are cut from


@dataclass(frozen=True)
class ImagePair:
    """A reference ``[3,H,W]``, the real noisy image ``[3,H,W]`` (None: the reference is
    the input) and its profile ``[2]`` (None when not needed), float32."""

    reference: Tensor
    noisy: Tensor | None = None
    noise_ab: Tensor | None = None
    offset: TileOffset | None = None  # None: the source's


class DeadLeavesSource:
    """A fresh dead-leaves image per tile, exactly the tile's size."""

    # a dead-leaves image is already a random window of a stationary picture: a random
    # offset would only add mirrored seams
    offset: TileOffset = "inside"

    def images(self, generators: Sequence[torch.Generator], tile: int) -> list[ImagePair]:
        rendered = render_scenes(draw_scenes(tile, tile, generators), tile, tile)
        return [ImagePair(image) for image in rendered]


class FileSource:
    """Images read from files; each tile picks one, uniformly.

    ``candidates`` > 1 (clean references only): the tile is the most textured of that many
    tile-sized crops at random places in the picked image, so that a set of photos with
    soft backgrounds and skies does not teach mostly smoothing.
    """

    def __init__(self, pairs: Sequence[ImagePair], offset: TileOffset, candidates: int = 1) -> None:
        self.pairs = list(pairs)
        self.offset = offset
        self.candidates = candidates

    def images(self, generators: Sequence[torch.Generator], tile: int) -> list[ImagePair]:
        count = len(self.pairs)
        picks = [uniforms(1, g)[0] for g in generators]
        chosen = [self.pairs[min(int(count * u), count - 1)] for u in picks]
        if self.candidates == 1:
            return chosen
        return [
            textured_crop(pair, tile, self.candidates, g)
            for pair, g in zip(chosen, generators, strict=True)
        ]


def texture(crop: Tensor) -> float:
    """Mean absolute luminance gradient over the mean luminance: how much a crop ``[3,T,T]``
    shows, the same at every exposure."""
    lum = luminance(crop[None])[0]
    gradient = (lum[:, 1:] - lum[:, :-1]).abs().mean() + (lum[1:] - lum[:-1]).abs().mean()
    return float(gradient / (lum.mean().abs() + 1e-3))


def textured_crop(
    pair: ImagePair, tile: int, candidates: int, generator: torch.Generator
) -> ImagePair:
    """The most textured of ``candidates`` random tile-sized crops inside ``pair``'s image,
    as a pair of exactly the tile's size (synthesis then adds flips, exposure and noise)."""
    height, width = pair.reference.shape[-2:]
    u = uniforms(2 * candidates, generator)
    crops = []
    for k in range(candidates):
        top = draw_offset(height, tile, "inside", u[2 * k])
        left = draw_offset(width, tile, "inside", u[2 * k + 1])
        crops.append(pair.reference[:, top : top + tile, left : left + tile])
    return ImagePair(max(crops, key=texture), offset="inside")


class MixedSource:
    """Dead leaves for a fraction of the tiles, files for the rest, chosen per tile.

    Photographs teach texture that dead leaves lack; dead leaves keep the hard edges and
    flat areas a few dozen photos have too few of.
    """

    def __init__(self, files: FileSource, deadleaves_fraction: float) -> None:
        self.files = files
        self.fraction = deadleaves_fraction
        self.offset = files.offset

    def images(self, generators: Sequence[torch.Generator], tile: int) -> list[ImagePair]:
        leaves = [uniforms(1, g)[0] < self.fraction for g in generators]
        chosen = list(zip(generators, leaves, strict=True))
        drawn = DeadLeavesSource().images([g for g, x in chosen if x], tile) if any(leaves) else []
        read = self.files.images([g for g, x in chosen if not x], tile) if not all(leaves) else []
        drawn_pairs = iter(ImagePair(p.reference, offset=DeadLeavesSource.offset) for p in drawn)
        read_pairs = iter(read)
        return [next(drawn_pairs) if x else next(read_pairs) for x in leaves]


TileSource = DeadLeavesSource | FileSource | MixedSource


class TileDataset(Dataset[Sample]):
    """The endless stream of training tiles; item i is a pure function of (seed, stream, i).

    ``__getitems__`` makes a whole batch at once (the loader calls it), which renders
    dead leaves batched; every item is the same as when made alone.
    """

    def __init__(
        self,
        source: TileSource,
        config: DataConfig,
        tile: int,
        seed: int,
        stream: int = TRAINING,
        cameras: Tensor | None = None,
    ) -> None:
        self.source = source
        self.config = config
        self.tile = tile
        self.seed = seed
        self.stream = stream
        self.cameras = cameras

    def __getitem__(self, index: int) -> Sample:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[Sample]:
        generators = [sample_generator(self.seed, self.stream, i) for i in indices]
        pairs = self.source.images(generators, self.tile)
        return [
            synthesize(
                pair.reference,
                pair.noisy,
                pair.noise_ab,
                self.config,
                self.tile,
                pair.offset or self.source.offset,
                self.cameras,
                generator,
            )
            for pair, generator in zip(pairs, generators, strict=True)
        ]


# ------------------------------------------------------------------------------------------
# Files


def image_files(folder: Path, key: str) -> list[Path]:
    """The readable images in ``folder``, sorted by name; hidden files and others skipped."""
    if not folder.is_dir():
        hint = ""
        if key.endswith("reference_dir"):
            hint = "; `python -m kpn photos DIR` assembles real photographs to train on"
        raise KpnError(f"{folder}: no such folder (data.{key}){hint}")
    files = sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in READABLE
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
    folder = Path(config.nprof_dir)
    if not folder.is_dir():
        raise KpnError(f"{folder}: no such folder (data.nprof_dir)")
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


# ------------------------------------------------------------------------------------------
# Datasets and the loader


def make_dataset(
    config: DataConfig,
    seed: int,
    *,
    stream: int = TRAINING,
    tile: int | None = None,
    reference_dir: str | None = None,
    noisy_dir: str | None = None,
) -> TileDataset:
    """The tile stream of ``config.source``; files are read and checked here.

    ``tile`` (default ``config.tile``) and the folders (default the config's) let the
    validation set use its own. Raises KpnError naming the folder or file at fault.
    """
    tile = config.tile if tile is None else tile
    tile_key = "validation_tile" if stream == VALIDATION else "tile"
    references = Path(reference_dir or config.reference_dir)
    cameras = camera_profiles(config) if config.noise == "cameras" else None
    if config.nprof_dir and not Path(config.nprof_dir).is_dir():
        raise KpnError(f"{config.nprof_dir}: no such folder (data.nprof_dir)")
    source: TileSource
    if config.source == "deadleaves":
        source = DeadLeavesSource()
    elif config.source == "clean":
        key = "validation_reference_dir" if reference_dir else "reference_dir"
        pairs = load_clean(references, config, tile, tile_key, key)
        candidates = config.texture_candidates if stream == TRAINING else 1
        source = FileSource(pairs, config.offset, candidates)
    else:
        noisies = Path(noisy_dir or config.noisy_dir)
        pairs = load_pairs(references, noisies, config, tile, tile_key)
        source = FileSource(pairs, config.offset)
    if config.deadleaves_fraction > 0 and stream == TRAINING:
        source = MixedSource(source, config.deadleaves_fraction)
    return TileDataset(source, config, tile, seed, stream, cameras)


class StreamBatches(Sampler[list[int]]):
    """Endless batches of consecutive sample indices from ``start``.

    With ``world`` data-parallel ranks, step k covers samples
    ``start + k*B*world .. start + (k+1)*B*world - 1`` and rank r takes the r-th B of them.
    """

    def __init__(self, start: int, batch: int, rank: int = 0, world: int = 1) -> None:
        self.start, self.batch, self.rank, self.world = start, batch, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        step = 0
        while True:
            first = self.start + (step * self.world + self.rank) * self.batch
            yield list(range(first, first + self.batch))
            step += 1


def ignore_interrupts(worker_id: int) -> None:
    """Loader workers leave Ctrl-C to the training process, which saves and stops, rather
    than dying under it (the terminal sends SIGINT to the whole process group)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def make_loader(
    dataset: TileDataset,
    batch: int,
    workers: int,
    start: int = 0,
    rank: int = 0,
    world: int = 1,
    pin_memory: bool = False,
) -> DataLoader[TrainingBatch]:
    """An endless loader of :class:`TrainingBatch` from sample ``start`` on.

    ``workers`` processes make whole batches (0: the calling process); ``pin_memory``
    (for CUDA) returns page-locked batches that copy to the GPU asynchronously.
    """
    return DataLoader(
        dataset,
        batch_sampler=StreamBatches(start, batch, rank, world),
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        # the loader draws its workers' seeds (unused here) from this generator instead of
        # torch's global one, which training may checkpoint and restore
        generator=torch.Generator().manual_seed(0),
        worker_init_fn=ignore_interrupts,
    )


def training_batches(
    config: DataConfig,
    seed: int,
    start: int = 0,
    rank: int = 0,
    world: int = 1,
    device: torch.device | str = "cpu",
) -> Generator[TrainingBatch, None, None]:
    """Endless training batches on ``device``, from sample ``start`` of the seed's stream.

    The dataset is made (and its files checked) before this returns; ``close()`` the
    result to stop the loader's workers.
    """
    device = torch.device(device)
    dataset = make_dataset(config, seed)
    cuda = device.type == "cuda"
    loader = make_loader(dataset, config.batch, config.workers, start, rank, world, cuda)

    def on_device() -> Generator[TrainingBatch, None, None]:
        for batch in loader:
            yield batch.to(device, non_blocking=cuda)

    return on_device()


def validation_set(config: DataConfig) -> TrainingBatch:
    """The fixed validation set: ``validation_count`` tiles of ``validation_tile``, from
    ``validation_seed`` and the validation folders (default: the training folders). The
    same tiles and noise profiles in every run and every call."""
    dataset = make_dataset(
        config,
        config.validation_seed,
        stream=VALIDATION,
        tile=config.validation_tile,
        reference_dir=config.validation_reference_dir or None,
        noisy_dir=config.validation_noisy_dir or None,
    )
    return collate(dataset.__getitems__(range(config.validation_count)))
