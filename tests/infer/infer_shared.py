"""What the tests of kpn.infer share: a seeded design model saved every way kpn-infer reads
weights, generated images, what infer computes for them (:func:`expected`), ``kpn-infer``
run in-process, and a small DNG.

A plain module, not a conftest.py: tests/conftest.py is imported as ``conftest``, which a
second conftest.py here would replace for every test module. Test modules import these
helpers by name (pytest puts this folder on the path); their fixtures wrap them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
import torch

from kpn.config import Config, InferConfig, config_to_toml, load_config
from kpn.infer.cli import main
from kpn.infer.denoiser import inference_precision
from kpn.infer.sure import sure_blend, sure_blend_one_pass
from kpn.io.checkpoint import TrainingState, save_checkpoint
from kpn.model.linearised import probe_applies
from kpn.model.network import KPN, kpn_forward
from kpn.train.optim import make_optimizer
from kpn.vkdt.export import export_lut
from kpn.vkdt.lut import write_lut

ROOT = Path(__file__).resolve().parents[2]
DESIGN = ROOT / "tests" / "fixtures" / "design-vkdt.toml"  # the design as vkdt runs it
NOISE = ["--noise-a", "20000", "--noise-b", "4"]


def training_state(config: Config, model: KPN, step: int = 3) -> TrainingState:
    optimizer = make_optimizer(model.parameters(), config.train)
    return TrainingState(
        config,
        model.state_dict(),
        optimizer.state_dict(),
        step,
        0,
        0,
        torch.Generator().manual_seed(0).get_state(),
    )


def seeded_weights(folder: Path) -> SimpleNamespace:
    """A seeded design model as a checkpoint, a run directory, and .lut with and without
    trailer, written in ``folder``."""
    config = load_config(DESIGN)
    torch.manual_seed(1234)
    model = KPN(config.model)
    checkpoint = folder / "model.pt"
    save_checkpoint(checkpoint, training_state(config, model))
    run = folder / "run"
    run.mkdir()
    save_checkpoint(run / "checkpoint.pt", training_state(config, model))
    lut = folder / "model.lut"
    export_lut(model.mlp, config, lut)
    bare = folder / "bare.lut"
    write_lut(bare, [w.detach() for w in model.mlp.weights], in_width=32)
    lut_run = folder / "lut_run"
    lut_run.mkdir()
    export_lut(model.mlp, config, lut_run / "weights.lut")
    (lut_run / "config.toml").write_text(config_to_toml(config))
    return SimpleNamespace(
        config=config,
        model=model,
        checkpoint=checkpoint,
        run=run,
        lut=lut,
        bare=bare,
        lut_run=lut_run,
    )


def clean_image(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    y, x = y / max(height - 1, 1), x / max(width - 1, 1)
    return np.stack((0.2 + 0.6 * x, 0.1 + 0.7 * y, 0.5 - 0.3 * x * y), axis=-1).astype(np.float32)


def noisy_image(height: int, width: int, sigma: float = 0.03, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noisy = clean_image(height, width) + sigma * rng.standard_normal((height, width, 3))
    return noisy.astype(np.float32)


def expected(
    model: KPN,
    image: np.ndarray,
    a: float = 20000,
    b: float = 4,
    levels: int | None = None,
    precision: str = "auto",
    sure: bool = True,
) -> np.ndarray:
    """What infer computes untiled: the network at ``precision`` (auto: bf16 where native),
    blended by SURE (infer.sure's default) with infer.sure_divergence's divergence,
    [H,W,3]."""
    precision = inference_precision(precision, model.config.precision, torch.device("cpu"))
    config = dataclasses.replace(model.config, precision=precision)

    def network(image: np.ndarray) -> np.ndarray:
        noisy = torch.from_numpy(image).permute(2, 0, 1)[None].contiguous()
        with torch.no_grad():
            out = kpn_forward(noisy, torch.tensor([[a, b]]), model.mlp.weights, config, levels)
        return out.output[0].permute(1, 2, 0).float().numpy()

    def network_along(image: np.ndarray, signs: np.ndarray, step: float) -> tuple[np.ndarray, ...]:
        noisy, probe = (torch.from_numpy(x).permute(2, 0, 1)[None] for x in (image, signs))
        with torch.no_grad():
            out = kpn_forward(
                noisy.contiguous(), torch.tensor([[a, b]]), model.mlp.weights, config, levels,
                probe=probe, probe_step=step,
            ).output[0].permute(1, 2, 0).float().numpy()  # fmt: skip
        return np.ascontiguousarray(out[..., :3]), np.ascontiguousarray(out[..., 3:])

    infer = InferConfig()
    if not sure:
        return network(image)
    if infer.sure_divergence == "one_pass" and probe_applies(config):
        return sure_blend_one_pass(network_along, image, a, b, infer.sure_window, infer.sure_split)
    return sure_blend(network, image, a, b, infer.sure_window, infer.sure_split)


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.strip()]


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary files an interrupted write would leave."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# A 24 x 32 DNG as tests/io/test_raw.py builds it (LibRaw refuses sensors under 22 pixels).
def write_dng(path: Path) -> Path:
    rng = np.random.default_rng(5)
    pixels = (1024 + 1500 + 200 * rng.standard_normal((24, 32))).astype(np.uint16)
    tags = [
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (50707, "B", 4, (1, 1, 0, 0), True),  # DNGBackwardVersion
        (50708, "s", 0, "Kpn Test Camera", True),  # UniqueCameraModel
        (271, "s", 0, "KpnMaker", True),  # Make
        (272, "s", 0, "KpnModel X-1", True),  # Model
        (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
        (33422, "B", 4, (0, 1, 1, 2), True),  # CFAPattern RGGB
        (50710, "B", 3, (0, 1, 2), True),  # CFAPlaneColor
        (50711, "H", 1, 1, True),  # CFALayout
        (50713, "H", 2, (1, 1), True),  # BlackLevelRepeatDim
        (50714, "H", 1, 1024, True),  # BlackLevel
        (50717, "H", 1, 5120, True),  # WhiteLevel
        (50721, "2i", 9, (1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1), True),
        (50778, "H", 1, 21, True),  # CalibrationIlluminant1: D65
        (50728, "2I", 3, (1, 1, 1, 1, 1, 1), True),  # AsShotNeutral
        (34855, "H", 1, 800, True),  # ISOSpeedRatings
    ]
    tifffile.imwrite(path, pixels, photometric=32803, extratags=tags, subfiletype=0)
    return path
