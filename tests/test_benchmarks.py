"""The benchmark scripts: their math by hand, and their ``--quick`` runs end to end."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kpn.config import apply_overrides, load_config
from kpn.export import export_lut
from kpn.model import KPN

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the scripts import their sibling report.py

import ablation  # noqa: E402
import quality  # noqa: E402


def run_script(
    name: str, *argv: object, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(BENCHMARKS / name), *map(str, argv)]
    environment = os.environ | (env or {})
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, check=False, env=environment
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def lut(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded design model's weights with their config trailer."""
    config = load_config(ROOT / "configs/design.toml")
    torch.manual_seed(7)
    path = tmp_path_factory.mktemp("weights") / "design.lut"
    export_lut(KPN(config.model).mlp, config, path)
    return path


# --- quality: noise settings and the variance-stabilising transform ----------------------
def test_camera_condition_pushes_the_profile() -> None:
    # pushing 3 EV multiplies the signal by 8: the variance a + b x by 64 and 8
    condition = quality.camera_condition(12800, 1434.2, 7.3766, 3)
    assert condition.a == pytest.approx(1434.2 * 64)
    assert condition.b == pytest.approx(7.3766 * 8)
    assert condition.level == pytest.approx(math.sqrt(91788.8 + 65535 * 0.18 * 59.0128) / 65535)
    assert condition.domain == "linear" and condition.name == "ISO 12800 +3 EV"


def test_srgb_condition_is_the_same_gaussian_on_the_65535_scale() -> None:
    condition = quality.srgb_condition(25)
    assert condition.b == 0
    assert math.sqrt(condition.a) / 65535 == pytest.approx(25 / 255)


@pytest.mark.parametrize("photons", [2.0, 11.0, 55.0, 900.0])
def test_anscombe_stabilises_and_inverts_without_bias(photons: float) -> None:
    alpha, sigma = 59.0 / 65535, math.sqrt(91789.0) / 65535
    x = photons * alpha
    rng = np.random.default_rng(0)
    z = alpha * rng.poisson(photons, 1_000_000) + rng.normal(0, sigma, 1_000_000)
    stable = quality.anscombe(z, alpha, sigma)
    assert stable.std() == pytest.approx(1.0, abs=0.015)
    # the exact unbiased inverse of the mean is the mean of the signal; the algebraic
    # inverse (d/2)^2 - 3/8 - (sigma/alpha)^2 is off by 11% at 2 photons
    assert quality.inverse_anscombe(np.array(stable.mean()), alpha, sigma) == pytest.approx(
        x, rel=0.01
    )


def test_stabilised_denoiser_sees_unit_noise_and_round_trips() -> None:
    seen = []

    def identity(image: np.ndarray, sigma: float) -> np.ndarray:
        seen.append(sigma)
        return image

    condition = quality.CONDITIONS[1]
    clean = np.full((64, 64, 3), 0.3, np.float32)
    out = quality.stabilised(identity)(clean, condition)
    white = quality.anscombe(np.array(1.0), condition.b / 65535, math.sqrt(condition.a) / 65535)
    assert seen == [pytest.approx(1 / white)]
    # a noiseless flat image comes back within the inverse's bias correction (1/8 count)
    np.testing.assert_allclose(out, clean, rtol=2e-3)
    gaussian = quality.srgb_condition(15)
    quality.stabilised(identity)(clean, gaussian)
    assert seen[-1] == pytest.approx(15 / 255)


def test_scores_by_hand() -> None:
    clean = np.full((32, 32, 3), 0.25, np.float32)
    perfect = quality.scores(clean, clean, "linear")
    assert perfect["psnr_linear"] == math.inf and perfect["ssim"] == pytest.approx(1.0)
    shifted = quality.scores(clean + 0.01, clean, "linear")
    assert shifted["psnr_linear"] == pytest.approx(40.0, abs=1e-3)  # 10 log10(1 / 1e-4)
    clipped = quality.scores(np.full_like(clean, 2.0), np.ones_like(clean), "srgb")
    assert clipped["psnr_srgb"] == math.inf  # scored as displayed: clipped to [0, 1]


