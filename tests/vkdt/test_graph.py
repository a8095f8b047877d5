"""Tests for kpn.vkdt.graph: the vkdt graph files ``export --vkdt-cfg`` writes.

Golden text and what vkdt computes otherwise than a config; the rules of vkdt's graph
reader and the connectors and parameters of its modules are test_graph_vkdt.py's.
"""

from __future__ import annotations

import pytest

from kpn.config import Config
from kpn.vkdt.graph import (
    INFER_PFM,
    INFER_RAW,
    NO_CLIP,
    TRAIN,
    graph_files,
    inference_graph,
    training_graph,
    vkdt_float,
)
from kpn.vkdt.target import cannot_run, inference_differences, training_differences, vkdt_build

from vkdt_shared import preset

GOLDEN_PFM = """\
# vkdt graph: denoise a linear PFM with kpn and the weights weights.lut (written by python -m kpn export)
# run: vkdt cli -g kpn-infer-pfm.cfg --format o-pfm --filename denoised --colour-prim bt2020 --colour-trc linear --config param:i-pfm:main:filename:/path/to/noisy.pfm
# --colour-prim bt2020 --colour-trc linear: the linear output as kpn computes it (without them vkdt cli adds colenc: rec709 primaries, 709 curve)
# i-pfm reads and o-pfm writes the top row first, a standard PFM (infer.py's) the bottom row first:
#   python -m kpn pfm --to-vkdt photo.pfm noisy.pfm makes the input, python -m kpn pfm --from-vkdt denoised.pfm photo.denoised.pfm the output
# kpn's noise a / noise b: the camera's noise profile on the 0..65535 scale
# (a .nprof of vkdt since 4b910761 is on [0,1]: a*65535^2, b*65535; docs/vkdt.md)
# for vkdt ce12d6ed, which does not compile WIDTH 32 as it is (input.glsl uses push.level and nonuniformEXT too early): apply vkdt/patches/0001 (input.glsl included after the push constants: WIDTH 32 compiles)
# kpn must be built with these lines in src/pipe/modules/kpn-t/config.h:
#   #define WIDTH 32
#   #define N_HIDDEN_LAYERS 6
#   #define GRAD_SCALE 128.0
#   #define APPLY_ACTIVATION APPLY_PLAIN
#   #define ALPHA_ACTIVATION ALPHA_CONST
#   // #define POST_MLP_DIFF
#   #define PRE_MLP_DIFF
#   #define NO_ALIAS
#   #define MLP_ACTIVATION MLP_ACTIVATION_LEAKY_RELU
#   #define LOSS LOSS_SMAPE
module:i-pfm:main
module:i-lut:w
module:kpn:01
module:display:main
connect:i-pfm:main:output:kpn:01:input
connect:i-lut:w:output:kpn:01:w
connect:kpn:01:output:display:main:input
param:i-pfm:main:filename:noisy.pfm
param:i-lut:w:filename:weights.lut
param:kpn:01:noise a:1000.0
param:kpn:01:noise b:2.5
"""  # noqa: E501

GOLDEN_RAW = """\
# vkdt graph: denoise a raw photo with kpn and the weights weights.lut (written by python -m kpn export)
# run: vkdt cli -g kpn-infer-raw.cfg --format o-pfm --filename denoised --colour-prim bt2020 --colour-trc linear --config param:i-raw:main:filename:/path/to/noisy.raw
# --colour-prim bt2020 --colour-trc linear: the linear output as kpn computes it (without them vkdt cli adds colenc: rec709 primaries, 709 curve)
# o-pfm writes the top row first: python -m kpn pfm --from-vkdt denoised.pfm photo.denoised.pfm gives a standard PFM (infer.py's)
# kpn's noise a / noise b: the camera's noise profile on the 0..65535 scale
# (a .nprof of vkdt since 4b910761 is on [0,1]: a*65535^2, b*65535; docs/vkdt.md)
# for vkdt ce12d6ed, which does not compile WIDTH 32 as it is (input.glsl uses push.level and nonuniformEXT too early): apply vkdt/patches/0001 (input.glsl included after the push constants: WIDTH 32 compiles)
# kpn must be built with these lines in src/pipe/modules/kpn-t/config.h:
#   #define WIDTH 32
#   #define N_HIDDEN_LAYERS 6
#   #define GRAD_SCALE 128.0
#   #define APPLY_ACTIVATION APPLY_PLAIN
#   #define ALPHA_ACTIVATION ALPHA_CONST
#   // #define POST_MLP_DIFF
#   #define PRE_MLP_DIFF
#   #define NO_ALIAS
#   #define MLP_ACTIVATION MLP_ACTIVATION_LEAKY_RELU
#   #define LOSS LOSS_SMAPE
module:i-raw:main
module:denoise:01
module:hilite:01
module:demosaic:01
module:i-lut:w
module:kpn:01
module:display:main
connect:i-raw:main:output:denoise:01:input
connect:denoise:01:output:hilite:01:input
connect:hilite:01:output:demosaic:01:input
connect:demosaic:01:output:kpn:01:input
connect:i-lut:w:output:kpn:01:w
connect:kpn:01:output:display:main:input
param:i-raw:main:filename:noisy.raw
# denoise with strength 0 only crops, subtracts black and scales to white
param:denoise:01:strength:0.0
param:i-lut:w:filename:weights.lut
param:kpn:01:noise a:1000.0
param:kpn:01:noise b:2.5
"""  # noqa: E501

