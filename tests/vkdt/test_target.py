"""Tests for kpn.vkdt.target: which vkdt runs a model (vkdt ce12d6ed with kpn's patch
series, or as it is), the config.h it needs there, and the graphs and ``.lut`` that
``python -m kpn export --vkdt-cfg`` writes for the shipped design (golden files in
tests/vkdt/golden, the graphs vkdt/oracle.sh ran through vkdt-cli)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kpn.config import Config
from kpn.vkdt.lut import read_lut
from kpn.vkdt.lut_text import KPN_SECTION_HEAD
from kpn.vkdt.target import (
    PATCHES,
    TARGETS,
    cannot_run,
    inference_differences,
    needed_patches,
    training_differences,
    training_patches,
    vkdt_build,
)

from conftest import assert_error_line
from vkdt_shared import ROOT, listing, preset, run

GOLDEN = Path(__file__).parent / "golden"
SERIES_DIR = ROOT / "vkdt" / "patches"
SHIPPED = ROOT / "weights"
SWITCHES = ("INPUT_STAR15_SNR", "DENOISE_LEVELS", "POST_MLP_DIFF_MIRROR_COARSE", "KPN_LEVELS")


def shipped(name: str) -> Config:
    return preset(f"../weights/{name}/config")


def patch_numbers(reasons: list[str]) -> set[str]:
    return {number for reason in reasons for number in re.findall(r"\b(00\d\d)\b", reason)}


# --- the builds -----------------------------------------------------------------------------
def test_head_build_of_the_shipped_preset_is_vkdts_config_h() -> None:
    build = vkdt_build(preset("vkdt-head"), "head")
    assert build.defines == (
        "#define WIDTH 64",
        "#define N_HIDDEN_LAYERS 6",
        "#define GRAD_SCALE 128.0",
        "#define APPLY_ACTIVATION APPLY_PLAIN",
        "#define ALPHA_ACTIVATION ALPHA_CONST",
        "// #define POST_MLP_DIFF",
        "#define PRE_MLP_DIFF",
        "#define NO_ALIAS",
        "#define MLP_ACTIVATION MLP_ACTIVATION_LEAKY_RELU",
        "#define LOSS LOSS_SMAPE",
    )
    assert (build.no_alias, build.down, build.up, build.levels) == (
        True,
        "binomial5",
        "bilinear",
        6,
    )


def test_series_build_of_the_design_sets_the_four_switches() -> None:
    build = vkdt_build(shipped("design"), "series")
    assert build.defines[-4:] == (
        "#define INPUT_STAR15_SNR",
        "#define DENOISE_LEVELS 0",
        "#define POST_MLP_DIFF_MIRROR_COARSE",
        "#define KPN_LEVELS 4",
    )
    assert "#define POST_MLP_DIFF" in build.defines
    assert (build.down, build.up, build.levels) == ("box2", "bspline", 4)
    # vkdt's behaviour is each switch's default: the W 32 preset's series build sets them so
    w32 = vkdt_build(preset("vkdt-head-w32"), "series").defines[-4:]
    assert w32 == (
        "// #define INPUT_STAR15_SNR",
        "#define DENOISE_LEVELS 2",
        "// #define POST_MLP_DIFF_MIRROR_COARSE",
        "#define KPN_LEVELS 6",
    )


def test_the_switches_are_the_lines_the_patches_add_to_config_h() -> None:
    """Each switch the series build writes is a config.h line that its patch adds, with
    the default the patch gives it being vkdt's behaviour (the W 32 preset's build)."""
    added = {}
    for patch in sorted(SERIES_DIR.glob("0*.patch")):
        text = patch.read_text(encoding="utf-8")
        for hunk in text.split("diff --git ")[1:]:
            if hunk.startswith("a/src/pipe/modules/kpn-t/config.h"):
                for line in hunk.splitlines():
                    found = re.match(r"\+((?:// )?#define (\w+)(?: (\d+))?)", line)
                    if found:
                        added[found[2]] = found[1]
    assert set(added) == set(SWITCHES)
    defaults = vkdt_build(preset("vkdt-head-w32"), "series").defines[-4:]
    for name, line in zip(SWITCHES, defaults, strict=True):
        assert added[name] == line


def test_patch_names_follow_the_series() -> None:
    files = (SERIES_DIR / "series").read_text(encoding="utf-8").split()
    assert [name[:4] for name in files] == list(PATCHES)
    for name, what in zip(files, PATCHES.values(), strict=True):
        if " " not in what:  # the switches: the file names them
            assert what.replace("_", "-") in name.replace("_", "-")


@pytest.mark.parametrize(
    ("blend", "down", "up", "defines", "no_alias"),
    [
        ("mix", "box2", "bspline", ("// #define POST_MLP_DIFF", "// #define PRE_MLP_DIFF"), 0),
        ("post_diff", "box2", "bspline", ("#define POST_MLP_DIFF",), 0),
        ("add", "box2", "bspline", ("#define PRE_MLP_DIFF", "// #define NO_ALIAS"), 0),
        ("add", "binomial5", "bilinear", ("#define PRE_MLP_DIFF", "#define NO_ALIAS"), 1),
    ],
)
def test_pyramid_builds(
    blend: str, down: str, up: str, defines: tuple[str, ...], no_alias: int
) -> None:
    inputs = "detail" if blend == "add" else "mip"
    config = preset(
        "design", f"model.blend={blend}", f"model.mlp_input={inputs}", f"model.down={down}",
        f"model.up={up}",
    )  # fmt: skip
    build = vkdt_build(config, "series")
    assert set(defines) <= set(build.defines)
    assert build.no_alias == bool(no_alias)
    assert cannot_run(config, "series") == []
    # ce12d6ed's mip.comp is box2_vkdt: the same model is refused there, naming patch 0003
    head = cannot_run(config, "head")
    assert ("0003" in patch_numbers(head)) == (not no_alias)


# --- who runs what --------------------------------------------------------------------------
def test_the_series_runs_the_shipped_design_and_head_names_every_patch_it_needs() -> None:
    design = shipped("design")
    assert cannot_run(design, "series") == []
    numbers = ("0002", "0003", "0004", "0005", "0006", "0007", "0008", "0010")
    assert needed_patches(design, "series") == [f"{n} ({PATCHES[n]})" for n in numbers]
    head = cannot_run(design, "head")
    assert patch_numbers(head) == {f"{n:04}" for n in (2, 3, 4, 5, 6, 7, 8, 10)}
    assert inference_differences(design, "series") == [
        "model.precision = 'fp32': vkdt computes in float16"
    ]


def test_shipped_vkdt_w32_needs_the_transpose_fix() -> None:
    w32 = shipped("vkdt-w32")
    assert cannot_run(w32, "series") == []
    assert [p[:4] for p in needed_patches(w32, "series")] == ["0001", "0002"]
    assert patch_numbers(cannot_run(w32, "head")) == {"0002"}
    assert [p[:4] for p in needed_patches(w32, "head")] == ["0001"]  # to compile


@pytest.mark.parametrize("name", ["vkdt-head", "vkdt-head-w32"])
def test_the_head_presets_run_on_head_only(name: str) -> None:
    config = preset(name)
    layout = "kpn-t" if config.model.width == 32 else "head"
    config = preset(name, "model.vkdt_head_layout=true") if layout == "head" else config
    assert cannot_run(config, "head", layout) == []
    series = cannot_run(config, "series", layout)
    assert any("model.block_transpose = true" in r and "patch 0002 fixes" in r for r in series)
    assert any(r.startswith("model.down = 'box2_vkdt'") for r in series) == (
        config.model.down == "box2_vkdt"
    )


def test_layouts_and_level_counts() -> None:
    design = shipped("design")
    assert any("in_width 32" in r for r in cannot_run(design, "head", "kpn-t"))
    assert any("--vkdt-layout head" in r for r in cannot_run(design, "series", "head"))
    for levels in (2, 6):
        config = preset("../weights/design/config", f"infer.levels={levels}")
        assert cannot_run(config, "series") == []
        assert f"#define KPN_LEVELS {levels}" in vkdt_build(config, "series").defines
    too_many = preset("../weights/design/config", "infer.levels=7")
    assert cannot_run(too_many, "series") == ["infer.levels = 7: KPN_LEVELS (patch 0008) is 2..6"]


def test_series_training_has_no_transpose_difference() -> None:
    lines = training_differences(shipped("design"), "series")
    assert not any("transpose" in line for line in lines)
    assert "model.vkdt_kernel_grad_untransposed = false" in " ".join(
        training_differences(preset("design", "model.block_transpose=true"), "head")
    )


def test_training_fixes_of_the_series() -> None:
    """Patches 0011 and 0012 fix defects 16 and 14 on the series only: the oracle's replay
    of each target (vkdt/oracle_train.py) has no training difference from them."""
    replay = (
        "model.kernel_activation=softmax", "model.vkdt_plain_grad=false",
        "model.precision=vkdt-f16",
        "model.vkdt_f16_backward=true", "train.loss=smape", "train.vkdt_smape_grad=true",
        "train.vkdt_f16_state=true",
    )  # fmt: skip
    series = preset("vkdt-head-w32", *replay, "train.vkdt_f16_moments=false")
    head = preset("vkdt-head-w32", *replay, "model.vkdt_softmax_grad=true")

    def about(config: Config, target: str) -> list[str]:
        words = ("softmax_grad", "f16_moments", "f16_backward", "smape_grad")
        return [x for x in training_differences(config, target) if any(w in x for w in words)]

    assert about(series, "series") == [] and about(head, "head") == []
    assert about(series, "head") == [
        "model.vkdt_softmax_grad = false: this build's dapply.comp differentiates exp(K), "
        "not exp(0.1 K) (defect 16)",
        "train.vkdt_f16_moments = false: this build's adam.comp stores its moments as "
        "float16 (defect 14)",
    ]
    assert patch_numbers(about(head, "series")) == {"0011", "0012"}
    plain = preset("vkdt-head-w32", "model.vkdt_f16_backward=false", "train.vkdt_smape_grad=false")
    assert [x.split(":")[0] for x in about(plain, "head")] == [
        "model.vkdt_f16_backward = false",
        "train.vkdt_smape_grad = false",
    ]


def test_unknown_target() -> None:
    with pytest.raises(ValueError, match="vkdt target 'gpu'"):
        vkdt_build(preset("design"), "gpu")
    assert TARGETS == ("series", "head")


# --- the export of the shipped design: golden files -----------------------------------------
def test_export_of_the_shipped_design_is_golden(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The graphs vkdt/oracle.sh ran through vkdt-cli with the series, byte for byte, and
    the .lut's weights and kpn-t trailer as shipped."""
    code, out, err = run(
        capsys, "export", SHIPPED / "design", "-o", tmp_path / "design.lut",
        "--vkdt-cfg", tmp_path, "--noise", "20000", "40",
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert "runs in vkdt ce12d6ed with kpn's patch series, needing 0002" in out
    assert "0010 (mip.comp mirrors each level at its own edge)" in out
    for name in ("kpn-infer-pfm", "kpn-infer-raw"):
        text = (tmp_path / f"{name}.cfg").read_text(encoding="utf-8")
        assert text == (GOLDEN / f"design-{name}.cfg").read_text(encoding="utf-8")
    train = (tmp_path / "kpn-t-train.cfg").read_text(encoding="utf-8")
    train = re.sub(r"(?m)^param:i-lut:wcp:filename:.*$", "param:i-lut:wcp:filename:INIT", train)
    assert train == (GOLDEN / "design-kpn-t-train.cfg").read_text(encoding="utf-8")
    written = (tmp_path / "design.lut").read_bytes()
    shipped_lut = (SHIPPED / "design" / "weights.lut").read_bytes()
    vkdt_part = written.index(KPN_SECTION_HEAD.encode())
    assert written[:vkdt_part] == shipped_lut[:vkdt_part]
    assert (
        read_lut(tmp_path / "design.lut").model
        == read_lut(SHIPPED / "design" / "weights.lut").model
    )


def test_export_for_unpatched_vkdt_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = listing(tmp_path)
    code, out, err = run(
        capsys, "export", SHIPPED / "design", "-o", tmp_path / "d.lut", "--vkdt-cfg",
        tmp_path / "cfg", "--vkdt-target", "head",
    )  # fmt: skip
    assert (code, out) == (2, "")
    assert_error_line(
        err, "weights/design", "vkdt ce12d6ed cannot run this model",
        "--vkdt-target series runs it", "star15_snr", "patch 0005",
    )  # fmt: skip
    assert listing(tmp_path) == before
    # without --vkdt-cfg the .lut is written (kpn reads it back), with the same line as a warning
    code, out, err = run(
        capsys, "export", SHIPPED / "design", "-o", tmp_path / "d.lut", "--vkdt-target", "head"
    )
    assert code == 0 and "wrote" in out
    assert err.startswith("warning: vkdt ce12d6ed cannot run this model") and err.count("\n") == 1


def test_plain_kernels_train_as_dapply_differentiates_them_on_both_targets() -> None:
    """Defect 17 is not in the series: the plain kernels' gradient is a difference on
    either target unless the config replays it (configs/vkdt-head.toml does)."""
    line = (
        "model.vkdt_plain_grad = false: dapply.comp differentiates the plain kernels' "
        "unnormalised sum (defect 17)"
    )
    for target in TARGETS:
        assert line not in training_differences(preset("vkdt-head"), target)
        sound = preset("vkdt-head", "model.vkdt_plain_grad=false")
        assert line in training_differences(sound, target)


def test_training_patches_follow_the_network() -> None:
    """0012 for every network, 0011 for softmax kernels, 0013 and 0014 for POST_MLP_DIFF;
    on ce12d6ed a POST_MLP_DIFF network trains on dup.comp's misplaced gradients."""
    numbers = {
        name: patch_numbers(training_patches(shipped(name))) for name in ("vkdt-w32", "design")
    }
    assert numbers == {"vkdt-w32": {"0011", "0012"}, "design": {"0011", "0012", "0013", "0014"}}
    assert patch_numbers(training_patches(preset("vkdt-head"))) == {"0012"}
    lines = training_differences(shipped("design"), "head")
    assert any(
        line.startswith("model.blend = 'post_diff': this build's dup.comp") for line in lines
    )
    assert not any("dup.comp" in line for line in training_differences(shipped("design"), "series"))
