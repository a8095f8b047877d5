"""model.kernel_taps = "star21" (docs/design.md §20): star15 and its transpose, 5x5
without its corners. Its taps by hand, the filter they make, a star15 network grown into
it (checkpoint and .lut), what vkdt is told, and a run. The whole network with it:
gradcheck (test_network.py), C loops (test_native.py), SURE's one pass (test_linearised.py),
tiles (test_tiling.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from kpn.config import KERNEL_TAP_COUNTS, Config, load_config
from kpn.errors import KpnError
from kpn.infer.weights import load_weights
from kpn.io.checkpoint import TrainingState, load_checkpoint, save_checkpoint
from kpn.model.apply import apply_kernel_padded, kernel_weights
from kpn.model.features import KERNEL_TAPS, STAR21_TAPS, kernel_taps
from kpn.model.network import KPN
from kpn.model.sampling import pad_symmetric
from kpn.train.cli import main as train_main
from kpn.train.loop import initialise
from kpn.train.widen import star21_outputs
from kpn.vkdt.export import export_lut

from conftest import SPEC_STAR15_TAPS, assert_one_line_error
from model_shared import design_lut, noise_profiles, random_image

pytestmark = pytest.mark.usefixtures("one_thread")

# star21's six taps past star15's, in their order, and the star15 tap each is the transpose
# of (its index in star15's order, design §4)
NEW_TAPS = [(-1, -2), (1, -2), (-2, 0), (2, 0), (-1, 2), (1, 2)]
TRANSPOSED = [1, 9, 0, 14, 5, 13]  # (-2,-1), (-2,1), (0,-2), (0,2), (2,-1), (2,1)


def test_taps_are_star15_then_its_transpose() -> None:
    assert list(STAR21_TAPS) == [*SPEC_STAR15_TAPS, *NEW_TAPS]
    square = {(dx, dy) for dx in range(-2, 3) for dy in range(-2, 3)}
    corners = {(-2, -2), (2, -2), (-2, 2), (2, 2)}
    assert set(STAR21_TAPS) == square - corners
    assert [SPEC_STAR15_TAPS[k] for k in TRANSPOSED] == [(dy, dx) for dx, dy in NEW_TAPS]
    assert kernel_taps(15) == tuple(SPEC_STAR15_TAPS) and kernel_taps(21) == STAR21_TAPS
    assert {name: len(taps) for name, taps in KERNEL_TAPS.items()} == KERNEL_TAP_COUNTS
    with pytest.raises(ValueError, match="16 taps"):
        kernel_taps(16)


@pytest.mark.parametrize("tap", range(21))
def test_one_hot_kernel_reads_its_tap(tap: int) -> None:
    """All weight on tap k: I(p) = X(p + tap_k), read inside the image by hand."""
    x = random_image(1, 9, 11, seed=3)
    weights = torch.zeros(1, 21, 9, 11, dtype=x.dtype)
    weights[:, tap] = 1.0
    filtered = apply_kernel_padded(pad_symmetric(x, 2, 2, 2, 2), weights, None)
    dx, dy = STAR21_TAPS[tap]
    torch.testing.assert_close(
        filtered[..., 2:-2, 2:-2], x[..., 2 + dy : 9 - 2 + dy, 2 + dx : 11 - 2 + dx]
    )


def test_silent_new_taps_filter_as_star15() -> None:
    """Softmax logits of -1e4 on the six new taps weigh exp(-1000) = 0: star15's filter."""
    x = pad_symmetric(random_image(2, 6, 7, seed=4), 2, 2, 2, 2)
    generator = torch.Generator().manual_seed(5)
    star15 = 20 * torch.randn(2, 15, 6, 7, generator=generator, dtype=x.dtype)
    star21 = torch.cat((star15, torch.full((2, 6, 6, 7), -1e4, dtype=x.dtype)), 1)
    torch.testing.assert_close(
        apply_kernel_padded(x, kernel_weights(star21, "softmax"), None),
        apply_kernel_padded(x, kernel_weights(star15, "softmax"), None),
    )


@pytest.mark.parametrize("kernels", [1, 2])
def test_star21_outputs_by_hand(kernels: int) -> None:
    """Row r of the star15 matrix holds r: each kernel's rows come out as its 15 logits,
    their transposes' copies, its alpha."""
    star15 = torch.arange(16.0 * kernels).view(-1, 1).expand(-1, 3)
    rows = []
    for first in range(0, 16 * kernels, 16):
        rows += [first + k for k in range(15)] + [first + k for k in TRANSPOSED] + [first + 15]
    torch.testing.assert_close(
        star21_outputs(star15), torch.tensor(rows).float().view(-1, 1).expand(-1, 3)
    )


