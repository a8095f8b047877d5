"""train.init of a narrower checkpoint: the wider network starts as the trained one, and
its new units learn (kpn.train.widen)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from kpn.config import load_config
from kpn.errors import KpnError
from kpn.io.checkpoint import TrainingState, save_checkpoint
from kpn.model.network import KPN
from kpn.train.loop import initialise
from kpn.train.widen import widened

from conftest import assert_one_line_error

pytestmark = pytest.mark.usefixtures("one_thread")


def small_config(**model: object):
    config = load_config("design")
    changes = {"width": 32, "n_hidden": 3, "blend": "post_diff", **model}
    return dataclasses.replace(config, model=dataclasses.replace(config.model, **changes))


def noisy(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.2 + 0.6 * torch.rand(1, 3, 20, 17, generator=generator)


PROFILE = torch.tensor([[3e4, 20.0]])


@pytest.mark.parametrize("chroma", [False, True])
def test_the_wider_network_starts_as_the_narrower(chroma: bool) -> None:
    config = small_config(chroma_kernel=chroma)
    torch.manual_seed(0)
    narrow = KPN(config.model)
    wide = KPN(dataclasses.replace(config.model, width=48))
    matrices = widened(narrow.mlp.weights, wide.mlp.weights)
    for matrix, small in zip(matrices, narrow.mlp.weights, strict=True):
        rows, columns = small.shape
        assert torch.equal(matrix[:rows, :columns], small)
        assert not matrix[:rows, columns:].any()  # the new units feed nothing yet
    assert matrices[1][32:].abs().min() > 0  # ... but are fed: their rows are fresh
    with torch.no_grad():
        for layer, matrix in zip(wide.mlp.layers, matrices, strict=True):
            layer.weight.copy_(matrix)
        torch.testing.assert_close(wide(noisy(), PROFILE), narrow(noisy(), PROFILE))


def test_the_new_units_get_gradients_at_once() -> None:
    config = small_config()
    torch.manual_seed(0)
    narrow = KPN(config.model)
    wide = KPN(dataclasses.replace(config.model, width=48))
    with torch.no_grad():
        for layer, matrix in zip(
            wide.mlp.layers, widened(narrow.mlp.weights, wide.mlp.weights), strict=True
        ):
            layer.weight.copy_(matrix)
    wide(noisy(), PROFILE).square().mean().backward()
    for layer in wide.mlp.layers[1:]:  # from the new units to the old ones and outputs
        assert layer.weight.grad[:32, 32:].abs().max() > 0


def test_a_network_reading_more_inputs_starts_as_the_one_without() -> None:
    """model.chroma_input appends 30 input channels: their columns start at 0."""
    config = small_config(width=64, chroma_kernel=True)
    torch.manual_seed(0)
    without = KPN(config.model)
    grown = KPN(dataclasses.replace(config.model, chroma_input=True))
    matrices = widened(without.mlp.weights, grown.mlp.weights)
    assert matrices[0].shape == (64, 62) and not matrices[0][:, 32:].any()
    with torch.no_grad():
        for layer, matrix in zip(grown.mlp.layers, matrices, strict=True):
            layer.weight.copy_(matrix)
        torch.testing.assert_close(grown(noisy(), PROFILE), without(noisy(), PROFILE))


def test_initialise_widens_a_narrower_checkpoint_and_refuses_other_models(
    tmp_path: Path,
) -> None:
    config = small_config()
    torch.manual_seed(0)
    narrow = KPN(config.model)
    path = tmp_path / "narrow.pt"
    state = TrainingState(config, narrow.state_dict(), {}, 0, 0, 0, torch.get_rng_state())
    save_checkpoint(path, state)
    wider = dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, width=48),
        train=dataclasses.replace(config.train, init=str(path)),
    )
    wide = KPN(wider.model)
    initialise(wide, wider)
    with torch.no_grad():
        torch.testing.assert_close(wide(noisy(1), PROFILE), narrow(noisy(1), PROFILE))
    other = dataclasses.replace(wider, model=dataclasses.replace(wider.model, levels=3))
    with pytest.raises(KpnError) as error:
        initialise(KPN(other.model), other)
    assert_one_line_error(error, path, "narrower model.width")
    # nor is a wider checkpoint cut down
    wide_path = tmp_path / "wide.pt"
    save_checkpoint(wide_path, dataclasses.replace(state, config=wider, model=wide.state_dict()))
    narrower = dataclasses.replace(
        config, train=dataclasses.replace(config.train, init=str(wide_path))
    )
    with pytest.raises(KpnError) as error:
        initialise(KPN(narrower.model), narrower)
    assert_one_line_error(error, wide_path, "narrower model.width")
