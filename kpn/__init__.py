"""kpn: the PyTorch reference implementation of vkdt's multilevel KPN denoiser."""

from kpn.config import Config, ModelConfig, load_config
from kpn.errors import KpnError
from kpn.model import KPN, KPNOutput, LevelOutput, kpn_forward

__all__ = [
    "KPN",
    "Config",
    "KPNOutput",
    "KpnError",
    "LevelOutput",
    "ModelConfig",
    "kpn_forward",
    "load_config",
]
