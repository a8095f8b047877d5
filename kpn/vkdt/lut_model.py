"""A ``.lut`` file as a model: the config its weights belong to, and the weights in an MLP.

With kpn's section (:mod:`kpn.vkdt.lut_text`) the file says its model. Without one
(vkdt's files) the trailer carries only ``n_hidden``, ``width``, the kernel, alpha and MLP
activations and the loss, so the caller must say what the rest is: a config
(``--config``), which must agree with the file, or a preset (``--preset``, a name in
``configs/``), whose settings the trailer's override. :data:`PRESET_FOR_WIDTH` names the
vkdt preset of each width, which the refusal suggests: W 64 is vkdt HEAD as shipped, W 32
HEAD's code built with WIDTH 32. Both include HEAD's kernel block transpose (since
4c5e4782, 2026-01-03): weights trained by an older vkdt need ``--preset vkdt-2024-02``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from kpn.config import Config, ModelConfig, config_from_dict, config_to_dict, load_config
from kpn.errors import KpnError, mention
from kpn.model.mlp import MLP, load_weights
from kpn.presets import preset_path
from kpn.vkdt.lut import LutFile, read_lut
from kpn.vkdt.lut_layout import LAYOUTS

# The config that supplies what a trailer does not say, by the file's width.
PRESET_FOR_WIDTH = {64: "vkdt-head.toml", 32: "vkdt-head-w32.toml"}


def load_lut(
    mlp: MLP,
    model: ModelConfig,
    source: str | os.PathLike[str] | LutFile,
    layout: str | None = None,
) -> None:
    """Copy a ``.lut`` file's weights into ``mlp``, read in ``layout`` (default: the
    file's own, kpn-t's unless kpn's section says head); the file must fit ``model``."""
    lut = source if isinstance(source, LutFile) else read_lut(source)
    if (lut.width, lut.n_hidden) != (model.width, model.n_hidden):
        raise KpnError(
            f"{lut.path}: weights for width {lut.width} with {lut.n_hidden} hidden layers do "
            f"not fit the config's width {model.width} with {model.n_hidden}"
        )
    matrices = lut.network(model.in_features, layout)
    reference = mlp.weights[0]
    load_weights(
        mlp,
        [torch.from_numpy(m).to(device=reference.device, dtype=reference.dtype) for m in matrices],
    )


@dataclass(frozen=True)
class ImportedConfig:
    """The config a ``.lut`` file's weights belong to, and how it was decided."""

    config: Config
    source: str  # what supplied the model: the file's kpn section, a config or a preset
    notes: tuple[str, ...]  # choices a user should hear about (the ambiguous "sigmoid")


def unknown_model_message(lut: LutFile) -> str:
    """Why a file without kpn's section is refused without a config or preset: one line."""
    what = "no trailer, no kpn section" if lut.trailer is None else "no kpn section"
    hint = (
        f"{mention('config', 'FILE')} (its whole config) or {mention('preset', 'NAME')} (a preset"
    )
    if lut.width in PRESET_FOR_WIDTH:
        preset = Path(PRESET_FOR_WIDTH[lut.width]).stem
        hint += f"; vkdt's W {lut.width} build: {mention('preset', preset)}"
    return (
        f"{lut.path}: the file does not say which model its weights are for ({what}: "
        f"written by vkdt or an older kpn); say it with {hint})"
    )


