"""The benchmark scripts: their math by hand, and their ``--quick`` runs end to end."""

from __future__ import annotations

import argparse
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
from kpn.model.network import KPN
from kpn.vkdt.export import export_lut

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the scripts import their siblings (report.py, ...)

import ablation  # noqa: E402
import design  # noqa: E402
import quality  # noqa: E402

import quality_data  # noqa: E402


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
    condition = quality_data.camera_condition(12800, 1434.2, 7.3766, 3)
    assert condition.a == pytest.approx(1434.2 * 64)
    assert condition.b == pytest.approx(7.3766 * 8)
    assert condition.level == pytest.approx(math.sqrt(91788.8 + 65535 * 0.18 * 59.0128) / 65535)
    assert condition.domain == "linear" and condition.name == "ISO 12800 +3 EV"


def test_srgb_condition_is_the_same_gaussian_on_the_65535_scale() -> None:
    condition = quality_data.srgb_condition(25)
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

    condition = quality_data.CONDITIONS[1]
    clean = np.full((64, 64, 3), 0.3, np.float32)
    out = quality.stabilised(identity)(clean, condition)
    white = quality.anscombe(np.array(1.0), condition.b / 65535, math.sqrt(condition.a) / 65535)
    assert seen == [pytest.approx(1 / white)]
    # a noiseless flat image comes back within the inverse's bias correction (1/8 count)
    np.testing.assert_allclose(out, clean, rtol=2e-3)
    gaussian = quality_data.srgb_condition(15)
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


def test_quality_ensemble_counts() -> None:
    assert quality.ensemble_counts("2, 4,8") == (2, 4, 8)
    for bad in ("", "3", "2,", "1", "two"):
        with pytest.raises(argparse.ArgumentTypeError, match="among 2, 4, 8"):
            quality.ensemble_counts(bad)


