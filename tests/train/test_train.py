"""train() from Python: a Plan, a seed and a device, no command line; one train_step."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from kpn.config import Config, load_config
from kpn.data.loader import TrainingBatch
from kpn.errors import KpnError
from kpn.io.checkpoint import load_checkpoint
from kpn.model.network import KPN
from kpn.train.cli import main
from kpn.train.distributed import Distributed
from kpn.train.loop import Plan, Trainee, train, train_step
from kpn.train.loss import kpn_loss
from kpn.train.optim import make_optimizer

pytestmark = pytest.mark.usefixtures("one_thread")
ONE_PROCESS = Distributed(rank=0, world=1)


def test_train_from_python_equals_the_command_line(
    tmp_path: Path, tiny_config: Callable[..., Path], same_weights: Callable[[Path, Path], None]
) -> None:
    config = tiny_config("train.steps=3")
    result = train(Plan(load_config(config), tmp_path / "python"), seed=5)
    assert main(["--config", str(config), "--out", str(tmp_path / "cli"), "--seed", "5"]) == 0
    same_weights(tmp_path / "python" / "checkpoint.pt", tmp_path / "cli" / "checkpoint.pt")
    saved = load_checkpoint(tmp_path / "python" / "checkpoint.pt").model
    for name, value in result.model.state_dict().items():
        assert torch.equal(value, saved[name]), name  # the model returned is the trained one
    assert result.initial is not None and result.final is not None
    assert result.final.loss < result.initial.loss


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for CUDA where there is none")
def test_cuda_without_cuda_names_the_parameter_and_the_option(
    tmp_path: Path, tiny_config: Callable[..., Path], error_line: Callable[[], str]
) -> None:
    config = tiny_config()
    with pytest.raises(KpnError, match=r"^device=cuda: no CUDA device is available$"):
        train(Plan(load_config(config), tmp_path / "run"), device="cuda")
    assert not (tmp_path / "run").exists()
    assert main(["--config", str(config), "--out", str(tmp_path / "run"), "--device", "cuda"]) == 2
    assert error_line() == "error: --device cuda: no CUDA device is available"
    assert not (tmp_path / "run").exists()


def test_a_device_torch_does_not_know(
    tmp_path: Path, tiny_config: Callable[..., Path], error_line: Callable[[], str]
) -> None:
    config = tiny_config()
    with pytest.raises(KpnError, match=r"^device=gpu0: not a device"):
        train(Plan(load_config(config), tmp_path / "run"), device="gpu0")
    assert main(["--config", str(config), "--out", str(tmp_path / "run"), "--device", "gpu0"]) == 2
    assert error_line().startswith("error: --device gpu0: not a device")
    assert not (tmp_path / "run").exists()


# --- one step -------------------------------------------------------------------------------
@pytest.fixture
def trainee(tiny_config: Callable[..., Path]) -> tuple[Trainee, Config]:
    config = load_config(tiny_config())
    torch.manual_seed(0)
    model = KPN(config.model)
    return Trainee(model, make_optimizer(model.parameters(), config.train)), config


def tiles(seed: int, reference_scale: float = 1.0) -> TrainingBatch:
    """Two 16x16 tiles: a noisy image around its reference, the noise profile of them."""
    generator = torch.Generator().manual_seed(seed)
    reference = torch.rand(2, 3, 16, 16, generator=generator) * 0.5 + 0.25
    noisy = reference + 0.05 * torch.randn(2, 3, 16, 16, generator=generator)
    noise_ab = torch.tensor([[2000.0, 4.0], [500.0, 1.0]])
    return TrainingBatch(noisy, reference * reference_scale, noise_ab)


def test_a_step_reports_its_loss_and_moves_the_weights(
    trainee: tuple[Trainee, Config],
) -> None:
    state, config = trainee
    batch = tiles(1)
    settings = config.train
    with torch.no_grad():
        output = state.model(batch.noisy, batch.noise_ab)
        expected = kpn_loss(output, batch.reference, settings.loss, settings.loss_reduction).item()
    before = {name: value.clone() for name, value in state.model.state_dict().items()}

    outcome = train_step(state, state.model, batch, 0.01, settings, ONE_PROCESS)
    assert not outcome.skipped
    assert outcome.loss == pytest.approx(expected, rel=1e-5)
    assert outcome.grad_norm > 0
    assert state.optimizer.param_groups[0]["lr"] == 0.01
    changed = [n for n, v in state.model.state_dict().items() if not torch.equal(v, before[n])]
    assert changed == list(before)  # every matrix learns
    assert state.step == 0 and state.skipped == 0  # the loop counts steps, not train_step


def test_a_non_finite_step_changes_nothing(trainee: tuple[Trainee, Config]) -> None:
    state, config = trainee
    train_step(state, state.model, tiles(1), 0.01, config.train, ONE_PROCESS)  # moments exist
    weights = {name: value.clone() for name, value in state.model.state_dict().items()}
    moments = [
        {key: value.clone() for key, value in entry.items()}
        for entry in state.optimizer.state.values()
    ]

    outcome = train_step(state, state.model, tiles(2, math.nan), 0.01, config.train, ONE_PROCESS)
    assert outcome.skipped and math.isnan(outcome.loss)
    for name, value in state.model.state_dict().items():
        assert torch.equal(value, weights[name]), name
    for entry, kept in zip(state.optimizer.state.values(), moments, strict=True):
        for key, value in entry.items():
            assert torch.equal(value, kept[key]), key
    assert all(p.grad is None for p in state.model.parameters())  # no NaN gradient lingers
