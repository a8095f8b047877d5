"""vkdt graph files (``.cfg``) for weights exported here: inference and kpn-t training.

Pure functions that return the text of three graphs, written by ``python -m kpn export
--vkdt-cfg DIR`` beside the ``.lut``:

- ``kpn-infer-pfm.cfg``: ``i-pfm`` -> ``kpn`` (weights from ``i-lut``) -> ``display``;
- ``kpn-infer-raw.cfg``: ``i-raw`` -> ``denoise`` (strength 0: black/white and crop only)
  -> ``hilite`` -> ``demosaic`` -> ``kpn`` -> ``display``;
- ``kpn-t-train.cfg``: two ``i-pfm`` -> ``cnngenin`` -> ``kpn-t`` -> ``o-lut`` (weights)
  and ``display`` (the denoised tile), with the config's Adam settings.

``display:main`` is the output: in the GUI it is the view, and ``vkdt cli --format o-pfm
--filename F`` puts the output module in its place (vkdt's ``graph-export.c``). The run
lines carry ``--colour-prim bt2020 --colour-trc linear``: vkdt-cli's defaults are rec709
primaries and, through a slip in ``cli/main.c`` (it parses the default curve with
``parse_prim("sRGB")``, which is 1, the 709 curve), the 709 transfer curve, so without them
``graph-export.c`` inserts ``colenc`` before ``o-pfm`` and the file is not kpn's linear
output. vkdt's ``i-pfm`` reads and ``o-pfm`` writes the top row first, where the PFM
format (and infer.py) has the bottom row first: the comments say how to convert
(``python -m kpn pfm``).

Where the syntax comes from (vkdt, hanatos/vkdt at ce12d6ed; read, not copied):
the line grammar of ``src/pipe/graph-io.c`` (``dt_graph_read_config_line``:
``module:NAME:INST``, ``connect:MOD:INST:CONN:MOD:INST:CONN``, ``param:MOD:INST:PARAM:VALUE``,
``frames:N``, ``fps:F``, ``#`` comments); the training graph in
``src/pipe/modules/kpn-t/readme.md``; the raw chain of ``bin/default.i-raw`` and
``bin/examples/raw.cfg``; connector names from the ``connectors`` files and parameter
names and meanings from the ``params`` / ``params.ui`` files of ``i-pfm``, ``i-raw``,
``i-lut``, ``kpn``, ``kpn-t``, ``cnngenin``, ``o-lut``, ``denoise`` and ``display`` under
``src/pipe/modules/``; what ``kpn-t``'s compile-time switches mean from its ``config.h``.

Two rules of vkdt's reader shape the text: it reads a line with ``fscanf("%[^\\n]")``, so
an empty line leaves the buffer as it was and runs the previous line again, and a last
line without its newline is dropped. Every graph here has no empty line and ends in one
newline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from kpn.config import VKDT_INFERENCE_IN_WIDTH, Config, ModelConfig, TrainConfig

INFER_PFM = "kpn-infer-pfm.cfg"
INFER_RAW = "kpn-infer-raw.cfg"
TRAIN = "kpn-t-train.cfg"

VKDT_TRAIN_LEVELS = 4  # kpn-t/main.c: the network runs on levels 0..3
VKDT_INFER_LEVELS = 6  # kpn/main.c: Mcnt = 7 mip levels, the network on 0..5
VKDT_TILE = 64  # cnngenin/main.c: tiles of 64 x 64
VKDT_DENOISE_LEVELS = 2  # apply.comp filters levels 0 and 1 only
NO_CLIP = 1e30  # kpn-t's gradclip has no "off"; its square overflows to inf in float32
# vkdt-cli writes what kpn computes only with these (see the module docstring)
COLOUR_FLAGS = "--colour-prim bt2020 --colour-trc linear"

_APPLY = {"softmax": "APPLY_SOFTMAX", "plain": "APPLY_PLAIN"}
_ALPHA = {
    "const": "ALPHA_CONST",
    "plain": "ALPHA_PLAIN",
    "sigmoid": "ALPHA_SIGMOID",
    "clamped": "ALPHA_CLAMPED",
}
_MLP_ACTIVATION = {
    "relu": "MLP_ACTIVATION_RELU",
    "leaky_relu": "MLP_ACTIVATION_LEAKY_RELU",
    "none": "MLP_ACTIVATION_NONE",
}
_LOSS = {"l2": "LOSS_L2", "smape": "LOSS_SMAPE", "cosh": "LOSS_COSH"}


@dataclass(frozen=True)
class GraphFile:
    """One graph: its file name and its text."""

    name: str
    text: str


@dataclass(frozen=True)
class VkdtBuild:
    """How kpn-t/config.h must be set for a config, and what that build computes then.

    ``defines``: the lines of ``config.h`` that differ between configs. ``down``, ``up``:
    the pyramid filters that build uses (fixed by PRE_MLP_DIFF / NO_ALIAS).
    """

    defines: tuple[str, ...]
    no_alias: bool
    down: str
    up: str


def vkdt_build(model: ModelConfig, train: TrainConfig) -> VkdtBuild:
    """The kpn-t/config.h build closest to ``model`` and ``train``.

    vkdt has four pyramid builds: PRE_MLP_DIFF with NO_ALIAS (binomial5 down, bilinear up,
    detail input, add), PRE_MLP_DIFF alone, POST_MLP_DIFF, and neither (mip input, mix);
    the last three use ``mip.comp`` (box2_vkdt) and the B-spline up. ``add`` with a
    ``binomial5`` down gets NO_ALIAS.
    """
    no_alias = model.blend == "add" and model.down == "binomial5"
    defines = [
        f"#define WIDTH {model.width}",
        f"#define N_HIDDEN_LAYERS {model.n_hidden}",
        f"#define GRAD_SCALE {_c_float(train.grad_scale)}",
        f"#define APPLY_ACTIVATION {_APPLY[model.kernel_activation]}",
        f"#define ALPHA_ACTIVATION {_ALPHA[model.alpha_activation]}",
        _switch("POST_MLP_DIFF", model.blend == "post_diff"),
        _switch("PRE_MLP_DIFF", model.blend == "add"),
        _switch("NO_ALIAS", no_alias),
        f"#define MLP_ACTIVATION {_MLP_ACTIVATION[model.activation]}",
        # kpn's psnr loss has no counterpart in vkdt: its graph trains with vkdt's default
        f"#define LOSS {_LOSS.get(train.loss, 'LOSS_SMAPE')}",
    ]
    down, up = ("binomial5", "bilinear") if no_alias else ("box2_vkdt", "bspline")
    return VkdtBuild(tuple(defines), no_alias, down, up)


def _switch(name: str, on: bool) -> str:
    return f"#define {name}" if on else f"// #define {name}"


def _c_float(value: float) -> str:
    text = repr(float(value))
    return text if any(c in text for c in ".e") else text + ".0"


def vkdt_float(value: float) -> str:
    """A number as a graph parameter: Python's shortest exact repr, which strtof reads."""
    if not math.isfinite(value):
        raise ValueError(f"graph parameter {value!r} is not finite")
    return repr(float(value))