# kpn-t's readme example (alpha 0.003, L2 0, gradclip 1, 250000 steps) with every vkdt
# switch of the W 32 HEAD preset on, started from a .lut through wcp
GOLDEN_TRAIN = """\
# vkdt graph: train kpn-t for 250000 steps, the weights go to mlp-w.lut (written by python -m kpn export)
# run: vkdt cli -g kpn-t-train.cfg --last-frame-only --progress
# point both i-pfm filenames at a clean linear PFM (%04d and startid for a sequence):
# cnngenin generate: 0 static tile, 1 random tiles, 2 noise added to the reference (main unused), 3 mosaic, 4 2+3
# for vkdt ce12d6ed, which does not compile WIDTH 32 as it is (input.glsl uses push.level and nonuniformEXT too early): apply vkdt/patches/0001 (input.glsl included after the push constants: WIDTH 32 compiles)
# build vkdt with these lines in src/pipe/modules/kpn-t/config.h:
#   #define WIDTH 32
#   #define N_HIDDEN_LAYERS 6
#   #define GRAD_SCALE 128.0
#   #define APPLY_ACTIVATION APPLY_PLAIN
#   #define ALPHA_ACTIVATION ALPHA_CONST
#   // #define POST_MLP_DIFF
#   #define PRE_MLP_DIFF
#   #define NO_ALIAS
#   #define MLP_ACTIVATION MLP_ACTIVATION_LEAKY_RELU
#   #define LOSS LOSS_SMAPE
frames:250001
fps:0
module:i-pfm:main
module:i-pfm:ref
module:cnngenin:01
module:kpn-t:01
module:o-lut:w
module:display:main
module:i-lut:wcp
connect:i-pfm:main:output:cnngenin:01:imgi
connect:i-pfm:ref:output:cnngenin:01:refi
connect:cnngenin:01:imgo:kpn-t:01:input
connect:cnngenin:01:refo:kpn-t:01:ref
connect:cnngenin:01:noiseab:kpn-t:01:noiseab
connect:kpn-t:01:w:o-lut:w:input
connect:kpn-t:01:output:display:main:input
connect:i-lut:wcp:output:kpn-t:01:wcp
param:i-pfm:main:filename:reference.pfm
param:i-pfm:ref:filename:reference.pfm
param:cnngenin:01:generate:2
param:cnngenin:01:tiles:1
param:kpn-t:01:alpha:0.003
param:kpn-t:01:beta1:0.99
param:kpn-t:01:beta2:0.999
param:kpn-t:01:eps:0.0001
param:kpn-t:01:init:0
param:kpn-t:01:L2:0.0
param:kpn-t:01:gradclip:1.0
param:o-lut:w:filename:mlp-w
param:i-lut:wcp:filename:start.lut
"""  # noqa: E501

VKDT_SWITCHES = [
    "model.vkdt_kernel_grad_untransposed=true",
    "train.vkdt_grad_clip=true",
    "train.vkdt_bias_correction=true",
    "train.vkdt_f16_state=true",
    "data.batch=1",
]


