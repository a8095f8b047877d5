"""What the tests of kpn.vkdt share: the presets, kpn-t's trailer text, sample weights and
``.lut`` files built by hand (with struct and numpy, independently of kpn.vkdt.lut), tiny
checkpoints, and ``python -m kpn`` run in-process.

A plain module, not a conftest.py: tests/conftest.py is imported as ``conftest``, which a
second conftest.py here would replace for every test module. Test modules import these
helpers by name (pytest puts this folder on the path); their fixtures wrap them.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from kpn.__main__ import main
from kpn.config import Config, apply_overrides, load_config
from kpn.io.checkpoint import TrainingState, save_checkpoint
from kpn.model.mlp import load_weights
from kpn.model.network import KPN
from kpn.train.optim import make_optimizer
from kpn.vkdt.lut import lut_bytes
from kpn.vkdt.lut_text import LutTrailer, format_trailer

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
DESIGN = ROOT / "tests" / "fixtures" / "design-vkdt.toml"  # vkdt-runnable


def preset(name: str, *overrides: str) -> Config:
    return apply_overrides(load_config(CONFIGS / f"{name}.toml"), list(overrides))


def head_preset(*overrides: str) -> Config:
    """vkdt HEAD as shipped (W 64, patch8x8), two hidden layers to keep the files small."""
    return apply_overrides(
        load_config(CONFIGS / "vkdt-head.toml"), ["model.n_hidden=2", *overrides]
    )


# --- kpn-t's trailer text --------------------------------------------------------------
# kpn-t's text for its shipped config.h (6 hidden layers, WIDTH 64, APPLY_PLAIN,
# ALPHA_CONST, leaky relu, LOSS_SMAPE), as its init() formats it; o-lut adds one "\n".
VKDT_SHIPPED_TRAILER = (
    "lut contains weights for\n"
    "multi-level kernel predicting mlp with:\n"
    "6 hidden layers\n"
    "64 network width\n"
    "plain kernel weight activation\n"
    "const alpha blending activation\n"
    "leaky relu mlp activation\n"
    "SMAPE loss"
)
SHIPPED = LutTrailer(6, 64, "plain", "const", "leaky_relu", "smape")


def trailer_text(
    n_hidden: int, width: int, kernel: str, alpha: str, activation: str, loss: str | None
) -> str:
    """format_trailer's text for these settings (our names), in LutTrailer's order."""
    return format_trailer(
        n_hidden=n_hidden,
        width=width,
        kernel_activation=kernel,
        alpha_activation=alpha,
        activation=activation,
        loss=loss,
    )


def old_trailer(width: int, kernel: str, alpha: str) -> str:
    """kpn-t's text before 2024-01-18: six lines, no mlp activation, no loss."""
    return (
        "lut contains weights for\nmulti-level kernel predicting mlp with:\n"
        f"6 hidden layers\n{width} network width\n"
        f"{kernel} kernel weight activation\n{alpha} alpha blending activation"
    )


def full_trailer(width: int, kernel: str, alpha: str, activation: str, loss: str) -> str:
    return old_trailer(width, kernel, alpha) + f"\n{activation} mlp activation\n{loss} loss"


# --- weights and files -----------------------------------------------------------------
def make_matrices(width: int, n_hidden: int, in_features: int, seed: int) -> list[np.ndarray]:
    """[W0 [W, in_features], hidden [W, W]..., W_out [16, W]], all exact in float16.

    Multiples of 1/64 below 16 in magnitude, never zero, so a value read back from the
    wrong place or a zero where a weight belongs cannot pass by accident.
    """
    rng = np.random.default_rng(seed)
    shapes = [(width, in_features)] + [(width, width)] * (n_hidden - 1) + [(16, width)]
    out = []
    for shape in shapes:
        values = rng.integers(1, 1000, size=shape) * rng.choice([-1, 1], size=shape)
        out.append((values / 64).astype(np.float32))
    return out


def tiny_matrices() -> list[np.ndarray]:
    """W0[o][i] = (32o + i)/1024 and W_out[o][i] = -(32o + i + 1)/512: exact in f16."""
    w0 = np.arange(32 * 32, dtype=np.float32).reshape(32, 32) / 1024
    w_out = -(np.arange(16 * 32, dtype=np.float32).reshape(16, 32) + 1) / 512
    return [w0, w_out]


def dead_unit_matrices(width: int = 64) -> list[np.ndarray]:
    """W 64, 2 hidden layers, first-layer units 32.. unused (hidden 0's columns 32.. are 0)."""
    w0, hidden, w_out = make_matrices(width, 2, width, seed=11)
    hidden[:, 32:] = 0.0
    return [w0, hidden, w_out]


def small_lut_bytes() -> bytes:
    """A valid W=32, n_hidden=1 file without trailer, to corrupt."""
    return lut_bytes(make_matrices(32, 1, 32, seed=1), in_width=32, trailer=None)


def vkdt_lut(width: int, n_hidden: int, trailer: str | None, seed: int = 0) -> bytes:
    """A file as kpn-t + o-lut write it: header, f16 block whose unused rows hold random
    values (vkdt initialises the whole buffer), then the text and one newline."""
    header = struct.pack("<IHBBII", 1234, 2, 1, 16, width, (n_hidden + 1) * width)
    rng = np.random.default_rng(seed)
    block = (rng.integers(-512, 512, size=(n_hidden + 1) * width * width) / 256).astype("<f2")
    return header + block.tobytes() + (b"" if trailer is None else trailer.encode() + b"\n")


def with_header(raw: bytes, **fields: int) -> bytes:
    names = ["magic", "version", "channels", "datatype", "wd", "ht"]
    values = dict(zip(names, struct.unpack_from("<IHBBII", raw), strict=True))
    values.update(fields)
    return struct.pack("<IHBBII", *(values[n] for n in names)) + raw[16:]


def floats_of(path: Path, dtype: str = "<f2") -> tuple[tuple[int, ...], np.ndarray]:
    """(header fields, float32 block) parsed here with numpy, independently of kpn.vkdt.lut."""
    raw = path.read_bytes()
    header = struct.unpack_from("<IHBBII", raw)
    wd, ht = header[4], header[5]
    return header, np.frombuffer(raw, dtype=dtype, count=wd * ht, offset=16).astype(np.float32)


# --- checkpoints and commands ----------------------------------------------------------
def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def listing(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` with its bytes: 'nothing written' means this is unchanged."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def tiny_config(tmp_path: Path, **model: object) -> Config:
    """The design's settings with one hidden layer of width 32: a 2 x 32 x 32 block."""
    table = "\n".join(f"{key} = {value!r}".replace("'", '"') for key, value in model.items())
    path = tmp_path / "tiny.toml"
    path.write_text(f"[model]\nwidth = 32\nn_hidden = 1\n{table}\n", encoding="utf-8")
    return load_config(path)


def save_model(path: Path, config: Config, matrices: list[np.ndarray] | None = None) -> Path:
    """A checkpoint of ``config`` with these weights (or vkdt's random ones), step 3."""
    torch.manual_seed(0)
    model = KPN(config.model)
    if matrices is not None:
        load_weights(model.mlp, [torch.from_numpy(m) for m in matrices])
    optimizer = make_optimizer(model.parameters(), config.train)
    state = TrainingState(
        config, model.state_dict(), optimizer.state_dict(), 3, 0, 48, torch.get_rng_state()
    )
    save_checkpoint(path, state)
    return path