def training_differences(config: Config) -> list[str]:
    """Where vkdt HEAD's kpn-t, built per :func:`vkdt_build`, trains otherwise than ``config``."""
    model, train, data = config.model, config.train, config.data
    build = vkdt_build(model, train)
    out = _model_differences(model, build)
    if model.levels != VKDT_TRAIN_LEVELS:
        out.append(f"model.levels = {model.levels}: kpn-t trains {VKDT_TRAIN_LEVELS} levels")
    if model.gradient_stop != build.no_alias:
        out.append(
            f"model.gradient_stop = {str(model.gradient_stop).lower()}: this build's dup.comp "
            + ("zeroes" if build.no_alias else "propagates")
            + " the gradient into coarser levels"
        )
    if model.vkdt_head_layout:
        out.append(
            "model.vkdt_head_layout = true: kpn-t trains every unit of the first hidden layer "
            "(and writes kpn-t's layout)"
        )
    if not model.vkdt_kernel_grad_untransposed:
        out.append(
            "model.vkdt_kernel_grad_untransposed = false: kpn-t's backward pass reads the "
            "kernel gradient untransposed (its gradients do not belong to its forward pass)"
        )
    if train.loss not in _LOSS:
        out.append(
            f"train.loss = '{train.loss}': kpn's own loss; vkdt's build trains with LOSS_SMAPE"
        )
    if train.loss_reduction != "sum":
        out.append(f"train.loss_reduction = '{train.loss_reduction}': loss.comp sums over pixels")
    if train.lr_schedule != "constant" or train.warmup_steps:
        out.append("train.lr_schedule / warmup_steps: kpn-t's alpha is constant")
    if train.grad_clip > 0 and not train.vkdt_grad_clip:
        out.append(
            "train.vkdt_grad_clip = false: kpn-t clips by GRAD_SCALE times the norm of only "
            "the first ceil(N/32) gradient entries (norm.comp), not the whole gradient's norm"
        )
    if not train.vkdt_bias_correction:
        out.append(
            "train.vkdt_bias_correction = false: adam.comp corrects the moments only before "
            "frame 5000"
        )
    if not train.vkdt_f16_state:
        out.append("train.vkdt_f16_state = false: adam.comp stores weights and moments as float16")
    if data.tile != VKDT_TILE or data.batch != 1:
        out.append(
            f"data.tile = {data.tile}, data.batch = {data.batch}: cnngenin cuts one "
            f"{VKDT_TILE}x{VKDT_TILE} tile per step"
        )
    return out


