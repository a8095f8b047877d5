"""The files of a training run's folder, named in one place.

A run folder (``python train.py --out DIR``; also each shipped model in ``kpn/weights``)
holds the resolved ``config.toml``, ``checkpoint.pt`` (everything an exact resume needs)
and the one before it, ``checkpoint.prev.pt``, ``best.pt`` (the checkpoint of the best
validation PSNR), ``weights.lut`` for vkdt, and TensorBoard's event files (named by
TensorBoard). The trainer writes these names and inference, export and the scripts read
them: all through :class:`RunFolder`. A write killed midway leaves a hidden temporary file
(:mod:`kpn.io.atomic`) beside its target: :meth:`RunFolder.stale_temps` finds them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kpn.errors import KpnError
from kpn.io.atomic import stale_temp_paths
from kpn.io.checkpoint import TrainingState, load_checkpoint, previous_path
from kpn.model.network import KPN


@dataclass(frozen=True)
class RunFolder:
    """Where a run folder at ``path`` keeps each of its files (none need exist)."""

    path: Path

    def __init__(self, path: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "path", Path(path))

    @property
    def config(self) -> Path:
        """The run's resolved config: what it trains, every default written out."""
        return self.path / "config.toml"

    @property
    def checkpoint(self) -> Path:
        """The latest checkpoint, written every ``train.checkpoint_every`` steps and last."""
        return self.path / "checkpoint.pt"

    @property
    def previous_checkpoint(self) -> Path:
        """The checkpoint before the latest: the resume's second chance."""
        return previous_path(self.checkpoint)

    @property
    def best(self) -> Path:
        """The checkpoint of the best validation PSNR so far."""
        return self.path / "best.pt"

    @property
    def weights(self) -> Path:
        """The latest weights in vkdt's ``.lut`` format."""
        return self.path / "weights.lut"

    def written(self) -> tuple[Path, ...]:
        """The files the trainer writes here (atomically), TensorBoard's aside."""
        return (self.config, self.checkpoint, self.previous_checkpoint, self.best, self.weights)

    def stale_temps(self) -> list[Path]:
        """The temporary files that killed writes of :meth:`written` left here, sorted."""
        return sorted(stale for target in self.written() for stale in stale_temp_paths(target))


def load_training_state(source: str | os.PathLike[str]) -> TrainingState:
    """The checkpoint of a run directory (its ``checkpoint.pt``) or a checkpoint file."""
    path = Path(source)
    if path.is_dir():
        checkpoint = RunFolder(path).checkpoint
        if not checkpoint.is_file():
            raise KpnError(f"{path}: a run directory holds {checkpoint.name}, this one does not")
        path = checkpoint
    return load_checkpoint(path)


def model_from_state(state: TrainingState, where: str) -> KPN:
    """The trained model of a checkpoint, on the CPU; ``where`` names it in messages."""
    model = KPN(state.config.model)
    try:
        model.load_state_dict(state.model)
    except (RuntimeError, KeyError, TypeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
        raise KpnError(
            f"{where}: weights do not fit the checkpoint's config ({first_line})"
        ) from None
    return model
