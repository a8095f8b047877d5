"""kpn: the PyTorch reference implementation of vkdt's multilevel KPN denoiser.

``kpn.load(path)`` and ``kpn.denoise(image, (a, b))`` run trained weights on arrays
(:mod:`kpn.api`); ``KPN`` and ``kpn_forward`` are the network itself.
"""

from kpn.api import Model, denoise, load
from kpn.config import Config, ModelConfig, load_config
from kpn.errors import KpnError
from kpn.model.network import KPN, KPNOutput, LevelOutput, kpn_forward

__all__ = [
    "KPN",
    "Config",
    "KPNOutput",
    "KpnError",
    "LevelOutput",
    "Model",
    "ModelConfig",
    "denoise",
    "kpn_forward",
    "load",
    "load_config",
]
