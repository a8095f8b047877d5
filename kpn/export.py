"""The bridge between a model and vkdt's ``.lut`` weights file (SPEC 9, 10).

Export: a run directory or checkpoint -> a ``.lut`` with kpn-t's text trailer. kpn-t lays
the first matrix out ``in_width = W`` wide (the inputs past the feature count are always
zero there), which is also what vkdt's ``kpn`` inference module reads for W = 32; it
reads every file with in_width 32, so for W = 64 it cannot run the same network (SPEC
10): :func:`inference_layout_warning` says so.

Import: a ``.lut`` -> a training checkpoint. The trailer carries ``n_hidden``, ``width``,
the kernel, alpha and MLP activations and the loss; every other setting comes from a
config the caller gives or, without one, from the vkdt preset of the file's width
(:data:`PRESET_FOR_WIDTH`): W 64 is vkdt HEAD as shipped, W 32 HEAD's code built with
WIDTH 32. Both presets include HEAD's kernel block transpose (since 4c5e4782,
2026-01-03): weights trained by an older vkdt need ``--config configs/vkdt-2024-02.toml``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from kpn.checkpoint import TrainingState, load_checkpoint
from kpn.config import Config, ModelConfig, config_from_dict, config_to_dict, load_config
from kpn.errors import KpnError
from kpn.lut import LutFile, format_trailer, lut_bytes, read_lut, write_lut
from kpn.mlp import MLP, load_weights
from kpn.model import KPN
from kpn.optim import make_optimizer

INFERENCE_IN_WIDTH = 32  # vkdt's kpn module reads every file with this layout (kpn/main.c)
RUN_CHECKPOINT = "checkpoint.pt"  # what a run directory holds (kpn.train.CHECKPOINT)
PRESETS = Path(__file__).resolve().parent.parent / "configs"
# The config that supplies what a trailer does not say, by the file's width.
PRESET_FOR_WIDTH = {64: "vkdt-head.toml", 32: "vkdt-head-w32.toml"}


def lut_in_width(model: ModelConfig) -> int:
    """The first matrix's width in the file: kpn-t's layout, W."""
    return model.width


def lut_trailer(config: Config) -> str:
    """vkdt's text description of ``config``, as kpn-t writes it after the weights."""
    model = config.model
    return format_trailer(
        n_hidden=model.n_hidden,
        width=model.width,
        kernel_activation=model.kernel_activation,
        alpha_activation=model.alpha_activation,
        activation=model.activation,
        loss=config.train.loss,
    )


def lut_payload(mlp: MLP, config: Config, dtype: str = "f16") -> bytes:
    """The bytes of the ``.lut`` for the MLP's weights, with kpn-t's trailer."""
    matrices = [weight.detach().cpu() for weight in mlp.weights]
    return lut_bytes(
        matrices, in_width=lut_in_width(config.model), dtype=dtype, trailer=lut_trailer(config)
    )


def export_lut(mlp: MLP, config: Config, path: str | os.PathLike[str], dtype: str = "f16") -> None:
    """Write the MLP's weights as a ``.lut`` file with kpn-t's trailer, atomically."""
    matrices = [weight.detach().cpu() for weight in mlp.weights]
    write_lut(
        path,
        matrices,
        in_width=lut_in_width(config.model),
        dtype=dtype,
        trailer=lut_trailer(config),
    )


def inference_layout_warning(model: ModelConfig) -> str | None:
    """Why vkdt's ``kpn`` module would misread this model's file, or None when it would not."""
    if model.width == INFERENCE_IN_WIDTH:
        return None
    return (
        f"W = {model.width} weights are written in kpn-t's layout (first matrix "
        f"{model.width} wide); vkdt's kpn inference module reads them with in_width "
        f"{INFERENCE_IN_WIDTH} (src/pipe/modules/kpn/main.c), so every later layer starts "
        f"elsewhere and it does not run this network: train W = {INFERENCE_IN_WIDTH} for vkdt "
        "inference (docs/vkdt.md)"
    )


def load_lut(mlp: MLP, model: ModelConfig, source: str | os.PathLike[str] | LutFile) -> None:
    """Copy a ``.lut`` file's weights into ``mlp``; the file must fit ``model``'s shape."""
    lut = source if isinstance(source, LutFile) else read_lut(source)
    if (lut.width, lut.n_hidden) != (model.width, model.n_hidden):
        raise KpnError(
            f"{lut.path}: weights for width {lut.width} with {lut.n_hidden} hidden layers do "
            f"not fit the config's width {model.width} with {model.n_hidden}"
        )
    matrices = lut.matrices(lut_in_width(model), model.in_features)
    reference = mlp.weights[0]
    load_weights(
        mlp,
        [torch.from_numpy(m).to(device=reference.device, dtype=reference.dtype) for m in matrices],
    )


# --- export: run directory or checkpoint -> model ----------------------------------------
def load_training_state(source: str | os.PathLike[str]) -> TrainingState:
    """The checkpoint of a run directory (its ``checkpoint.pt``) or a checkpoint file."""
    path = Path(source)
    if path.is_dir():
        if not (path / RUN_CHECKPOINT).is_file():
            raise KpnError(f"{path}: a run directory holds {RUN_CHECKPOINT}, this one does not")
        path = path / RUN_CHECKPOINT
    return load_checkpoint(path)


