"""kpn: the PyTorch reference implementation of vkdt's multilevel KPN denoiser.

``kpn.load(path)`` and ``kpn.denoise(image, (a, b))`` run trained weights on arrays
(:mod:`kpn.api`); ``KPN`` and ``kpn_forward`` are the network itself.

The names below are imported when first used (PEP 562), not with the package: the
commands import ``kpn`` before torch, so that a Ctrl-C while torch loads (a second or
more) ends them with one line (:func:`kpn.cli.exit_with`), not a traceback.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the names are, for type checkers and editors
    from kpn.api import Model as Model
    from kpn.api import denoise as denoise
    from kpn.api import load as load
    from kpn.config import Config as Config
    from kpn.config import ModelConfig as ModelConfig
    from kpn.config import load_config as load_config
    from kpn.errors import KpnError as KpnError
    from kpn.model.network import KPN as KPN
    from kpn.model.network import KPNOutput as KPNOutput
    from kpn.model.network import LevelOutput as LevelOutput
    from kpn.model.network import kpn_forward as kpn_forward

_HOMES = {
    "KPN": "kpn.model.network",
    "Config": "kpn.config",
    "KPNOutput": "kpn.model.network",
    "KpnError": "kpn.errors",
    "LevelOutput": "kpn.model.network",
    "Model": "kpn.api",
    "ModelConfig": "kpn.config",
    "denoise": "kpn.api",
    "kpn_forward": "kpn.model.network",
    "load": "kpn.api",
    "load_config": "kpn.config",
}
__all__ = list(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'kpn' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # once: later lookups find it without this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
