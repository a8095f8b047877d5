"""Tests for kpn.train.from_lut: a .lut file as a training checkpoint that
``train.py --resume`` continues from."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kpn.config import load_config
from kpn.io.checkpoint import load_checkpoint
from kpn.model.network import KPN
from kpn.train.from_lut import checkpoint_from_lut
from kpn.train.optim import make_optimizer
from kpn.vkdt.export import lut_payload
from kpn.vkdt.lut import read_lut

from vkdt_shared import DESIGN, run, save_model, tiny_config, tiny_matrices


def test_imported_checkpoint_resumes_like_a_training_checkpoint(tmp_path: Path) -> None:
    """The state train.py --resume loads: model and a fresh optimiser of the config."""
    config = load_config(DESIGN)
    source = load_checkpoint(save_model(tmp_path / "a.pt", config))
    model = KPN(config.model)
    model.load_state_dict(source.model)
    (tmp_path / "a.lut").write_bytes(lut_payload(model.mlp, config))
    state = checkpoint_from_lut(read_lut(tmp_path / "a.lut"), config)
    resumed = KPN(config.model)
    resumed.load_state_dict(state.model)
    for got, want in zip(resumed.mlp.weights, model.mlp.weights, strict=True):
        # the file holds float16: the weights come back rounded to it
        torch.testing.assert_close(got, want.half().float(), rtol=0, atol=0)
    optimizer = make_optimizer(resumed.parameters(), config.train)
    optimizer.load_state_dict(state.optimizer)
    assert optimizer.state_dict()["state"] == {}  # fresh: no moments yet
    assert state.rng.dtype == torch.uint8


def test_imported_checkpoint_trains_with_train_py_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kpn.train.cli import main as train_main

    config = tiny_config(tmp_path, features="star15")
    save_model(tmp_path / "t.pt", config, tiny_matrices())
    assert run(capsys, "export", tmp_path / "t.pt", "-o", tmp_path / "t.lut")[0] == 0
    assert (
        run(
            capsys,
            "import",
            tmp_path / "t.lut",
            "--config",
            tmp_path / "tiny.toml",
            "-o",
            tmp_path / "i.pt",
        )[0]
        == 0
    )
    overrides = ["train.steps=1", "data.workers=0", "data.batch=1", "data.validation_count=1"]
    argv = ["--resume", str(tmp_path / "i.pt"), "--out", str(tmp_path / "run")]
    assert train_main([*argv, *(a for o in overrides for a in ("--set", o))]) == 0
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt").step == 1