def model_from_state(state: TrainingState, where: str) -> KPN:
    """The trained model of a checkpoint, on the CPU."""
    model = KPN(state.config.model)
    try:
        model.load_state_dict(state.model)
    except (RuntimeError, KeyError, TypeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
        raise KpnError(
            f"{where}: weights do not fit the checkpoint's config ({first_line})"
        ) from None
    return model


# --- import: .lut -> config and checkpoint ------------------------------------------------
@dataclass(frozen=True)
class ImportedConfig:
    """The config a ``.lut`` file's weights belong to, and how it was decided."""

    config: Config
    source: str  # the config file that supplied what the trailer does not carry
    notes: tuple[str, ...]  # choices a user should hear about (the ambiguous "sigmoid")


def preset_path(width: int, where: str) -> Path:
    """The vkdt preset for a file of width ``width`` (see :data:`PRESET_FOR_WIDTH`)."""
    if width not in PRESET_FOR_WIDTH:
        raise KpnError(
            f"{where}: no vkdt preset has width {width} (only {sorted(PRESET_FOR_WIDTH)}): "
            "pass --config"
        )
    path = PRESETS / PRESET_FOR_WIDTH[width]
    if not path.is_file():
        raise KpnError(
            f"{where}: preset {path} not found (kpn without its configs/): pass --config"
        )
    return path


def config_for_lut(
    lut: LutFile, config: Config | None = None, config_name: str = "--config"
) -> ImportedConfig:
    """Decide the config of a ``.lut`` file's weights from its header and trailer.

    With ``config`` (the user's ``--config``, named ``config_name`` in messages) the file
    must agree with it on everything it records: width and hidden layers (header), and
    the kernel, alpha and MLP activations and the loss (trailer); a contradiction is a
    KpnError. vkdt writes "sigmoid" for both the sigmoid and the clamped alpha: either
    agrees with a config's, and without a config "sigmoid" is taken (and said in a note).
    Without ``config`` the file needs its trailer, and the other settings come from the
    vkdt preset of its width.
    """
    trailer = lut.trailer
    if config is None and trailer is None:
        raise KpnError(
            f"{lut.path}: no trailer (the text kpn-t appends) to tell the configuration: "
            "pass --config"
        )
    if trailer is not None and trailer.kernel_activation not in ("softmax", "plain"):
        raise KpnError(
            f"{lut.path}: kernel weight activation {trailer.kernel_activation!r} (vkdt's "
            "retired APPLY_SIGMOID) has no counterpart here"
        )
    fields = _recorded_fields(lut)
    if config is not None:
        for key, recorded in fields:
            section, name = key.split(".")
            wanted = getattr(getattr(config, section), name)
            if recorded == "sigmoid_or_clamped":
                agrees, recorded = wanted in ("sigmoid", "clamped"), "sigmoid (sigmoid or clamped)"
            else:
                agrees = recorded == wanted
            if not agrees:
                what = "header" if name in ("width", "n_hidden") else "trailer"
                raise KpnError(
                    f"{lut.path}: {what} says {key} = {recorded!r}, {config_name} says {wanted!r}"
                )
        return ImportedConfig(config, config_name, ())

    source = preset_path(lut.width, str(lut.path))
    table = config_to_dict(load_config(source))
    notes = []
    for key, recorded in fields:
        section, name = key.split(".")
        if recorded == "sigmoid_or_clamped":
            recorded = "sigmoid"
            notes.append(
                "the trailer's alpha activation 'sigmoid' is vkdt's word for sigmoid and "
                "clamped: took 'sigmoid' (pass --config to choose 'clamped')"
            )
        table[section][name] = recorded
    return ImportedConfig(config_from_dict(table, str(lut.path)), str(source), tuple(notes))


def _recorded_fields(lut: LutFile) -> list[tuple[str, str | int]]:
    """(config key, value) for everything a file records: header, then trailer."""
    fields: list[tuple[str, str | int | None]] = [
        ("model.width", lut.width),
        ("model.n_hidden", lut.n_hidden),
    ]
    if lut.trailer is not None:
        fields += [
            ("model.kernel_activation", lut.trailer.kernel_activation),
            ("model.alpha_activation", lut.trailer.alpha_activation),
            ("model.activation", lut.trailer.activation),  # None before 2024-01-18
            ("train.loss", lut.trailer.loss),  # None before 2024-01-30
        ]
    return [(key, value) for key, value in fields if value is not None]


def checkpoint_from_lut(lut: LutFile, config: Config) -> TrainingState:
    """A fresh training state (step 0, a new optimiser) starting from the file's weights.

    ``config`` must fit the file (see :func:`config_for_lut`). The state resumes with
    ``train.py --resume`` and exports back to the same bytes.
    """
    with torch.random.fork_rng(devices=[]):  # the discarded random init leaves no trace
        model = KPN(config.model)
    load_lut(model.mlp, config.model, lut)
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
