"""Tests for kpn.vkdt.export: why vkdt's kpn module cannot run a model's file (docs/design.md
§10). The bytes of an export are test_vkdt_cli_export.py's."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from kpn.config import load_config
from kpn.infer.weights import load_weights
from kpn.model.network import KPN
from kpn.vkdt.export import export_lut, inference_layout_warning

from conftest import assert_one_line_error
from vkdt_shared import CONFIGS


def test_inference_layout_warning() -> None:
    assert inference_layout_warning(load_config(CONFIGS / "vkdt-head-w32.toml").model) is None
    message = inference_layout_warning(load_config(CONFIGS / "vkdt-head.toml").model)
    assert message is not None
    assert_one_line_error(message, "in_width 32")


def test_inference_layout_warning_for_features() -> None:
    design = dataclasses.replace(load_config(CONFIGS / "design.toml").model, width=32)
    message = inference_layout_warning(design)
    assert message is not None and "star15_snr" in message and "in_width" not in message
    both = inference_layout_warning(dataclasses.replace(design, width=64))
    assert both is not None
    assert_one_line_error(both, "star15_snr", "in_width 32")
    assert inference_layout_warning(dataclasses.replace(design, features="star15")) is None


def test_inference_layout_warning_for_the_guide(tmp_path: Path) -> None:
    """A guided model: vkdt cannot run it, and its .lut reads back into the same network."""
    config = load_config(CONFIGS / "design.toml")
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, guide="centre"))
    message = inference_layout_warning(config.model)
    assert message is not None
    assert_one_line_error(message, "model.guide = 'centre'", "star15_snr", "in_width 32")
    torch.manual_seed(0)
    model = KPN(config.model)
    path = tmp_path / "guided.lut"
    export_lut(model.mlp, config, path, dtype="f32")
    loaded = load_weights(path)
    assert loaded.config.model == config.model
    for got, want in zip(loaded.model.mlp.weights, model.mlp.weights, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