@pytest.mark.slow
def test_quality_quick_end_to_end(tmp_path: Path, lut: Path) -> None:
    out = tmp_path / "results"
    done = run_script(
        "quality.py", "--quick", "--model", f"seeded={lut}", "--out", out, "--profile-test",
        "--ensemble", "2",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = read_csv(out / "quality.csv")
    told = [f"kpn seeded, no SURE, noise told x{f:g}" for f in quality.WRONG_PROFILE]
    methods = ["noisy", "kpn seeded", "kpn seeded, no SURE", "kpn seeded, ensemble 2", *told]
    methods += ["non-local means", "wavelet", "CBM3D"]
    assert sorted({r["method"] for r in rows}) == sorted(methods)
    assert len(rows) == 2 * 2 * len(methods)  # photos x noises x methods
    report = (out / "quality.md").read_text()
    assert "## Never worse than the input" in report
    # the worst photo's gain, per model and noise: a PSNR difference and the photo's name
    section = report.split("## Never worse than the input")[1].split("## Every score")[0]
    line = next(row for row in section.splitlines() if row.startswith("| kpn seeded |"))
    gain, photo = line.split("|")[2].split()
    assert float(gain) == pytest.approx(
        min(
            float(r["psnr_linear"]) - float(n["psnr_linear"])
            for r in rows
            for n in rows
            if r["method"] == "kpn seeded" and n["method"] == "noisy"
            and r["image"] == n["image"] and r["condition"] == n["condition"]
            and r["condition"] == quality_data.QUICK_CONDITIONS[0].name
        ),
        abs=0.006,
    )  # fmt: skip
    assert photo.strip("()") in {"astronaut", "chelsea"}
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
        if (
            row["condition"] == "sRGB sigma 25"
            and row["method"] != "noisy"
            and "told" not in row["method"]
        ):
            assert float(row["psnr_srgb"]) > noisy[row["image"]], row
    text = (out / "quality.md").read_text()
    assert "| CBM3D |" in text and "(a, b) = (9.179e+04, 59.01)" in text
    for picture in ("quality.png", "quality_crops.png"):
        assert (out / picture).read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
def test_quality_kpn_only_leaves_out_the_classical_methods(tmp_path: Path, lut: Path) -> None:
    out = tmp_path / "results"
    done = run_script("quality.py", "--quick", "--model", f"s={lut}", "--out", out, "--only-kpn")
    assert done.returncode == 0, done.stderr
    methods = {r["method"] for r in read_csv(out / "quality.csv")}
    assert methods == {"noisy", "kpn s", "kpn s, no SURE"}


@pytest.mark.slow
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


@pytest.mark.slow
def test_float16_cost_quick_end_to_end(tmp_path: Path, lut: Path) -> None:
    """vkdt-f16 against fp32 of the same weights: PSNRs per photo and both matrix paths,
    and a cost of float16 rounding only (the two outputs differ, but by little)."""
    out = tmp_path / "results"
    done = run_script("float16_cost.py", "--quick", "--weights", lut, "--out", out)
    assert done.returncode == 0, done.stderr
    rows = read_csv(out / "float16-cost.csv")
    assert [r["photo"] for r in rows] == list(quality_data.PHOTOS[:2])
    for row in rows:
        for path in ("coopmat", "fallback"):
            difference = float(row[f"max |d| vkdt-f16 {path}"])
            assert 0 < difference < 0.05
            cost = float(row[f"psnr vkdt-f16 {path}"]) - float(row["psnr fp32"])
            assert abs(cost) < 0.5
    report = (out / "float16-cost.md").read_text()
    assert "| ISO 12800 +3 EV |" in report and "Worst photo and level:" in report


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


@pytest.mark.slow
def test_ablation_unknown_variant(tmp_path: Path) -> None:
    done = run_script("ablation.py", "--quick", "--only", "nosuch", "--out", tmp_path / "o")
    assert done.returncode == 2 and "nosuch" in done.stderr and not (tmp_path / "o").exists()


# --- speed ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_speed_quick_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "results"
    done = run_script("speed.py", "--quick", "--baseline", "HEAD", "--out", out)
    assert done.returncode == 0, done.stderr
    rows = read_csv(out / "speed.csv")
    assert [(r["section"], r["variant"]) for r in rows] == [
        ("train", "HEAD fp32"), ("train", "HEAD bf16"), ("train", "fp32"), ("train", "bf16"),
        ("infer", "fp32"), ("infer", "bf16"), ("infer", "fp32"), ("infer", "bf16"),
        ("threads", "2 threads"), ("threads", "2 processes"),
    ]  # fmt: skip
    baseline, baseline_bf16, *others = [r for r in rows if r["section"] == "train"]
    # the baseline's kpn is the temporary worktree's, the others this checkout's
    assert baseline["kpn"] == baseline_bf16["kpn"] != others[0]["kpn"] == str(ROOT / "kpn")
    for row in rows[:8]:
        fraction = float(row["gflop"]) / float(row["seconds"]) / float(row["limit_gflops"])
        assert 0 < fraction < 1.5
    for row in rows[4:8]:
        assert float(row["peak_rss_mb"]) > float(row["image_mb"]) > 0
    text = (out / "speed.md").read_text()
    assert "| mlp |" in text and "| band |" in text and "| backward |" in text
    assert "| HEAD fp32 |" in text and "| HEAD bf16 |" in text
    worktrees = subprocess.run(
        ["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True
    )
    assert "baseline" not in worktrees.stdout  # removed again


@pytest.mark.slow
def test_quality_cbm3d_at_and_classical_from(tmp_path: Path, lut: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    mid = quality_data.QUICK_CONDITIONS[0].name
    done = run_script(
        "quality.py", "--quick", "--model", f"s={lut}", "--out", first, "--cbm3d-at", mid
    )
    assert done.returncode == 0, done.stderr
    rows = read_csv(first / "quality.csv")
    assert {r["condition"] for r in rows if r["method"] == "CBM3D"} == {mid}
    assert "| CBM3D |" in (first / "quality.md").read_text()
    done = run_script(
        "quality.py", "--quick", "--model", f"s={lut}", "--out", second,
        "--classical-from", first / "quality.csv",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    again = read_csv(second / "quality.csv")
    classical = [r for r in rows if r["method"] in quality.CLASSICAL]
    reused = [r for r in again if r["method"] in quality.CLASSICAL]
    assert sorted(map(str, reused)) == sorted(map(str, classical))
    # the kpn rows are recomputed from the same noisy inputs: the same scores but for the
    # last float digits, which differed by 3.6e-5 dB in some runs on a loaded machine (the
    # order of a multi-threaded sum); other noisy inputs would move them 0.01 dB and more
    mine = [float(r["psnr_linear"]) for r in again if r["method"] == "kpn s"]
    before = [float(r["psnr_linear"]) for r in rows if r["method"] == "kpn s"]
    assert mine == pytest.approx(before, abs=1e-3)
    bad = run_script("quality.py", "--quick", "--model", f"s={lut}", "--cbm3d-at", "ISO 1")
    assert bad.returncode == 2 and "unknown noise" in bad.stderr


# --- design: the candidates and their curves ------------------------------------------------
def test_design_candidates_resolve_to_valid_configs() -> None:
    base = load_config(design.BASE_CONFIG)
    for name in design.CANDIDATES:
        config = apply_overrides(base, design.settings(name, 600))
        assert config.train.steps == 600 and config.train.val_every == 100
        assert config.data.source == "clean"  # the photos, with dead leaves mixed in
    star15 = apply_overrides(base, design.settings("star15", 600))
    assert (star15.model.features, star15.model.width, star15.train.loss) == ("star15", 32, "smape")
    psnr_loss = apply_overrides(base, design.settings("loss-psnr", 600))
    assert (psnr_loss.train.loss, psnr_loss.data.texture_candidates) == ("psnr", 4)


def test_design_psnr_at_takes_the_last_validation_reached() -> None:
    curve = design.Curve("x", 0, [20.0, 30.0, 31.0], [0, 500, 1000], 25.0)
    assert design.psnr_at(curve, 999.5) == 30.0
    assert design.psnr_at(curve, 1000) == 31.0
    assert math.isnan(design.psnr_at(curve, -1))


def test_design_bf16_candidate_trains_the_design_with_bf16_products() -> None:
    base = load_config(design.BASE_CONFIG)
    fp32 = apply_overrides(base, design.settings("design", 600))
    bf16 = apply_overrides(base, design.settings("design-bf16", 600))
    assert (fp32.train.precision, bf16.train.precision) == ("model", "bf16")
    assert fp32.model == bf16.model and bf16.training_model.precision == "bf16"


# --- error_bands: where the error lies -----------------------------------------------------
def test_error_bands_add_up_and_white_noise_fills_them_by_area() -> None:
    """Luma and chroma, octave by octave, add up to the mean square exactly (Parseval);
    white noise of variance 1 puts 1/3 in the luma, and in its finest band (periods below
    3 px: spatial frequencies above 1/3) its share of the frequency square, 1 - pi / 9."""
    import error_bands

    rng = np.random.default_rng(0)
    error = rng.standard_normal((128, 160, 3))
    row = error_bands.band_rows(error, rng.standard_normal(error.shape))
    parts = [row[f"{part} {band}"] for part in ("luma", "chroma") for band in error_bands.BANDS]
    assert sum(parts) == pytest.approx(row["whole"], rel=1e-9)
    luma = sum(row[f"luma {band}"] for band in error_bands.BANDS)
    assert luma == pytest.approx(1 / 3, rel=0.03)
    assert row[f"luma {error_bands.BANDS[0]}"] / luma == pytest.approx(1 - math.pi / 9, abs=0.02)


def test_error_bands_detail_kept_is_one_plus_the_regression_slope() -> None:
    """An error of -0.3 times the clean image: 70% of its finest detail kept, nothing else."""
    import error_bands

    clean = np.random.default_rng(1).standard_normal((64, 64, 3))
    row = error_bands.band_rows(-0.3 * clean, clean)
    assert row["luma finest detail kept"] == pytest.approx(0.7)
    assert row["chroma finest detail kept"] == pytest.approx(0.7)
    assert row["chroma finest rest"] == pytest.approx(0.0, abs=1e-20)


@pytest.mark.slow
def test_error_bands_quick_end_to_end(tmp_path: Path, lut: Path) -> None:
    out = tmp_path / "results"
    done = run_script("error_bands.py", "--quick", "--model", f"s={lut}", "--out", out)
    assert done.returncode == 0, done.stderr
    report = (out / "error-bands.md").read_text()
    assert "## ISO 12800 +3 EV" in report and "| whole |" in report
    bad = run_script("error_bands.py", "--quick", "--noises", "99", "--out", out)
    assert bad.returncode == 2 and "--noises '99'" in bad.stderr


@pytest.mark.slow
def test_quality_sure_split_rows(tmp_path: Path, lut: Path) -> None:
    """--sure-split adds each model with a SURE weight for the luma and one for the chroma."""
    out = tmp_path / "results"
    done = run_script(
        "quality.py", "--quick", "--model", f"s={lut}", "--out", out, "--only-kpn", "--sure-split"
    )
    assert done.returncode == 0, done.stderr
    methods = {r["method"] for r in read_csv(out / "quality.csv")}
    assert methods == {"noisy", "kpn s", "kpn s, no SURE", "kpn s, SURE luma and chroma"}
