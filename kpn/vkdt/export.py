"""A model as vkdt's ``.lut`` weights file (docs/design.md §9, §10); reading one back is
:mod:`kpn.vkdt.lut_model`.

kpn-t lays the first matrix out ``in_width = W`` wide (the inputs past the feature count
are always zero there), which is also what vkdt's ``kpn`` inference module reads for
W = 32; at ce12d6ed it reads every file with in_width 32, so for W = 64 it cannot run
the same network (design §10; patch 0004 of the series fixes it). Which vkdt runs which
model is :mod:`kpn.vkdt.target`'s. The ``"head"`` layout (``--vkdt-layout head``,
:mod:`kpn.vkdt.lut_layout`) writes the file as ce12d6ed's module reads it, for the
networks it can hold (W 64 ones trained with ``model.vkdt_head_layout``).

Every file kpn writes also carries kpn's section (:mod:`kpn.vkdt.lut_text`): the whole
``[model]`` and ``[infer]`` of the model, after kpn-t's text. vkdt ignores it; kpn reads
the model back from it, so a run's ``weights.lut`` runs as that run's model.
"""

from __future__ import annotations

import os
from typing import Any

from kpn.config import KERNEL_OUTPUTS, Config, ModelConfig
from kpn.errors import KpnError
from kpn.model.mlp import MLP
from kpn.vkdt.lut import lut_bytes, write_lut
from kpn.vkdt.lut_text import VKDT_LOSSES, format_trailer


def lut_trailer(config: Config) -> str:
    """vkdt's text description of ``config``, as kpn-t writes it after the weights."""
    model = config.model
    return format_trailer(
        n_hidden=model.n_hidden,
        width=model.width,
        kernel_activation=model.kernel_activation,
        alpha_activation=model.alpha_activation,
        activation=model.activation,
        loss=config.train.loss if config.train.loss in VKDT_LOSSES else None,
    )


def lut_holds(model: ModelConfig) -> bool:
    """Whether vkdt's ``.lut`` holds ``model``'s network: one star15 kernel and alpha a
    pixel (16 outputs), not ``model.chroma_kernel``'s two nor star21's 22."""
    return model.outputs == KERNEL_OUTPUTS


def _lut_contents(mlp: MLP, config: Config, layout: str, where: object) -> dict[str, Any]:
    """What a ``.lut`` of this MLP holds: the matrices in ``layout`` (:data:`LAYOUTS`),
    kpn-t's trailer, and kpn's section with ``config``'s ``[model]`` and ``[infer]``;
    ``where`` (the destination) names a model no ``.lut`` holds in its KpnError."""
    if not lut_holds(config.model):
        raise KpnError(
            f"{where}: not written: the network has {config.model.outputs} outputs a pixel "
            "(model.chroma_kernel, model.kernel_taps) and vkdt's .lut holds 16 "
            "(docs/design.md §18, §20); its weights are the run's checkpoint"
        )
    return {
        "matrices": [weight.detach().cpu() for weight in mlp.weights],
        "layout": layout,
        "trailer": lut_trailer(config),
        "model": config.model,
        "infer": config.infer,
    }


def lut_payload(
    mlp: MLP, config: Config, dtype: str = "f16", layout: str = "kpn-t", where: str = "lut"
) -> bytes:
    """The bytes of the ``.lut`` for the MLP's weights in ``layout``: kpn-t's trailer, then
    kpn's section with ``config``'s ``[model]`` and ``[infer]`` (and the layout if head).
    ``where`` names the destination in error messages."""
    return lut_bytes(dtype=dtype, where=where, **_lut_contents(mlp, config, layout, where))


def export_lut(
    mlp: MLP,
    config: Config,
    path: str | os.PathLike[str],
    dtype: str = "f16",
    layout: str = "kpn-t",
) -> None:
    """Write :func:`lut_payload`'s bytes to ``path``, atomically."""
    write_lut(path, dtype=dtype, **_lut_contents(mlp, config, layout, path))
