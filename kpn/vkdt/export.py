"""A model as vkdt's ``.lut`` weights file (docs/design.md §9, §10); reading one back is
:mod:`kpn.vkdt.lut_model`.

kpn-t lays the first matrix out ``in_width = W`` wide (the inputs past the feature count
are always zero there), which is also what vkdt's ``kpn`` inference module reads for
W = 32; it reads every file with in_width 32, so for W = 64 it cannot run the same
network (design §10): :func:`inference_layout_warning` says so. The ``"head"`` layout
(``--vkdt-layout head``, :mod:`kpn.vkdt.lut_layout`) writes the file as that module reads
it, for the networks it can hold (W 64 ones trained with ``model.vkdt_head_layout``).

Every file kpn writes also carries kpn's section (:mod:`kpn.vkdt.lut_text`): the whole
``[model]`` and ``[infer]`` of the model, after kpn-t's text. vkdt ignores it; kpn reads
the model back from it, so a run's ``weights.lut`` runs as that run's model.
"""

from __future__ import annotations

import os
from typing import Any

from kpn.config import VKDT_FEATURES, VKDT_INFERENCE_IN_WIDTH, Config, ModelConfig
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


def _lut_contents(mlp: MLP, config: Config, layout: str) -> dict[str, Any]:
    """What a ``.lut`` of this MLP holds: the matrices in ``layout`` (:data:`LAYOUTS`),
    kpn-t's trailer, and kpn's section with ``config``'s ``[model]`` and ``[infer]``."""
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
    return lut_bytes(dtype=dtype, where=where, **_lut_contents(mlp, config, layout))


def export_lut(
    mlp: MLP,
    config: Config,
    path: str | os.PathLike[str],
    dtype: str = "f16",
    layout: str = "kpn-t",
) -> None:
    """Write :func:`lut_payload`'s bytes to ``path``, atomically."""
    write_lut(path, dtype=dtype, **_lut_contents(mlp, config, layout))


def inference_layout_warning(model: ModelConfig, layout: str = "kpn-t") -> str | None:
    """Why vkdt's ``kpn`` module cannot run this model's file in ``layout`` (one line), or
    None.

    Five reasons: features vkdt's ``input.glsl`` does not compute, a guide (design §16),
    a second filter pass (design §17), post_diff's smoothing at the edges of odd sizes
    (design §5), and a width whose file layout its inference module misreads (any W > 32
    in kpn-t's layout; the ``"head"`` layout is written only for networks it holds). kpn
    reads such a file back all the same.
    """
    reasons = []
    if model.features not in VKDT_FEATURES:
        reasons.append(
            f"model.features = {model.features!r} is kpn's own input: vkdt's input.glsl "
            f"computes only {' and '.join(VKDT_FEATURES)}, so vkdt cannot run this network "
            "(kpn reads the file back)"
        )
    if model.guide != "none":
        reasons.append(
            f"model.guide = {model.guide!r}: vkdt's kpn module does not feed a level's "
            "network the coarser output (docs/design.md §16)"
        )
    if model.fine_passes != 1:
        reasons.append(
            f"model.fine_passes = {model.fine_passes}: vkdt's kpn module filters each level "
            "with its kernels once (docs/design.md §17)"
        )
    if model.blend == "post_diff" and not model.vkdt_post_diff_border:
        reasons.append(
            "model.blend = 'post_diff' smooths with the pyramid's own up(down(I)): vkdt's "
            "up.comp differs next to the last row and column of odd-sized levels "
            "(docs/design.md §5; model.vkdt_post_diff_border = true is vkdt's)"
        )
    if model.width != VKDT_INFERENCE_IN_WIDTH and layout != "head":
        reasons.append(
            f"W = {model.width} weights are written in kpn-t's layout (first matrix "
            f"{model.width} wide); vkdt's kpn inference module reads them with in_width "
            f"{VKDT_INFERENCE_IN_WIDTH} (src/pipe/modules/kpn/main.c), so every later layer starts "
            f"elsewhere and it does not run this network: train W = {VKDT_INFERENCE_IN_WIDTH} for "
            "vkdt inference, or train with model.vkdt_head_layout = true and export with "
            "--vkdt-layout head (docs/vkdt.md)"
        )
    return "; also ".join(reasons) or None