def test_quality_quick_end_to_end(tmp_path: Path, lut: Path) -> None:
    out = tmp_path / "results"
    done = run_script("quality.py", "--quick", "--model", f"seeded={lut}", "--out", out)
    assert done.returncode == 0, done.stderr
    rows = read_csv(out / "quality.csv")
    methods = ["noisy", "kpn seeded", "non-local means", "wavelet", "CBM3D"]
    assert sorted({r["method"] for r in rows}) == sorted(methods)
    assert len(rows) == 2 * 2 * len(methods)  # photos x noises x methods
    for row in rows:
        if row["method"] == "noisy":
            assert float(row["seconds"]) == 0
        else:
            assert float(row["seconds"]) > 0
        assert 0 < float(row["ssim"]) <= 1
    # every method improves on the noisy input at sigma 25, the seeded network included
    noisy = {r["image"]: float(r["psnr_srgb"]) for r in rows
             if r["method"] == "noisy" and r["condition"] == "sRGB sigma 25"}  # fmt: skip
    for row in rows:
        if row["condition"] == "sRGB sigma 25" and row["method"] != "noisy":
            assert float(row["psnr_srgb"]) > noisy[row["image"]], row
    text = (out / "quality.md").read_text()
    assert "| CBM3D |" in text and "(a, b) = (9.179e+04, 59.01)" in text
    for picture in ("quality.png", "quality_crops.png"):
        assert (out / picture).read_bytes().startswith(b"\x89PNG")


def test_quality_bad_weights_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "results"
    done = run_script(
        "quality.py", "--quick", "--model", f"x={tmp_path / 'none.lut'}", "--out", out
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "none.lut" in done.stderr
    assert "Traceback" not in done.stderr and not out.exists()
    done = run_script("quality.py", "--quick", "--model", "nameless", "--out", out)
    assert done.returncode == 2 and "NAME=" in done.stderr and not out.exists()


# --- ablation ------------------------------------------------------------------------------
@pytest.mark.parametrize("key", list(ablation.VARIANTS))
def test_ablation_variants_are_valid_configs(key: str) -> None:
    base = load_config(ROOT / ablation.BASE_CONFIG)
    config = apply_overrides(base, ablation.overrides(key, 500, quick=False))
    assert config.train.steps == 500 and config.train.warmup_steps == 50
    for name, value in ablation.VARIANTS[key][1].items():
        section, field = name.split(".")
        assert getattr(getattr(config, section), field) == value


def test_every_ablation_question_compares_known_variants() -> None:
    asked = {key for members in ablation.QUESTIONS.values() for key in members}
    assert asked == set(ablation.VARIANTS)
    assert all(len(members) >= 2 for members in ablation.QUESTIONS.values())


def test_ablation_quick_end_to_end_and_resume(tmp_path: Path) -> None:
    out, work = tmp_path / "results", tmp_path / "work"
    done = run_script("ablation.py", "--quick", "--out", out, "--work", work)
    assert done.returncode == 0, done.stderr
    rows = read_csv(out / "ablation.csv")
    assert {(r["variant"], r["seed"]) for r in rows} == {
        (key, seed) for key in ablation.QUICK_VARIANTS for seed in ("0", "1")
    }
    assert all(float(r["psnr_noisy"]) == float(rows[0]["psnr_noisy"]) for r in rows)
    by_seed = {(r["variant"], r["seed"]): float(r["psnr_denoised"]) for r in rows}
    assert by_seed["base", "0"] != by_seed["base", "1"]  # seeds train different models
    text = (out / "ablation.md").read_text()
    assert "### Pyramid levels" in text and "| 2 levels |" in text
    # a second run trains nothing: every result is read back from its run directory
    again = run_script("ablation.py", "--quick", "--out", out, "--work", work)
    assert again.returncode == 0
    assert read_csv(out / "ablation.csv") == rows


def test_ablation_unknown_variant(tmp_path: Path) -> None:
    done = run_script("ablation.py", "--quick", "--only", "nosuch", "--out", tmp_path / "o")
    assert done.returncode == 2 and "nosuch" in done.stderr and not (tmp_path / "o").exists()


# --- speed ---------------------------------------------------------------------------------
def test_speed_quick_end_to_end(tmp_path: Path) -> None:
    # Inductor needs minutes of C++ compiling on 2 cores even for 64x64: with Dynamo
    # disabled the compiled variants run eagerly, which tests the plumbing, not the compiler
    out = tmp_path / "results"
    done = run_script("speed.py", "--quick", "--out", out, env={"TORCH_COMPILE_DISABLE": "1"})
    assert done.returncode == 0, done.stderr
    rows = read_csv(out / "speed.csv")
    assert {(r["variant"], r["task"]) for r in rows} == {
        ("eager-fp32", "forward"), ("eager-fp32", "train step"), ("eager-fp32", "inference"),
        ("compiled-fp32", "forward"), ("compiled-fp32", "train step"),
    }  # fmt: skip
    for row in rows:
        assert 0 < float(row["fraction"]) < 1.5 and float(row["peak_rss_mb"]) > 50
    assert "| design, quick, long | compiled-fp32 | forward |" in (out / "speed.md").read_text()
