"""Training checkpoints: everything an exact resume needs, tensors and plain data only.

A checkpoint loads with ``torch.load(weights_only=True)``: no pickled code, so a
checkpoint from elsewhere cannot run anything.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Any

import torch

from kpn.config import Config, config_from_dict, config_to_dict
from kpn.errors import KpnError
from kpn.fileio import atomic_write_bytes

FORMAT = 1


@dataclass(frozen=True)
class TrainingState:
    """What a checkpoint holds."""

    config: Config
    model: dict[str, torch.Tensor]  # KPN.state_dict()
    optimizer: dict[str, Any]  # torch.optim.Adam.state_dict()
    step: int  # optimiser steps taken; the next step has this index
    skipped_steps: int  # non-finite steps skipped so far
    samples_seen: int  # the data stream's position: sample index of the next batch
    rng: torch.Tensor  # torch's CPU generator state


def save_checkpoint(path: str | os.PathLike[str], state: TrainingState) -> None:
    """Write ``state`` atomically: a killed process leaves the previous checkpoint intact."""
    payload = {
        "format": FORMAT,
        "config": config_to_dict(state.config),
        "model": state.model,
        "optimizer": state.optimizer,
        "step": state.step,
        "skipped_steps": state.skipped_steps,
        "samples_seen": state.samples_seen,
        "rng": state.rng,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike[str]) -> TrainingState:
    """Read a checkpoint written by :func:`save_checkpoint`; KpnError names the problem."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise KpnError(f"{path}: checkpoint not found") from None
    except Exception as error:  # torch raises many types for a damaged or foreign file
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
        raise KpnError(f"{path}: not a readable checkpoint ({first_line})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise KpnError(f"{path}: not a kpn checkpoint (format {FORMAT} expected)")
    try:
        return TrainingState(
            config=config_from_dict(payload["config"], str(path)),
            model=payload["model"],
            optimizer=payload["optimizer"],
            step=int(payload["step"]),
            skipped_steps=int(payload["skipped_steps"]),
            samples_seen=int(payload["samples_seen"]),
            rng=payload["rng"],
        )
    except KeyError as missing:
        raise KpnError(f"{path}: checkpoint lacks {missing}") from None