def star21(config: Config, init: Path, **model: object) -> Config:
    return dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, kernel_taps="star21", **model),
        train=dataclasses.replace(config.train, init=str(init)),
    )


def assert_kernels_grown(grown: KPN, trained: KPN, copies: int = 1) -> None:
    """Every level's network output: each star15 kernel's logits, their transposes', its
    alpha; ``copies`` 2: the one kernel of a .lut as the luma's and the chroma's."""
    noisy = random_image(1, 14, 12, seed=6, dtype=torch.float32)
    profile = noise_profiles(1).float()
    with torch.no_grad():
        big, small = grown.inspect(noisy, profile), trained.inspect(noisy, profile)
    for wide, narrow in zip(big.levels, small.levels, strict=True):
        kernels = narrow.kernel.unflatten(1, (-1, 16)).repeat(1, copies, 1, 1, 1)
        want = torch.cat((kernels[:, :, :15], kernels[:, :, TRANSPOSED], kernels[:, :, 15:]), 2)
        torch.testing.assert_close(wide.kernel, want.flatten(1, 2))


@pytest.mark.parametrize("chroma", [False, True])
def test_initialise_grows_a_star15_checkpoint(tmp_path: Path, chroma: bool) -> None:
    config = load_config("design")
    config = dataclasses.replace(
        config, model=dataclasses.replace(config.model, chroma_kernel=chroma, n_hidden=2)
    )
    torch.manual_seed(0)
    trained = KPN(config.model)
    path = tmp_path / "star15.pt"
    state = TrainingState(config, trained.state_dict(), {}, 0, 0, 0, torch.get_rng_state())
    save_checkpoint(path, state)
    grown_config = star21(config, path, width=80)  # wider too: both at once
    grown = KPN(grown_config.model)
    initialise(grown, grown_config)
    assert_kernels_grown(grown, trained)
    # nor is a star21 checkpoint cut down to star15
    star21_path = tmp_path / "star21.pt"
    save_checkpoint(
        star21_path, dataclasses.replace(state, config=grown_config, model=grown.state_dict())
    )
    back = dataclasses.replace(
        config, train=dataclasses.replace(config.train, init=str(star21_path))
    )
    with pytest.raises(KpnError) as error:
        initialise(KPN(back.model), back)
    assert_one_line_error(error, star21_path, "star15 kernels for star21")


def test_initialise_grows_a_lut_with_the_chroma_kernel(tmp_path: Path) -> None:
    lut = tmp_path / "shared.lut"
    config, shared = design_lut(lut)
    grown_config = star21(config, lut, chroma_kernel=True)
    grown = KPN(grown_config.model)
    initialise(grown, grown_config)
    assert_kernels_grown(grown, shared, copies=2)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"precision": "vkdt-f16"}, ["model.kernel_taps = 'star21'", "float16"]),
        ({"block_transpose": True}, ["model.kernel_taps = 'star21'", "block transpose"]),
    ],
)
def test_vkdt_arithmetic_is_refused(changes: dict[str, object], words: list[str]) -> None:
    config = dataclasses.replace(load_config("design").model, kernel_taps="star21", **changes)
    with pytest.raises(KpnError) as error:
        config.validate("x.toml")
    assert_one_line_error(error, "x.toml", *words)


def test_export_refuses_in_one_line(tmp_path: Path) -> None:
    config = load_config("design")
    config = dataclasses.replace(
        config, model=dataclasses.replace(config.model, kernel_taps="star21")
    )
    with pytest.raises(KpnError) as error:
        export_lut(KPN(config.model).mlp, config, tmp_path / "w.lut")
    assert_one_line_error(error, tmp_path / "w.lut", "22 outputs", "model.kernel_taps", "16")
    assert not list(tmp_path.iterdir())


def test_a_run_draws_its_kernels_and_infer_loads_it(
    tmp_path: Path, tiny_config: Callable[..., Path]
) -> None:
    """Training with the images drawn (the kernels' stars read 21 taps); the run loads."""
    run = tmp_path / "run"
    config = tiny_config('model.kernel_taps="star21"', "train.image_every=1")
    assert train_main(["--config", str(config), "--out", str(run)]) == 0
    assert not (run / "weights.lut").exists()
    assert load_checkpoint(run / "checkpoint.pt").config.model.kernel_taps == "star21"
    loaded = load_weights(run)
    noisy = random_image(1, 12, 10, seed=6, dtype=torch.float32)
    with torch.no_grad():
        out = loaded.model(noisy, noise_profiles(1).float())
    assert out.shape == noisy.shape and torch.isfinite(out).all()
