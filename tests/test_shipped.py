"""The shipped models (weights/): infer.py runs them without --weights, and they never make
a photo worse than its input within the noise range they were trained for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kpn.data.synthesis import add_noise
from kpn.infer.cli import main
from kpn.infer.denoiser import Denoiser
from kpn.infer.weights import SHIPPED, SHIPPED_DIR, load_weights, shipped_weights
from kpn.io.images import srgb_to_linear
from kpn.io.pfm import read_pfm, write_pfm
from kpn.metrics import psnr
from kpn.vkdt.export import lut_holds

from conftest import assert_error_line

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
RECIPES = {
    "design-star21": "photos-star21-more.toml",
    "design-chroma": "photos-chroma-input.toml",
    "design": "photos-post-diff.toml",
    "vkdt-w32": "photos-vkdt-w32.toml",
}
DEFAULT = "design-star21"


def crop(name: str, rows: slice, columns: slice) -> np.ndarray:
    """A crop of a scikit-image photo (the benchmark's, never trained on), linear."""
    from skimage import data

    return srgb_to_linear(getattr(data, name)()[rows, columns].astype(np.float32) / 255)


@pytest.fixture(scope="module")
def photo_crop() -> np.ndarray:
    """A 96x96 crop of chelsea, linear."""
    return crop("chelsea", slice(100, 196), slice(200, 296))


def denoiser(name: str, sure: bool | None = None) -> Denoiser:
    loaded = load_weights(SHIPPED_DIR / name)
    return Denoiser.build(loaded.model, loaded.config.infer, sure=sure)


def test_every_shipped_model_is_complete():
    assert SHIPPED[0] == DEFAULT and set(SHIPPED) == set(RECIPES)
    for name in SHIPPED:
        folder = SHIPPED_DIR / name
        model = load_weights(folder).config.model  # chroma_kernel, star21: no .lut holds it
        assert (folder / "weights.lut").is_file() == lut_holds(model)
        for part in ("checkpoint.pt", "config.toml", "MODEL.md"):
            assert (folder / part).is_file(), folder / part
            assert (folder / part).stat().st_size < 400_000  # tens of KB
        card = (folder / "MODEL.md").read_text()
        assert "reproduce" in card and RECIPES[name] in card


def test_shipped_weights_follow_the_config():
    assert shipped_weights() == SHIPPED_DIR / DEFAULT
    for name, recipe in RECIPES.items():
        assert shipped_weights(str(CONFIGS / recipe)) == SHIPPED_DIR / name


def test_infer_without_weights_runs_the_default_model(tmp_path: Path, photo_crop, capsys):
    source, output = tmp_path / "photo.pfm", tmp_path / "out.pfm"
    write_pfm(source, photo_crop)
    assert main([str(source), "-o", str(output), "--noise-a", "1e4", "--noise-b", "20"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("shipped weights") and str(SHIPPED_DIR / DEFAULT) in first
    expected = denoiser(DEFAULT)(photo_crop, 1e4, 20.0)
    np.testing.assert_array_equal(read_pfm(output), expected)


def test_infer_without_weights_refuses_a_config_nothing_was_shipped_for(tmp_path, capsys):
    source = tmp_path / "photo.pfm"
    write_pfm(source, np.full((16, 16, 3), 0.5, np.float32))
    code = main([str(source), "--config", str(CONFIGS / "vkdt-head.toml"), "--noise-a", "1"])
    assert code == 2
    assert_error_line(capsys.readouterr().err, "no shipped weights have its [model]")
    assert not (tmp_path / "photo.denoised.pfm").exists()


# darktable's Sony ILCE-7M3 at ISO 800 (base-ISO-like noise), the training law's corner, and
# ISO 3200 pushed +1 EV
LOW_NOISE = {
    "ISO 800": (58.306, 0.51205),
    "lowest trained": (100.0, 0.1),
    "ISO 3200 +1": (1366.5, 3.8006),
}
# chelsea's fur, and astronaut's corner of fine grain that the network alone smooths away
# (0.5 to 0.8 dB below the input at these noises): SURE must keep it
CROPS = {
    "chelsea": (slice(100, 196), slice(200, 296)),
    "astronaut": (slice(0, 96), slice(0, 96)),
}


@pytest.mark.parametrize("name", [DEFAULT, "design-chroma", "design"])
@pytest.mark.parametrize("photo", list(CROPS))
@pytest.mark.parametrize("noise", list(LOW_NOISE))
def test_design_models_never_worse_than_their_input_at_low_noise(name, photo, noise):
    a, b = LOW_NOISE[noise]
    clean_image = crop(photo, *CROPS[photo])
    clean = torch.from_numpy(clean_image).permute(2, 0, 1)
    noisy = add_noise(clean, torch.tensor([a, b]), torch.Generator().manual_seed(5))
    noisy = np.ascontiguousarray(noisy.permute(1, 2, 0).numpy())
    denoised = denoiser(name)(noisy, a, b)
    assert psnr(denoised, clean_image) >= psnr(noisy, clean_image)


@pytest.mark.parametrize("name", [DEFAULT, "design"])
@pytest.mark.parametrize("sure", [True, False])
def test_design_models_tend_to_the_input_as_noise_vanishes(photo_crop, sure, name):
    """Told almost no noise, the model leaves a clean photo nearly as it is, with SURE's
    blend and without."""
    model = denoiser(name, sure)
    gaps = [psnr(model(photo_crop, a, a / 1000), photo_crop) for a in (1e4, 1e2, 1.0)]
    assert gaps == sorted(gaps)  # closer to the input as the noise shrinks
    assert gaps[-1] > 50.0
