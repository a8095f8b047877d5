"""Training checkpoints: everything an exact resume needs, tensors and plain data only.

A checkpoint loads with ``torch.load(weights_only=True)``: no pickled code, so a
checkpoint from elsewhere cannot run anything (one that holds code is refused, naming it).
A training run keeps the checkpoint before its latest beside it (``checkpoint.prev.pt``)
and resumes from it when the latest cannot be read.
"""

from __future__ import annotations

import errno
import io
import math
import os
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kpn.config import Config, config_from_dict, config_to_dict
from kpn.errors import KpnError
from kpn.io.atomic import atomic_write_bytes

FORMAT = 1
CUT_SHORT = "damaged or cut short: not a complete torch file"
# torch's safe loader names what it refused: "Unsupported global: GLOBAL builtins.eval was
# not an allowed global", "unsupported GLOBAL posix.system whose module posix is blocked"
REFUSED_GLOBAL = re.compile(r"GLOBAL ([A-Za-z_][\w.]*\w)")
# how Python names the modules that functions pickle under: os.system pickles as
# posix.system (nt.system on Windows), eval as builtins.eval (__builtin__.eval, protocol 2)
MODULE_NAMES = {"posix": "os", "nt": "os", "builtins": "", "__builtin__": ""}


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
    best_psnr: float = -math.inf  # the best validation PSNR so far (the run's best.pt)


def previous_path(path: str | os.PathLike[str]) -> Path:
    """Where the checkpoint before ``path`` is kept: ``checkpoint.pt`` -> ``checkpoint.prev.pt``."""
    target = Path(path)
    return target.with_name(f"{target.stem}.prev{target.suffix}")


def save_checkpoint(
    path: str | os.PathLike[str], state: TrainingState, keep_previous: bool = False
) -> None:
    """Write ``state`` atomically: a killed process leaves the previous checkpoint intact.

    ``keep_previous``: first copy the checkpoint at ``path`` to :func:`previous_path`, a
    second chance should the latest ever be unreadable (a disk error, a truncated copy);
    only one that reads back replaces the one kept there.
    """
    if keep_previous:
        _keep_previous(Path(path))
    payload = {
        "format": FORMAT,
        "config": config_to_dict(state.config),
        "model": state.model,
        "optimizer": state.optimizer,
        "step": state.step,
        "skipped_steps": state.skipped_steps,
        "samples_seen": state.samples_seen,
        "rng": state.rng,
        "best_psnr": state.best_psnr,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _keep_previous(path: Path) -> None:
    # Only a latest that reads back is kept: a damaged one (which a resume has just fallen
    # back from) copied over the previous would leave a second failure nothing to resume.
    # A copy, not a rename: the latest checkpoint exists at every moment, so a kill
    # between the two writes still leaves one to resume from.
    try:
        load_checkpoint(path)
        data = path.read_bytes()
    except (KpnError, OSError):  # none yet (the first save), or damaged: not worth keeping
        return
    atomic_write_bytes(previous_path(path), data)


def held_code(error: BaseException) -> str | None:
    """What code torch's safe loader refused, when ``error`` is that refusal: the global
    it names as Python names it (``os.system``, ``eval``), else a description; None for
    another error."""
    if not isinstance(error, pickle.UnpicklingError):
        return None
    message = str(error)
    named = REFUSED_GLOBAL.search(message)
    if named is None:
        return "an object torch's safe loader refuses" if "global" in message.lower() else None
    module, _, name = named.group(1).rpartition(".")
    module = MODULE_NAMES.get(module, module)
    return f"{module}.{name}" if module else name


def load_error_reason(error: BaseException) -> str:
    """Why ``torch.load`` failed, in words.

    torch's own messages are class names (an empty file raises a bare EOFError), errno
    numbers, or paragraphs advising ``weights_only=False``, which would run whatever code
    the file holds.
    """
    if isinstance(error, IsADirectoryError):
        return "a directory, not a checkpoint file"
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, OSError) and error.errno == errno.EINVAL:
        # torch's zip reader seeking before the start of a file cut short
        return CUT_SHORT
    if isinstance(error, OSError):
        return f"cannot read it: {(error.strerror or 'input/output error').lower()}"
    if isinstance(error, EOFError):
        return "empty or cut short"
    if isinstance(error, RuntimeError) and "zip archive" in str(error):
        return CUT_SHORT
    return "damaged, or not a file torch.save wrote"


def load_checkpoint(path: str | os.PathLike[str]) -> TrainingState:
    """Read a checkpoint written by :func:`save_checkpoint`; KpnError names the problem."""
    try:
        # torch warns about foreign pickles before failing on them; the failure is the
        # one line the user gets
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise KpnError(f"{path}: checkpoint not found") from None
    except Exception as error:  # torch raises many types for a damaged or foreign file
        code = held_code(error)
        if code is not None:
            refused = f"refused: it holds code ({code}), which kpn never loads"
            raise KpnError(f"{path}: {refused}") from None
        raise KpnError(f"{path}: not a readable checkpoint ({load_error_reason(error)})") from None
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
            best_psnr=float(payload.get("best_psnr", -math.inf)),  # not in older checkpoints
        )
    except KeyError as missing:
        raise KpnError(f"{path}: checkpoint lacks {missing}") from None


def load_latest_checkpoint(path: str | os.PathLike[str]) -> tuple[TrainingState, str | None]:
    """The checkpoint at ``path``, or where it cannot be read the one kept before it.

    Returns the state and, when it is the previous checkpoint's, one line saying so.
    KpnError (the latest's problem) when neither can be read.
    """
    try:
        return load_checkpoint(path), None
    except KpnError as latest:
        previous = previous_path(path)
        if not previous.is_file():
            raise
        try:
            state = load_checkpoint(previous)
        except KpnError:
            raise latest from None
        return state, f"{latest}; using the one before it, {previous} (step {state.step})"