def config_for_lut(
    lut: LutFile,
    config: Config | None = None,
    config_name: str = mention("config"),
    preset: str | None = None,
) -> ImportedConfig:
    """Decide the config of a ``.lut`` file's weights.

    A file with kpn's section says its model: the result has that ``[model]`` and
    ``[infer]`` (and the trailer's loss); a ``config`` (the user's ``--config``, named
    ``config_name`` in messages) must have the same ``[model]`` and is then used whole.
    A file without one must be told what it is, else KpnError (:func:`unknown_model_message`):
    with ``config`` the file must agree with it on everything it records (width and
    hidden layers in the header; kernel, alpha and MLP activations and loss in the
    trailer); with ``preset`` (a name in ``configs/``, see :func:`kpn.presets.preset_path`) the
    trailer's items replace the preset's. vkdt writes "sigmoid" for both the sigmoid and
    the clamped alpha: either agrees with a config's, and over a preset "sigmoid" is taken
    (and said in a note). ``config`` and ``preset`` together are refused.
    """
    trailer = lut.trailer
    if config is not None and preset is not None:
        raise KpnError(f"{config_name} and {mention('preset', preset)}: give one, not both")
    if trailer is not None and trailer.kernel_activation not in ("softmax", "plain"):
        raise KpnError(
            f"{lut.path}: kernel weight activation {trailer.kernel_activation!r} (vkdt's "
            "retired APPLY_SIGMOID) has no counterpart here"
        )
    if lut.model is not None:
        return _from_section(lut, config, config_name, preset)
    if config is not None:
        _check_recorded(lut, config, config_name)
        return ImportedConfig(config, config_name, ())
    if preset is None:
        raise KpnError(unknown_model_message(lut))
    source = preset_path(preset)
    table = config_to_dict(load_config(source))
    notes = []
    for key, recorded in _recorded_fields(lut):
        section, name = key.split(".")
        if recorded == "sigmoid_or_clamped":
            recorded = "sigmoid"
            notes.append(
                "the trailer's alpha activation 'sigmoid' is vkdt's word for sigmoid and "
                f"clamped: took 'sigmoid' (pass {mention('config')} to choose 'clamped')"
            )
        table[section][name] = recorded
    return ImportedConfig(config_from_dict(table, str(lut.path)), str(source), tuple(notes))


def _from_section(
    lut: LutFile, config: Config | None, config_name: str, preset: str | None
) -> ImportedConfig:
    """config_for_lut for a file with kpn's section (read_lut checked it against the rest)."""
    assert lut.model is not None and lut.infer is not None
    source = "the file's kpn section"
    if preset is not None:
        raise KpnError(
            f"{mention('preset', preset)}: {lut.path} says its model itself (kpn section): "
            f"leave {mention('preset')} out"
        )
    if config is not None:
        # The header's width first: "W 32 vs 64" says more than the first [model] key.
        _check_recorded(lut, config, config_name)
        check_same_model(lut.model, config.model, config_name, f"{lut.path} (its kpn section)")
        return ImportedConfig(config, config_name, ())
    table = {"model": config_to_dict(lut.model), "infer": config_to_dict(lut.infer)}
    if lut.trailer is not None and lut.trailer.loss is not None:
        table["train"] = {"loss": lut.trailer.loss}  # the one training setting it records
    return ImportedConfig(config_from_dict(table, source), source, ())


def check_same_model(
    trained: ModelConfig, given: ModelConfig, config_name: str, weights: str
) -> None:
    """KpnError naming the first ``[model]`` key where ``given``, the model of the config
    ``config_name``, contradicts ``trained``, the model of the weights in ``weights``."""
    ours, theirs = config_to_dict(trained), config_to_dict(given)
    for key, value in ours.items():
        if theirs[key] != value:
            raise KpnError(
                f"{config_name}: model.{key} = {theirs[key]!r}, but the weights in {weights} "
                f"were trained with {value!r}: leave {config_name} out, or give the run's config"
            )


def _check_recorded(lut: LutFile, config: Config, config_name: str) -> None:
    """KpnError unless ``config`` agrees with everything the header and trailer record."""
    for key, recorded in _recorded_fields(lut):
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


def layout_to_read(lut: LutFile, wanted: str | None, option: str = "--vkdt-layout") -> str:
    """The layout to read ``lut`` in: ``wanted`` (the user's ``option``), else the file's.

    A file kpn wrote says its layout (kpn's section); a ``wanted`` that contradicts it is
    refused with one line. A file without kpn's section (vkdt's kpn-t writes kpn-t's
    layout) is read in ``wanted`` when given.
    """
    if wanted is None:
        return lut.layout
    if wanted not in LAYOUTS:
        raise KpnError(f"{option} {wanted}: expected one of {list(LAYOUTS)}")
    if lut.model is not None and wanted != lut.layout:
        raise KpnError(
            f"{option} {wanted}: {lut.path} says it is in the {lut.layout} layout (its kpn "
            f"section): leave {option} out"
        )
    return wanted
