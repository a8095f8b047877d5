"""A ``.lut`` file as a training checkpoint to resume from (``python -m kpn import``).

Training's, not the vkdt bridge's: a checkpoint holds a fresh optimiser state
(:mod:`kpn.train.optim`), which reading a ``.lut`` for inference
(:mod:`kpn.vkdt.lut_model`) never needs.
"""

from __future__ import annotations

import torch

from kpn.config import Config
from kpn.io.checkpoint import TrainingState
from kpn.model.network import KPN
from kpn.train.optim import make_optimizer
from kpn.vkdt.lut import LutFile
from kpn.vkdt.lut_model import load_lut


def checkpoint_from_lut(lut: LutFile, config: Config, layout: str | None = None) -> TrainingState:
    """A fresh training state (step 0, a new optimiser) starting from the file's weights,
    read in ``layout`` (default the file's, see :func:`~kpn.vkdt.lut_model.layout_to_read`).

    ``config`` must fit the file (see :func:`~kpn.vkdt.lut_model.config_for_lut`). The
    state resumes with ``train.py --resume`` and exports back to the same bytes.
    """
    with torch.random.fork_rng(devices=[]):  # the discarded random init leaves no trace
        model = KPN(config.model)
    load_lut(model.mlp, config.model, lut, layout)
    optimizer = make_optimizer(model.parameters(), config.train)
    return TrainingState(
        config=config,
        model=model.state_dict(),
        optimizer=optimizer.state_dict(),
        step=0,
        skipped_steps=0,
        samples_seen=0,
        rng=torch.Generator().manual_seed(0).get_state(),
    )