# The design as vkdt can build it: vkdt's star15 input (the design's star15_snr is kpn's
# own), a width vkdt's kpn reads, and a loss of vkdt's.
VKDT_DESIGN = ("model.features=star15", "model.width=32", "train.loss=smape")


def vkdt_design(*overrides: str) -> Config:
    return preset("design", *VKDT_DESIGN, *overrides)


# --- golden text -------------------------------------------------------------------------
def test_golden_inference_pfm() -> None:
    config = preset("vkdt-head-w32")
    text = inference_graph(
        "weights.lut", config, source="pfm", noise_a=1000, noise_b=2.5, target="head"
    )
    assert text == GOLDEN_PFM


def test_golden_inference_raw() -> None:
    config = preset("vkdt-head-w32")
    text = inference_graph(
        "weights.lut", config, source="raw", noise_a=1000, noise_b=2.5, target="head"
    )
    assert text == GOLDEN_RAW


def test_golden_training() -> None:
    config = preset(
        "vkdt-head-w32",
        *VKDT_SWITCHES,
        "train.steps=250000",
        "train.lr=0.003",
        "train.l2=0",
        "train.grad_clip=1.0",
    )
    text = training_graph(config, weights_out="mlp-w", init_weights="start.lut", target="head")
    assert text == GOLDEN_TRAIN


def test_training_random_init_and_no_clip() -> None:
    config = preset("vkdt-head-w32", "train.grad_clip=0")
    text = training_graph(config, weights_out="w", init_weights=None)
    assert "param:kpn-t:01:init:1\n" in text  # params.ui: 0 "from input", 1 "randomise"
    assert "module:i-lut:wcp" not in text
    assert f"param:kpn-t:01:gradclip:{NO_CLIP!r}\n" in text  # 1e+30: never clips
    assert (NO_CLIP * NO_CLIP) > 3.5e38  # its square is inf in float32: no clipping


def test_checkpoint_init_is_explained() -> None:
    text = training_graph(vkdt_design("train.init=old.pt"), weights_out="w", init_weights=None)
    assert "# train.init = old.pt is a kpn checkpoint, which vkdt cannot read:\n" in text


def test_graph_files_names_and_texts() -> None:
    config = preset("vkdt-head")
    files = graph_files(
        config, "w.lut", noise_a=1.0, noise_b=2.0, weights_out="w-vkdt", init_weights=None
    )
    assert [f.name for f in files] == [INFER_PFM, INFER_RAW, TRAIN]
    assert files[0].text == inference_graph("w.lut", config, source="pfm", noise_a=1.0, noise_b=2.0)
    assert files[2].text == training_graph(config, weights_out="w-vkdt", init_weights=None)


# --- what vkdt computes otherwise ----------------------------------------------------------
def test_vkdt_presets_with_all_switches_differ_in_nothing() -> None:
    for name in ("vkdt-head-w32", "vkdt-head"):
        config = preset(name, *VKDT_SWITCHES)
        assert training_differences(config, "head") == []
    config = preset("vkdt-head-w32")
    assert cannot_run(config, "head") + inference_differences(config, "head") == []
    # 4 network levels here, 6 in kpn: the same output with add and levels >= 2 passed
    assert preset("vkdt-head-w32").infer.levels == 6
    assert cannot_run(preset("vkdt-head-w32", "infer.levels=4"), "head") == []


def test_w64_inference_difference() -> None:
    assert cannot_run(preset("vkdt-head"), "head") == [
        "W = 64 weights in kpn-t's layout (first matrix 64 wide): ce12d6ed's kpn module reads "
        "them with in_width 32 (defect 6; patch 0004; or train with model.vkdt_head_layout = "
        "true and export with --vkdt-layout head)"
    ]


def test_w64_in_the_head_layout_runs_as_trained() -> None:
    """A head-layout file is read by kpn as written: no in_width difference; kpn-t,
    which trains all units, says so for a model.vkdt_head_layout config."""
    config = preset("vkdt-head", "model.vkdt_head_layout=true", *VKDT_SWITCHES)
    assert cannot_run(config, "head", "head") + inference_differences(config, "head") == []
    assert training_differences(config, "head") == [
        "model.vkdt_head_layout = true: kpn-t trains every unit of the first hidden layer "
        "(and writes kpn-t's layout)"
    ]
    pfm = graph_files(
        config, "w.lut", noise_a=1, noise_b=2, weights_out="o", init_weights=None,
        layout="head", target="head",
    )[0].text  # fmt: skip
    assert "in_width" not in pfm and "computes otherwise" not in pfm
    # WIDTH 64 compiles as shipped: no patch; WIDTH 32 needs the include-order patch
    assert "# for vkdt ce12d6ed as it is\n" in pfm
    w32 = inference_graph(
        "w.lut", preset("vkdt-head-w32"), source="pfm", noise_a=0, noise_b=0, target="head"
    )
    assert "apply vkdt/patches/0001 " in w32


