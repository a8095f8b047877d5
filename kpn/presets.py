"""The presets and shipped models, package data read through ``importlib.resources``.

A preset is a config in ``kpn/configs/`` named without ``.toml`` (``quick``,
``vkdt-head``); ``configs/`` in a checkout is the same folder. The shipped models are
run folders in ``kpn/weights/``. Both travel inside the wheel, so an installed kpn runs
``kpn-train --config quick`` and ``kpn-infer photo.png --noise auto`` from any folder.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from kpn.errors import ParameterError

# setuptools installs package data as plain files, so the resources are paths
PRESETS = Path(str(files("kpn") / "configs"))
SHIPPED = Path(str(files("kpn") / "weights"))


def preset_names() -> list[str]:
    """The presets there are: the configs in :data:`PRESETS`, without ``.toml``."""
    return sorted(path.stem for path in PRESETS.glob("*.toml"))


def preset_path(name: str, parameter: str = "preset") -> Path:
    """The config file of preset ``name``; a one-line :class:`ParameterError` naming
    ``parameter`` and the presets there are for any other name."""
    path = PRESETS / f"{name}.toml"
    if Path(name).name != name or not path.is_file():
        available = ", ".join(preset_names()) or f"none: {PRESETS} is missing"
        raise ParameterError(parameter, name, f"no such preset (presets: {available})")
    return path


def is_preset_name(text: str) -> bool:
    """Whether ``text`` names a preset rather than a file: no folder, no extension."""
    return Path(text).name == text and not Path(text).suffix and text not in ("", ".", "..")