def inference_differences(config: Config, layout: str = "kpn-t") -> list[str]:
    """Where vkdt HEAD's kpn module, built per :func:`vkdt_build`, runs otherwise, from a
    ``.lut`` in ``layout`` (:data:`kpn.vkdt.lut_layout.LAYOUTS`)."""
    model = config.model
    out = _model_differences(model, vkdt_build(model, config.train))
    levels = config.infer.levels or model.levels
    # add with levels >= denoise_levels passed through: O_d = M_d whatever the level count
    same_output = model.blend == "add" and 0 < model.denoise_levels <= min(
        levels, VKDT_INFER_LEVELS
    )
    if levels != VKDT_INFER_LEVELS and not same_output:
        out.append(f"infer.levels = {levels}: kpn infers with {VKDT_INFER_LEVELS} levels")
    if model.width != VKDT_INFERENCE_IN_WIDTH and layout != "head":
        out.append(
            f"model.width = {model.width}: kpn reads the weights with in_width 32 (kpn/main.c), "
            "kpn-t writes them with in_width WIDTH: this is not the trained network"
        )
    return out


def _model_differences(model: ModelConfig, build: VkdtBuild) -> list[str]:
    out = []
    features = "patch8x8" if model.width == 64 else "star15"
    if model.features != features:
        out.append(
            f"model.features = '{model.features}': input.glsl feeds {features} at WIDTH "
            f"{model.width}"
        )
    if model.down != build.down:
        out.append(f"model.down = '{model.down}': this build's pyramid goes down by {build.down}")
    if model.up != build.up:
        out.append(f"model.up = '{model.up}': this build's pyramid goes up by {build.up}")
    if model.denoise_levels != VKDT_DENOISE_LEVELS:
        out.append(
            f"model.denoise_levels = {model.denoise_levels}: apply.comp filters only levels 0 and 1"
        )
    if not model.block_transpose:
        out.append(
            "model.block_transpose = false: fwd.h stores the kernels transposed in blocks of 16 "
            "pixels (since 4c5e4782)"
        )
    if model.precision != "vkdt-f16":
        out.append(f"model.precision = '{model.precision}': vkdt computes in float16")
    if model.noise_luminance != "x":
        out.append(
            f"model.noise_luminance = '{model.noise_luminance}': input.glsl takes the "
            "luminance of X"
        )
    return out


# --- the graphs ----------------------------------------------------------------------------
def _comment(lines: Sequence[str], indent: str = "") -> list[str]:
    return [f"# {indent}{line}".rstrip() for line in lines]


def _patch_note(model: ModelConfig) -> list[str]:
    """The comment that a build other than WIDTH 64 needs docs/vkdt.md's include patch."""
    if model.width == 64:  # input.glsl's star15 branch is compiled for every other WIDTH
        return []
    return [
        f"# vkdt ce12d6ed does not compile WIDTH {model.width} as it is (input.glsl uses "
        "push.level and nonuniformEXT too early): apply docs/vkdt.md's include-order patch"
    ]


def _text(lines: Sequence[str]) -> str:
    for line in lines:
        if not line.strip() or "\n" in line:
            raise ValueError(f"graph line {line!r}: vkdt's reader needs one non-empty line")
    return "\n".join(lines) + "\n"