def test_run_lines_write_kpns_linear_output() -> None:
    """vkdt cli inserts colenc (rec709, 709 curve) unless told bt2020 and linear."""
    for text in (GOLDEN_PFM, GOLDEN_RAW):
        run_line = next(line for line in text.splitlines() if line.startswith("# run:"))
        assert "--format o-pfm --filename denoised --colour-prim bt2020 --colour-trc linear" in (
            run_line
        )
    assert "--to-vkdt" in GOLDEN_PFM and "--from-vkdt" in GOLDEN_PFM
    assert "--from-vkdt" in GOLDEN_RAW


def test_design_differences_on_head() -> None:
    config = vkdt_design()
    reasons = cannot_run(config, "head")
    assert [reason.split(":")[0] for reason in reasons] == [
        "model.down = 'box2'",
        "model.denoise_levels = 0",
        "model.block_transpose = false",
        "infer.levels = 4",
    ]
    assert inference_differences(config, "head") == [
        "model.precision = 'fp32': vkdt computes in float16"
    ]
    assert training_differences(config, "head") == [
        *reasons[:3],
        "model.precision = 'fp32': vkdt computes in float16",
        "model.vkdt_kernel_grad_untransposed = false: kpn-t's backward pass reads the kernel "
        "gradient untransposed (its gradients do not belong to its forward pass)",
        "model.vkdt_softmax_grad = false: this build's dapply.comp differentiates exp(K), "
        "not exp(0.1 K) (defect 16)",
        "train.loss_reduction = 'mean': loss.comp sums over pixels",
        "train.lr_schedule / warmup_steps: kpn-t's alpha is constant",
        "train.vkdt_grad_clip = false: kpn-t clips by GRAD_SCALE times the norm of only the "
        "first ceil(N/32) gradient entries (norm.comp), not the whole gradient's norm",
        "train.vkdt_bias_correction = false: adam.comp corrects the moments only before frame 5000",
        "train.vkdt_smape_grad = false: loss.comp's SMAPE gradient fades small errors (defect 15)",
        "train.vkdt_f16_state = false: adam.comp stores the weights and moments as float16",
        "data.tile = 64, data.batch = 16: cnngenin cuts one 64x64 tile per step",
    ]
    text = training_graph(config, weights_out="w", init_weights=None, target="head")
    assert "# vkdt ce12d6ed trains otherwise than this config:\n#   model.down" in text


def test_feature_and_gradient_stop_differences() -> None:
    config = preset("vkdt-head", "model.features=star15", "model.gradient_stop=false")
    lines = training_differences(config, "head")
    assert "model.features = 'star15': input.glsl feeds patch8x8 at WIDTH 64" in lines
    assert (
        "model.gradient_stop = false: this build's dup.comp zeroes the gradient into coarser "
        "levels" in lines
    )


def test_vkdt_float() -> None:
    assert [vkdt_float(x) for x in (0.003, 1e-4, 1000, 0, 65535000.0, 1e30)] == [
        "0.003",
        "0.0001",
        "1000.0",
        "0.0",
        "65535000.0",
        "1e+30",
    ]
    with pytest.raises(ValueError, match="not finite"):
        vkdt_float(float("nan"))
    with pytest.raises(ValueError, match="source"):
        inference_graph("w.lut", vkdt_design(), source="jpg", noise_a=0, noise_b=0)


def test_kpn_only_loss_trains_with_smape_in_vkdt() -> None:
    config = vkdt_design("train.loss=psnr")
    assert "#define LOSS LOSS_SMAPE" in vkdt_build(config).defines
    assert "train.loss = 'psnr': kpn's own loss; vkdt's build trains with LOSS_SMAPE" in (
        training_differences(config)
    )
