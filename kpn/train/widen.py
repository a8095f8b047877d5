"""A trained network inside a wider one (``train.init`` of a checkpoint of a narrower
model, or of one that reads fewer inputs: :func:`grows_into`).

The wider network's matrices keep the narrower one's where both have units, and the new
units and inputs feed nothing yet: a new unit's incoming weights are the wider network's
own random initialisation, the outgoing weights of new units and inputs 0. So the wider
network starts as the narrower network exactly, and the new units and inputs, whose
values are not 0, get gradients from the first step (zero incoming weights as well would
keep new units silent for good).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from torch import Tensor

from kpn.config import ModelConfig


def grows_into(trained: ModelConfig, wanted: ModelConfig) -> bool:
    """Whether ``wanted`` is ``trained`` with more hidden units (``model.width``) or more
    inputs appended (``model.chroma_input`` on), and not the same."""
    same_otherwise = dataclasses.replace(
        wanted, width=trained.width, chroma_input=trained.chroma_input
    )
    return (
        trained != wanted
        and same_otherwise == trained
        and trained.width <= wanted.width
        and wanted.chroma_input >= trained.chroma_input
    )


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
