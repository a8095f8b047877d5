"""Tests for kpn.vkdt.lut_model: the config a .lut file's weights belong to."""

from __future__ import annotations

from pathlib import Path

import pytest

from kpn.config import apply_overrides, load_config
from kpn.errors import KpnError
from kpn.model.network import KPN
from kpn.vkdt.export import lut_payload
from kpn.vkdt.lut import read_lut
from kpn.vkdt.lut_model import config_for_lut

from vkdt_shared import DESIGN, vkdt_lut


def test_config_for_lut_without_trailer_takes_config(tmp_path: Path) -> None:
    (tmp_path / "bare.lut").write_bytes(vkdt_lut(32, 6, None))
    lut = read_lut(tmp_path / "bare.lut")
    config = load_config(DESIGN)
    imported = config_for_lut(lut, config, "design")
    assert (imported.config, imported.source, imported.notes) == (config, "design", ())
    with pytest.raises(KpnError, match="no trailer"):
        config_for_lut(lut)
    with pytest.raises(KpnError, match="not both"):
        config_for_lut(lut, config, "design", "vkdt-head-w32")


def test_config_for_lut_restores_the_section_exactly(tmp_path: Path) -> None:
    """Every [model] and [infer] key, not only those kpn-t's trailer records."""
    config = apply_overrides(
        load_config(DESIGN),
        ["model.levels=5", "model.down=binomial5", "model.precision=vkdt-f16", "infer.tile=64"],
    )
    model = KPN(config.model)
    (tmp_path / "w.lut").write_bytes(lut_payload(model.mlp, config))
    imported = config_for_lut(read_lut(tmp_path / "w.lut"))
    assert imported.config.model == config.model
    assert imported.config.infer == config.infer
    assert imported.config.train.loss == config.train.loss
    assert (imported.source, imported.notes) == ("the file's kpn section", ())
