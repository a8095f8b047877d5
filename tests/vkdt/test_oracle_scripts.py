"""vkdt/set_config.sh (config.h as an exported graph asks) and vkdt/oracle.py (the
oracle's comparison and report), without vkdt: a config.h and graphs written here.
vkdt/oracle.sh itself needs vkdt and lavapipe (benchmarks/results/vkdt-oracle.md)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kpn.io.pfm import write_pfm

from vkdt_shared import ROOT, run

SET_CONFIG = ROOT / "vkdt" / "set_config.sh"
ORACLE_PY = ROOT / "vkdt" / "oracle.py"
# the lines of vkdt ce12d6ed's kpn-t/config.h that the series' build changes, as patches
# 0005 to 0008 leave them (their defaults)
CONFIG_H = """\
#pragma once
#define WIDTH 64 // 32 or 64
#define N_HIDDEN_LAYERS 6
#define GRAD_SCALE 128.0
#define APPLY_ACTIVATION APPLY_PLAIN
#define ALPHA_ACTIVATION ALPHA_CONST
// #define POST_MLP_DIFF
#define PRE_MLP_DIFF
#define NO_ALIAS
#define MLP_ACTIVATION MLP_ACTIVATION_LEAKY_RELU
#define LOSS LOSS_SMAPE
// #define INPUT_STAR15_SNR // star15's taps in units of the noise sigma
#define DENOISE_LEVELS 2 // apply.comp filters levels 0..DENOISE_LEVELS-1
// #define POST_MLP_DIFF_MIRROR_COARSE // with POST_MLP_DIFF
#define KPN_LEVELS 6 // kpn (inference) runs the network on this many levels
"""

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="set_config.sh needs gcc")


def defines(config_h: Path) -> dict[str, str]:
    """What the C preprocessor defines in ``config_h``: name -> value."""
    out = subprocess.run(
        ["gcc", "-E", "-dM", "-x", "c", str(config_h)], capture_output=True, text=True, check=True
    ).stdout
    found = {}
    for line in out.splitlines():
        _, name, *value = line.split(maxsplit=2)
        found[name] = value[0].strip() if value else ""
    return found


@needs_gcc
def test_set_config_builds_the_design(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run(
        capsys, "export", ROOT / "weights" / "design", "-o", tmp_path / "d.lut",
        "--vkdt-cfg", tmp_path / "cfg", "--noise", "20000", "40",
    )  # fmt: skip
    assert code == 0
    config_h = tmp_path / "config.h"
    config_h.write_text(CONFIG_H, encoding="utf-8")
    done = subprocess.run(
        ["bash", str(SET_CONFIG), str(config_h), str(tmp_path / "cfg" / "kpn-infer-pfm.cfg")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    got = defines(config_h)
    assert {k: got.get(k) for k in ("WIDTH", "APPLY_ACTIVATION", "ALPHA_ACTIVATION")} == {
        "WIDTH": "64", "APPLY_ACTIVATION": "APPLY_SOFTMAX", "ALPHA_ACTIVATION": "ALPHA_SIGMOID",
    }  # fmt: skip
    assert (got["DENOISE_LEVELS"], got["KPN_LEVELS"]) == ("0", "4")
    for on in ("POST_MLP_DIFF", "INPUT_STAR15_SNR", "POST_MLP_DIFF_MIRROR_COARSE"):
        assert on in got
    for off in ("PRE_MLP_DIFF", "NO_ALIAS"):
        assert off not in got
    # run again: nothing left to change
    again = subprocess.run(
        ["bash", str(SET_CONFIG), str(config_h), str(tmp_path / "cfg" / "kpn-infer-pfm.cfg")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "config.h:" not in again.stdout.replace(str(config_h), "")


@needs_gcc
@pytest.mark.parametrize(
    ("graph", "words"),
    [("missing.cfg", "no such file"), ("plain.cfg", "no config.h lines")],
)
def test_set_config_bad_input(tmp_path: Path, graph: str, words: str) -> None:
    config_h = tmp_path / "config.h"
    config_h.write_text(CONFIG_H, encoding="utf-8")
    (tmp_path / "plain.cfg").write_text("module:i-pfm:main\n", encoding="utf-8")
    done = subprocess.run(
        ["bash", str(SET_CONFIG), str(config_h), str(tmp_path / graph)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert words in done.stderr and done.stderr.count("\n") == 1
    assert config_h.read_text(encoding="utf-8") == CONFIG_H


def oracle(*argv: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ORACLE_PY), *map(str, argv)], capture_output=True, text=True
    )


def test_compare_and_report(tmp_path: Path) -> None:
    """Two results with a known difference: the JSON, the table row and the verdict; one
    run outside the bound turns the verdict and the exit status."""
    rng = np.random.default_rng(0)
    clean = rng.uniform(0.1, 0.9, (6, 8, 3)).astype(np.float32)
    kpn = clean + np.float32(0.01)
    vkdt = kpn.copy()
    vkdt[2, 3, 1] += np.float32(1e-3)  # one value 1e-3 off
    case = tmp_path / "coffee"
    case.mkdir()
    write_pfm(case / "clean.pfm", clean)
    write_pfm(case / "kpn.pfm", kpn)
    write_pfm(case / "vkdt.pfm", vkdt, vkdt_rows=True)  # o-pfm's row order
    write_pfm(case / "noisy.pfm", clean + np.float32(0.05))
    for tree, file in (("designrne", "vkdt.pfm"), ("design", "vkdt.pfm")):
        done = oracle(
            "compare", case / file, case / "kpn.pfm", case / "clean.pfm", "--noisy",
            case / "noisy.pfm", "--json", case / f"result-{tree}-full.json",
            "--label", f"coffee full:{tree}:20000:40", "--seconds", 3,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    result = json.loads((case / "result-designrne-full.json").read_text())
    assert result["max_d"] == pytest.approx(1e-3, rel=1e-3)
    assert (result["over"], result["values"], result["width"], result["height"]) == (0, 144, 8, 6)
    assert result["psnr_kpn"] == pytest.approx(40.0, abs=1e-3)  # 0.01 everywhere
    args = [
        "report", tmp_path, "--out", tmp_path / "oracle.md", "--command", "bash vkdt/oracle.sh",
        "--vkdt", "ce12d6ed", "--kpn", "abc", "--driver", "Mesa", "--glslang", "12",
        "--trees", "design designrne", "--series", "0001-a.patch",
    ]  # fmt: skip
    (tmp_path / "train").mkdir()
    train = {
        "steps": 1,
        "frames": [
            {"frame": 0, "loss_kpn": 100.0, "loss_vkdt": 100.0, "max_d": 1e-4,
             "loss_envelope": 100.0, "max_d_envelope": 0.0},
            {"frame": 1, "loss_kpn": 99.0, "loss_vkdt": 99.5, "max_d": 2e-4,
             "loss_envelope": 99.4, "max_d_envelope": 1e-4},
        ],
        "weights": [{"matrix": 0, "identical": 0.5, "max_d": 1e-3, "moved_kpn": 1e-3,
                     "moved_vkdt": 2e-3}],
        "weights_envelope": [{"matrix": 0, "identical": 0.75, "max_d": 2e-3,
                              "moved_kpn": 2e-3, "moved_vkdt": 2e-3}],
    }  # fmt: skip
    defects = {
        "steps": 1,
        "frames": [
            {"frame": 0, "loss_kpn": 100.0, "loss_vkdt": 100.0, "max_d": 1e-4},
            {"frame": 1, "loss_kpn": 98.0, "loss_vkdt": 98.0, "max_d": 1e-4},
        ],
        "weights": [],
    }  # fmt: skip
    (tmp_path / "train" / "train.json").write_text(json.dumps(train))
    (tmp_path / "train" / "train-defects.json").write_text(json.dumps(defects))
    (tmp_path / "train-design").mkdir()
    (tmp_path / "train-design" / "train.json").write_text(json.dumps(defects))
    done = oracle(*args)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "oracle.md").read_text()
    assert "- command: `bash vkdt/oracle.sh`" in text and "**met** (1 runs)" in text
    assert "## kpn-t: 1 training steps in vkdt-cli against kpn" in text
    # frame, loss kpnt, kpn / kpnt - 1, kpnttrunc / kpnt - 1, the two max |d|, kpntdefects
    assert "| 1 | 99.500 | -0.503% | -0.101% | 2.0e-04 | 1.0e-04 | 98.000 | +0.000% |" in text
    assert "| W0 | 50.0% | 1.00e-03 | 1.00e-03 / 2.00e-03 |" in text
    assert "| W0 | 75.0% | 2.00e-03 | 2.00e-03 / 2.00e-03 |" in text
    design = text[text.index("## kpn-t: 1 training steps of the design in vkdt-cli") :]
    assert "| 1 | 98.000 | +0.000% | 1.0e-04 |" in design
    row = next(line for line in text.splitlines() if "| designrne |" in line)
    assert "| nearest | 1.00e-03 |" in row and "| 0 of 144 |" in row
    # the truncating tree is reported, not judged; a judged run past the bound is
    result["max_d"] = 0.01
    (case / "result-designrne-full.json").write_text(json.dumps(result))
    done = oracle(*args)
    assert done.returncode == 3
    assert "**missed** (1 of 1 runs outside it)" in (tmp_path / "oracle.md").read_text()


def test_report_without_results_is_one_line(tmp_path: Path) -> None:
    done = oracle(
        "report", tmp_path, "--out", tmp_path / "o.md", "--command", "c", "--vkdt", "v",
        "--kpn", "k", "--driver", "d", "--glslang", "g", "--trees", "t", "--series", "s",
    )  # fmt: skip
    assert done.returncode != 0 and "no result-*.json" in done.stderr
    assert not (tmp_path / "o.md").exists()
