"""Tests for kpn.vkdt.export: a model's ``.lut`` reads back as the same network, also one
that vkdt cannot run. The bytes of an export are test_vkdt_cli_export.py's; which vkdt
runs which model is test_target.py's."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from kpn.config import load_config
from kpn.infer.weights import load_weights
from kpn.model.network import KPN
from kpn.vkdt.export import export_lut
from kpn.vkdt.target import TARGETS, cannot_run

from vkdt_shared import CONFIGS


def test_a_guided_model_reads_back_as_the_same_network(tmp_path: Path) -> None:
    """A guided model: no vkdt runs it, and its .lut reads back into the same network."""
    config = load_config(CONFIGS / "design.toml")
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, guide="centre"))
    for target in TARGETS:
        assert any(
            reason.startswith("model.guide = 'centre'") for reason in cannot_run(config, target)
        )
    torch.manual_seed(0)
    model = KPN(config.model)
    path = tmp_path / "guided.lut"
    export_lut(model.mlp, config, path, dtype="f32")
    loaded = load_weights(path)
    assert loaded.config.model == config.model
    for got, want in zip(loaded.model.mlp.weights, model.mlp.weights, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
