"""Trained weights for inference: a run folder, a checkpoint or a ``.lut`` as a model
and its config; the shipped models."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from kpn import presets
from kpn.config import Config, load_config
from kpn.errors import KpnError, ParameterError, mention
from kpn.io.run_folder import RunFolder, load_training_state, model_from_state
from kpn.model.network import KPN
from kpn.vkdt.lut import read_lut
from kpn.vkdt.lut_model import check_same_model, config_for_lut, load_lut

# The shipped models (kpn/weights/NAME: a run folder with its model card), the first the
# default when no weights are named.
SHIPPED_DIR = presets.SHIPPED
SHIPPED = ("design-star21", "design-chroma", "design", "vkdt-w32")  # the first is the default
# What a float16 .lut (vkdt's type; a run's weights.lut) costs against the float32 model
# it was rounded from, said wherever such weights are named.
FLOAT16_NOTE = (
    "float16 weights: outputs up to ~2e-4 from the float32 checkpoint's "
    "(python -m kpn export --dtype f32 writes a kpn-only float32 .lut)"
)


@dataclass(frozen=True)
class LoadedWeights:
    """A model ready for inference, its whole config, and where both came from."""

    model: KPN
    config: Config
    description: str


def _from_lut(
    path: Path, config: Config | None, config_name: str, preset: str | None = None
) -> LoadedWeights:
    lut = read_lut(path)
    imported = config_for_lut(lut, config, config_name, preset)
    with torch.random.fork_rng(devices=[]):  # the discarded random init leaves no trace
        model = KPN(imported.config.model)
    load_lut(model.mlp, imported.config.model, lut)
    how = imported.source + "".join(f"; {note}" for note in imported.notes)
    if lut.model is None:
        how = f"trailer + {how}" if lut.trailer is not None else f"{how}, no trailer"
    rounded = f"; {FLOAT16_NOTE}" if lut.dtype == "f16" else ""
    return LoadedWeights(model, imported.config, f"{path} (config: {how}){rounded}")


def load_weights(
    path: str | os.PathLike[str],
    config_path: str | os.PathLike[str] | None = None,
    preset: str | None = None,
) -> LoadedWeights:
    """The model of a run directory, a checkpoint or a ``.lut``, and its config.

    See the module docstring for where the config comes from; ``preset`` (``--preset``)
    names a config in ``configs/`` for a ``.lut`` that does not say its model. Every
    failure (missing or corrupt file, weights that do not fit, a ``--config`` that
    contradicts them, a ``.lut`` nobody says the model of) is a one-line
    :class:`KpnError`; a bad ``path`` or ``preset`` a :class:`~kpn.errors.ParameterError`.
    """
    path = Path(path)
    user = load_config(config_path) if config_path is not None else None
    name = str(config_path)
    if not path.exists():
        raise ParameterError("path", path, "no such weights file or run directory")
    if preset is not None and (path.is_dir() or path.suffix.lower() != ".lut"):
        raise ParameterError(
            "preset",
            preset,
            f"{path} is a run or checkpoint, which says its model itself "
            f"({mention('preset')} is for a .lut that does not)",
        )
    run = RunFolder(path)
    if path.is_dir() and not run.checkpoint.is_file() and run.weights.is_file():
        if not run.config.is_file():
            raise KpnError(
                f"{path}: a run directory with {run.weights.name} but no {run.config.name}"
            )
        loaded = _from_lut(run.weights, load_config(run.config), str(run.config))
        if user is not None:
            check_same_model(loaded.config.model, user.model, name, str(path))
            loaded = dataclasses.replace(
                loaded, config=dataclasses.replace(loaded.config, infer=user.infer)
            )
        return loaded
    if path.suffix.lower() == ".lut":
        return _from_lut(path, user, name, preset)
    state = load_training_state(path)
    model = model_from_state(state, str(path))
    config = state.config
    if user is not None:
        check_same_model(config.model, user.model, name, str(path))
        config = dataclasses.replace(config, infer=user.infer)
    return LoadedWeights(model, config, f"{path} (config: the run's, step {state.step})")


def shipped_weights(config_path: str | None = None) -> Path:
    """The shipped model for ``--config``'s [model] (without one: the default,
    ``weights/design-star21``, the design with chroma and star21 kernels).

    KpnError (one line) when no shipped model has that [model], or none is installed.
    """
    installed = [name for name in SHIPPED if RunFolder(SHIPPED_DIR / name).checkpoint.is_file()]
    if not installed:
        raise KpnError(f"{SHIPPED_DIR}: no shipped weights here: name weights ({mention('path')})")
    if config_path is None:
        if SHIPPED[0] not in installed:
            raise KpnError(f"{SHIPPED_DIR / SHIPPED[0]}: the shipped default model is missing")
        return SHIPPED_DIR / SHIPPED[0]
    wanted = load_config(config_path).model
    for name in installed:
        if load_config(RunFolder(SHIPPED_DIR / name).config).model == wanted:
            return SHIPPED_DIR / name
    raise KpnError(
        f"{config_path}: no shipped weights have its [model] (shipped: "
        f"{', '.join(installed)} in {SHIPPED_DIR}): name weights ({mention('path')})"
    )
