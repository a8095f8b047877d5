"""A trained network inside a wider one (``train.init`` of a checkpoint of a narrower
model, of one that reads fewer inputs, or of a star15 model for star21 kernels:
:func:`grows_into`).

The wider network's matrices keep the narrower one's where both have units, and the new
units and inputs feed nothing yet: a new unit's incoming weights are the wider network's
own random initialisation, the outgoing weights of new units and inputs 0. So the wider
network starts as the narrower network exactly, and the new units and inputs, whose
values are not 0, get gradients from the first step (zero incoming weights as well would
keep new units silent for good).

star21's six new taps cannot start silent: a softmax weight is never 0, and without biases
no output is a constant. Each new tap's logit starts as its transposed tap's in star15
(:func:`star21_outputs`), so the kernel starts as star15's with its reach along the other
axis, weighted alike (design §20).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import Tensor

from kpn.config import ModelConfig
from kpn.model.features import STAR15_TAPS, STAR21_TAPS

TAP_GROWTHS = {("star15", "star15"), ("star21", "star21"), ("star15", "star21")}


def grows_into(trained: ModelConfig, wanted: ModelConfig) -> bool:
    """Whether ``wanted`` is ``trained`` with more hidden units (``model.width``), more
    inputs appended (``model.chroma_input`` on) or star21's taps for star15's
    (``model.kernel_taps``), and not the same."""
    same_otherwise = dataclasses.replace(
        wanted,
        width=trained.width,
        chroma_input=trained.chroma_input,
        kernel_taps=trained.kernel_taps,
    )
    return (
        trained != wanted
        and same_otherwise == trained
        and trained.width <= wanted.width
        and wanted.chroma_input >= trained.chroma_input
        and (trained.kernel_taps, wanted.kernel_taps) in TAP_GROWTHS
    )


def star21_outputs(star15: Tensor) -> Tensor:
    """The output matrix of a star21 network from a star15 network's: each kernel's 15
    logit rows, then one for each new tap copied from its transposed tap's, then its alpha.
    ``[16k,W] -> [22k,W]`` (k kernels: 1, or 2 with ``model.chroma_kernel``)."""
    transposed = [STAR15_TAPS.index((dy, dx)) for dx, dy in STAR21_TAPS[len(STAR15_TAPS) :]]
    kernels = star15.unflatten(0, (-1, len(STAR15_TAPS) + 1))
    logits, alpha = kernels[:, :-1], kernels[:, -1:]
    return torch.cat((logits, logits[:, transposed], alpha), dim=1).flatten(0, 1)


def widened(narrow: Sequence[Tensor], fresh: Sequence[Tensor]) -> list[Tensor]:
    """The matrices of a wider MLP that computes what ``narrow``'s does.

    Args:
        narrow: ``[w,in]``, ``[w,w]``..., ``[out,w]``, the trained network's.
        fresh: ``[W,in]``, ``[W,W]``..., ``[out,W]``, W >= w, a new network's
            initialisation (the new units' incoming weights come from it).

    Returns:
        ``[W,in]``, ``[W,W]``..., ``[out,W]``: ``narrow`` in its own rows and columns, 0
        from the new units to the old ones and to the outputs, ``fresh``'s rows into the
        new units.
    """
    if len(narrow) != len(fresh):
        raise ValueError(f"{len(narrow)} matrices where {len(fresh)} fit")
    out = []
    for small, big in zip(narrow, fresh, strict=True):
        rows, columns = small.shape
        if rows > big.shape[0] or columns > big.shape[1]:
            raise ValueError(f"a {tuple(small.shape)} matrix does not fit {tuple(big.shape)}")
        matrix = big.detach().clone()
        matrix[:rows, :columns] = small.detach()
        matrix[:rows, columns:] = 0.0
        out.append(matrix)
    return out