def inference_graph(
    weights: str,
    config: Config,
    *,
    source: str,
    noise_a: float,
    noise_b: float,
    layout: str = "kpn-t",
) -> str:
    """The text of an inference graph: ``source`` ("pfm" or "raw") -> kpn -> display.

    ``weights`` is the ``.lut`` path as the graph names it (relative paths are resolved
    from the graph's folder), in ``layout``. ``noise_a``, ``noise_b``: the camera's noise
    profile on the 0..65535 scale (docs/design.md §8) for ``kpn``'s parameters.
    """
    if source not in ("pfm", "raw"):
        raise ValueError(f"source {source!r}: expected 'pfm' or 'raw'")
    build = vkdt_build(config.model, config.train)
    module = "i-pfm" if source == "pfm" else "i-raw"
    example = "noisy.pfm" if source == "pfm" else "noisy.raw"
    lines = [
        *_inference_usage(weights, source, example),
        "# kpn's noise a / noise b: the camera's noise profile on the 0..65535 scale",
        "# (a .nprof of vkdt since 4b910761 is on [0,1]: a*65535^2, b*65535; docs/vkdt.md)",
        "# kpn must be built with these lines in src/pipe/modules/kpn-t/config.h:",
        *_comment(build.defines, "  "),
        *_patch_note(config.model),
    ]
    differences = inference_differences(config, layout)
    if differences:
        lines += ["# vkdt HEAD (ce12d6ed) computes otherwise than this config:"]
        lines += _comment(differences, "  ")
    lines += [
        *_inference_modules(source),
        "connect:i-lut:w:output:kpn:01:w",
        "connect:kpn:01:output:display:main:input",
        f"param:{module}:main:filename:{example}",
    ]
    if source == "raw":
        lines += [
            "# denoise with strength 0 only crops, subtracts black and scales to white",
            "param:denoise:01:strength:0.0",
        ]
    lines += [
        f"param:i-lut:w:filename:{weights}",
        f"param:kpn:01:noise a:{vkdt_float(noise_a)}",
        f"param:kpn:01:noise b:{vkdt_float(noise_b)}",
    ]
    return _text(lines)


def _inference_usage(weights: str, source: str, example: str) -> list[str]:
    """The comment lines that open an inference graph: what it does, how to run it, and
    how to bring its PFMs to and from the format's row order."""
    name = INFER_PFM if source == "pfm" else INFER_RAW
    module = "i-pfm" if source == "pfm" else "i-raw"
    lines = [
        f"# vkdt graph: denoise a {'linear PFM' if source == 'pfm' else 'raw photo'} with kpn "
        f"and the weights {weights} (written by python -m kpn export)",
        f"# run: vkdt cli -g {name} --format o-pfm --filename denoised {COLOUR_FLAGS} "
        f"--config param:{module}:main:filename:/path/to/{example}",
        f"# {COLOUR_FLAGS}: the linear output as kpn computes it (without them vkdt cli "
        "adds colenc: rec709 primaries, 709 curve)",
    ]
    if source == "pfm":
        lines += [
            "# i-pfm reads and o-pfm writes the top row first, a standard PFM (infer.py's) "
            "the bottom row first:",
            f"#   python -m kpn pfm --to-vkdt photo.pfm {example} makes the input, "
            "python -m kpn pfm --from-vkdt denoised.pfm photo.denoised.pfm the output",
        ]
    else:
        lines += [
            "# o-pfm writes the top row first: python -m kpn pfm --from-vkdt denoised.pfm "
            "photo.denoised.pfm gives a standard PFM (infer.py's)",
        ]
    return lines


def _inference_modules(source: str) -> list[str]:
    """The modules of an inference graph and the connections up to kpn's input: a PFM
    straight in, a raw photo through denoise (black/white, crop), hilite and demosaic."""
    if source == "pfm":
        return [
            "module:i-pfm:main",
            "module:i-lut:w",
            "module:kpn:01",
            "module:display:main",
            "connect:i-pfm:main:output:kpn:01:input",
        ]
    return [
        "module:i-raw:main",
        "module:denoise:01",
        "module:hilite:01",
        "module:demosaic:01",
        "module:i-lut:w",
        "module:kpn:01",
        "module:display:main",
        "connect:i-raw:main:output:denoise:01:input",
        "connect:denoise:01:output:hilite:01:input",
        "connect:hilite:01:output:demosaic:01:input",
        "connect:demosaic:01:output:kpn:01:input",
    ]


