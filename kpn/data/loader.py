"""Training data: datasets chosen by ``data.source``, the loader, the fixed validation set.

Sources (``data.source``, :mod:`kpn.data.sources`): procedural dead leaves (default),
a folder of clean images, or folders of noisy and reference pairs
(:mod:`kpn.data.folders`). Every tile then goes through cnngenin's synthesis
(:mod:`kpn.data.synthesis`).

Sample i of a stream is a pure function of (seed, stream, i): its generator is seeded from
those three numbers alone. A batch is samples ``[first, first + B)``, whichever process
makes it, so the number of loader workers does not change the data, and resuming is
starting the stream at the number of samples already seen.
"""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from kpn.config import DataConfig
from kpn.data.folders import camera_profiles, load_clean, load_pairs
from kpn.data.sources import DeadLeavesSource, FileSource, MixedSource, TileSource
from kpn.data.synthesis import Sample, synthesize, told_profile
from kpn.errors import require_folder

TRAINING, VALIDATION = 0, 1  # stream numbers: the two never share a tile


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
        samples = [
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
        if self.stream != TRAINING:  # validation is told the true profile
            return samples
        jitter = self.config.noise_told_jitter
        return [
            dataclasses.replace(sample, noise_ab=told_profile(sample.noise_ab, jitter, generator))
            for sample, generator in zip(samples, generators, strict=True)
        ]


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
    if config.nprof_dir:
        require_folder(config.nprof_dir, "data.nprof_dir")
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
    same tiles and noise profiles in every run and every call, and with ``data.transpose``
    or ``data.grain`` as without (augmentations of training's), so that runs compare."""
    dataset = make_dataset(
        dataclasses.replace(config, transpose=False, grain=0.0),
        config.validation_seed,
        stream=VALIDATION,
        tile=config.validation_tile,
        reference_dir=config.validation_reference_dir or None,
        noisy_dir=config.validation_noisy_dir or None,
    )
    return collate(dataset.__getitems__(range(config.validation_count)))
