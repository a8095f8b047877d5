"""The files of a training run's folder, named in one place.

A run folder (``python train.py --out DIR``; also each shipped model in ``kpn/weights``)
holds the resolved ``config.toml``, ``checkpoint.pt`` (everything an exact resume needs)
and the one before it, ``checkpoint.prev.pt``, ``best.pt`` (the checkpoint of the best
validation PSNR), ``weights.lut`` for vkdt, and TensorBoard's event files (named by
TensorBoard). The trainer writes these names and inference, export and the scripts read
them: all through :class:`RunFolder`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kpn.io.checkpoint import previous_path


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