def training_graph(config: Config, *, weights_out: str, init_weights: str | None) -> str:
    """The text of a kpn-t training graph for ``config``.

    ``weights_out``: the o-lut filename (vkdt appends ``.lut`` and writes it in the
    current folder). ``init_weights``: a ``.lut`` to start from through ``kpn-t``'s
    ``wcp`` input, or None for vkdt's random initialisation.
    """
    train = config.train
    build = vkdt_build(config.model, train)
    steps = train.steps
    lines = [
        f"# vkdt graph: train kpn-t for {steps} steps, the weights go to {weights_out}.lut "
        "(written by python -m kpn export)",
        f"# run: vkdt cli -g {TRAIN} --last-frame-only --progress",
        "# point both i-pfm filenames at a clean linear PFM (%04d and startid for a sequence):",
        "# cnngenin generate: 0 static tile, 1 random tiles, 2 noise added to the reference "
        "(main unused), 3 mosaic, 4 2+3",
        "# build vkdt with these lines in src/pipe/modules/kpn-t/config.h:",
        *_comment(build.defines, "  "),
        *_patch_note(config.model),
    ]
    differences = training_differences(config)
    if differences:
        lines += ["# vkdt HEAD (ce12d6ed) trains otherwise than this config:"]
        lines += _comment(differences, "  ")
    if config.train.init.endswith(".pt"):
        lines += [
            f"# train.init = {config.train.init} is a kpn checkpoint, which vkdt cannot read:",
            "# export it to a .lut and start from it with an i-lut on kpn-t's wcp input",
        ]
    lines += [
        f"frames:{steps + 1}",  # frame 0 only initialises the weights (adam.comp)
        "fps:0",
        "module:i-pfm:main",
        "module:i-pfm:ref",
        "module:cnngenin:01",
        "module:kpn-t:01",
        "module:o-lut:w",
        "module:display:main",
    ]
    if init_weights is not None:
        lines.append("module:i-lut:wcp")
    lines += [
        "connect:i-pfm:main:output:cnngenin:01:imgi",
        "connect:i-pfm:ref:output:cnngenin:01:refi",
        "connect:cnngenin:01:imgo:kpn-t:01:input",
        "connect:cnngenin:01:refo:kpn-t:01:ref",
        "connect:cnngenin:01:noiseab:kpn-t:01:noiseab",
        "connect:kpn-t:01:w:o-lut:w:input",
        "connect:kpn-t:01:output:display:main:input",
    ]
    if init_weights is not None:
        lines.append("connect:i-lut:wcp:output:kpn-t:01:wcp")
    lines += [
        "param:i-pfm:main:filename:reference.pfm",
        "param:i-pfm:ref:filename:reference.pfm",
        f"param:cnngenin:01:generate:{config.data.generate}",
        "param:cnngenin:01:tiles:1",
        f"param:kpn-t:01:alpha:{vkdt_float(train.lr)}",
        f"param:kpn-t:01:beta1:{vkdt_float(train.beta1)}",
        f"param:kpn-t:01:beta2:{vkdt_float(train.beta2)}",
        f"param:kpn-t:01:eps:{vkdt_float(train.eps)}",
        f"param:kpn-t:01:init:{0 if init_weights is not None else 1}",
        f"param:kpn-t:01:L2:{vkdt_float(train.l2)}",
        f"param:kpn-t:01:gradclip:{vkdt_float(train.grad_clip or NO_CLIP)}",
        f"param:o-lut:w:filename:{weights_out}",
    ]
    if init_weights is not None:
        lines.append(f"param:i-lut:wcp:filename:{init_weights}")
    return _text(lines)


def graph_files(
    config: Config,
    weights: str,
    *,
    noise_a: float,
    noise_b: float,
    weights_out: str,
    init_weights: str | None,
    layout: str = "kpn-t",
) -> tuple[GraphFile, ...]:
    """The three graphs ``--vkdt-cfg`` writes, for weights in ``layout`` that the graphs
    name ``weights``."""
    pfm, raw = (
        inference_graph(
            weights, config, source=source, noise_a=noise_a, noise_b=noise_b, layout=layout
        )
        for source in ("pfm", "raw")
    )
    return (
        GraphFile(INFER_PFM, pfm),
        GraphFile(INFER_RAW, raw),
        GraphFile(
            TRAIN, training_graph(config, weights_out=weights_out, init_weights=init_weights)
        ),
    )
