"""Which vkdt runs a model: vkdt ce12d6ed as it is, or with kpn's patch series.

Two targets (``export --vkdt-target``):

- ``"series"``: vkdt ce12d6ed with ``vkdt/patches`` 0001-0014 (docs/vkdt.md, "The patch
  series"): the kernels stored row-major (0002), ``mip.comp``'s true 2x2 mean (0003) with
  each level mirrored at its own edge (0010), the weights read with ``in_width = WIDTH``
  (0004), four ``config.h`` switches (``INPUT_STAR15_SNR``, ``DENOISE_LEVELS``,
  ``POST_MLP_DIFF_MIRROR_COARSE``, ``KPN_LEVELS``) whose defaults are vkdt's own
  behaviour, and kpn-t's training without cooperative matrices (0009), with the softmax
  kernels' true gradient (0011), Adam's moments in float32 (0012) and POST_MLP_DIFF's
  gradients where they belong (0013, 0014);
- ``"head"``: vkdt ce12d6ed as it is, with its defects (docs/vkdt.md, "Defects found in
  vkdt"), patched only where it does not compile (0001 at ``WIDTH`` 32).

:func:`vkdt_build` is the ``config.h`` a model needs on a target, :func:`cannot_run` why a
target does not compute the trained network (the export refuses to write graphs then),
:func:`needed_patches` which patches of the series the network depends on, and
:func:`inference_differences` / :func:`training_differences` where the target computes
otherwise in ways that do not change the network (float16 rounding, kpn-t's training).
"""

from __future__ import annotations

from dataclasses import dataclass

from kpn.config import VKDT_INFERENCE_IN_WIDTH, Config, DataConfig, ModelConfig, TrainConfig

TARGETS = ("series", "head")
BASE = "ce12d6ed"
TARGET_NAMES = {"series": f"vkdt {BASE} with kpn's patch series", "head": f"vkdt {BASE}"}
# the series (vkdt/patches/series; tests/vkdt/test_patches.py checks the names)
PATCHES = {
    "0001": "input.glsl included after the push constants: WIDTH 32 compiles",
    "0002": "the kernels stored row-major",
    "0003": "mip.comp's true 2x2 mean",
    "0004": "kpn reads the weights with in_width WIDTH",
    "0005": "INPUT_STAR15_SNR",
    "0006": "DENOISE_LEVELS",
    "0007": "POST_MLP_DIFF_MIRROR_COARSE",
    "0008": "KPN_LEVELS",
    "0009": "kpn-t trains without cooperative matrices",
    "0010": "mip.comp mirrors each level at its own edge",
    "0011": "dapply.comp differentiates sigma_exp with its 0.1",
    "0012": "adam.comp keeps Adam's moments in float32",
    "0013": "dup.comp stores POST_MLP_DIFF's dE/dI at its own pixels",
    "0014": "dup.comp passes POST_MLP_DIFF's gradient to the coarse texel up.comp read",
}
TRAIN_WITHOUT_COOPMAT = "0009"  # only kpn-t's training graph, on GPUs without them

VKDT_TRAIN_LEVELS = 4  # kpn-t/main.c: the network runs on levels 0..3
VKDT_INFER_LEVELS = 6  # kpn/main.c: Mcnt = 7 mip levels, the network on 0..5
KPN_LEVELS_RANGE = (2, 6)  # patch 0008's KPN_LEVELS
VKDT_TILE = 64  # cnngenin/main.c: tiles of 64 x 64
VKDT_DENOISE_LEVELS = 2  # apply.comp filters levels 0 and 1 only

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
LOSSES = {"l2": "LOSS_L2", "smape": "LOSS_SMAPE", "cosh": "LOSS_COSH"}


@dataclass(frozen=True)
class VkdtBuild:
    """How kpn-t/config.h must be set for a config on a target, and what that build
    computes then.

    ``defines``: the lines of ``config.h`` that differ between configs (on the series,
    also its four switches). ``down``, ``up``: the pyramid filters that build uses (fixed
    by PRE_MLP_DIFF / NO_ALIAS, and on the series by patches 0003 and 0010). ``levels``:
    the levels vkdt's kpn module infers with.
    """

    defines: tuple[str, ...]
    no_alias: bool
    down: str
    up: str
    levels: int


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise ValueError(f"vkdt target {target!r}: expected one of {TARGETS}")


def vkdt_build(config: Config, target: str = "series") -> VkdtBuild:
    """The kpn-t/config.h build closest to ``config`` on ``target``.

    vkdt has four pyramid builds: PRE_MLP_DIFF with NO_ALIAS (binomial5 down, bilinear up,
    detail input, add), PRE_MLP_DIFF alone, POST_MLP_DIFF, and neither (mip input, mix);
    the last three use ``mip.comp`` (box2_vkdt; box2 with patches 0003 and 0010) and the
    B-spline up.
    ``add`` with a ``binomial5`` down gets NO_ALIAS.
    """
    _check_target(target)
    model, train = config.model, config.train
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
        f"#define LOSS {LOSSES.get(train.loss, 'LOSS_SMAPE')}",
    ]
    levels = VKDT_INFER_LEVELS
    if target == "series":
        wanted = config.infer.levels or model.levels
        low, high = KPN_LEVELS_RANGE
        levels = wanted if low <= wanted <= high else VKDT_INFER_LEVELS
        defines += [
            _switch("INPUT_STAR15_SNR", model.features == "star15_snr"),
            f"#define DENOISE_LEVELS {model.denoise_levels}",
            _switch(
                "POST_MLP_DIFF_MIRROR_COARSE",
                model.blend == "post_diff" and not model.vkdt_post_diff_border,
            ),
            f"#define KPN_LEVELS {levels}",
        ]
    mip = "box2" if target == "series" else "box2_vkdt"
    down, up = ("binomial5", "bilinear") if no_alias else (mip, "bspline")
    return VkdtBuild(tuple(defines), no_alias, down, up, levels)


def _switch(name: str, on: bool) -> str:
    return f"#define {name}" if on else f"// #define {name}"


def _c_float(value: float) -> str:
    text = repr(float(value))
    return text if any(c in text for c in ".e") else text + ".0"


def _other(target: str) -> str:
    return "head" if target == "series" else "series"


def _network_reasons(model: ModelConfig, build: VkdtBuild, target: str) -> list[str]:
    """Why ``target``'s network (training and inference alike) is not ``model``'s."""
    out = []
    series = target == "series"
    native = "patch8x8" if model.width == 64 else "star15"
    inputs = (native, "star15_snr") if series else (native,)
    if model.features not in inputs:
        if model.features == "star15_snr":
            out.append(
                "model.features = 'star15_snr': vkdt's input.glsl computes it with patch "
                "0005 (INPUT_STAR15_SNR)"
            )
        else:
            out.append(
                f"model.features = '{model.features}': input.glsl feeds {native} at WIDTH "
                f"{model.width}" + (" (or star15_snr with INPUT_STAR15_SNR)" if series else "")
            )
    if model.guide != "none":
        out.append(
            f"model.guide = '{model.guide}': vkdt's kpn module does not feed a level's network "
            "the coarser output (docs/design.md §16)"
        )
    if model.fine_passes != 1:
        out.append(
            f"model.fine_passes = {model.fine_passes}: vkdt's kpn module filters each level "
            "with its kernels once (docs/design.md §17)"
        )
    if model.chroma_input:
        out.append(
            "model.chroma_input: vkdt's input.glsl does not compute the taps' opponent "
            "colours (docs/design.md §18)"
        )
    if model.chroma_kernel:
        out.append(
            "model.chroma_kernel: vkdt's kpn module predicts one kernel and one alpha a pixel "
            "(16 outputs; docs/design.md §18)"
        )
    if model.noise_luminance != "x":
        out.append(
            f"model.noise_luminance = '{model.noise_luminance}': input.glsl takes the "
            "luminance of X"
        )
    if model.down != build.down:
        if model.down == "box2" and build.down == "box2_vkdt":
            why = " (defects 2 and 13; patches 0003 and 0010)"
        elif model.down == "box2_vkdt" and build.down == "box2":
            why = f": box2_vkdt is {BASE}'s mip.comp, which patches 0003 and 0010 fix"
        else:
            why = ""
        out.append(
            f"model.down = '{model.down}': this build's pyramid goes down by {build.down}{why}"
        )
    if model.up != build.up:
        out.append(f"model.up = '{model.up}': this build's pyramid goes up by {build.up}")
    if not series and model.denoise_levels != VKDT_DENOISE_LEVELS:
        out.append(
            f"model.denoise_levels = {model.denoise_levels}: apply.comp filters only levels 0 "
            "and 1 (patch 0006: DENOISE_LEVELS)"
        )
    if series and model.block_transpose:
        out.append(
            f"model.block_transpose = true is {BASE}'s kernel store, transposed in blocks of 16 "
            "pixels, which patch 0002 fixes"
        )
    if not series and not model.block_transpose:
        out.append(
            f"model.block_transpose = false: {BASE}'s fwd.h stores the kernels transposed in "
            "blocks of 16 pixels (defect 1; patch 0002)"
        )
    if not series and model.blend == "post_diff" and not model.vkdt_post_diff_border:
        out.append(
            "model.blend = 'post_diff' smooths with the pyramid's own up(down(I)): up.comp "
            "differs next to the last row and column of odd-sized levels (docs/design.md §5; "
            "patch 0007: POST_MLP_DIFF_MIRROR_COARSE)"
        )
    return out


def _same_output_levels(config: Config, levels: int) -> bool:
    """``add`` with every level from ``denoise_levels`` on passed through: O_d = M_d, so
    any level count from ``denoise_levels`` up gives the same output."""
    model = config.model
    return model.blend == "add" and 0 < model.denoise_levels <= min(levels, VKDT_INFER_LEVELS)


def cannot_run(config: Config, target: str = "series", layout: str = "kpn-t") -> list[str]:
    """Why vkdt's kpn module on ``target`` does not run the network of ``config`` from a
    ``.lut`` in ``layout`` (:data:`kpn.vkdt.lut_layout.LAYOUTS`); empty when it does (up to
    float16 rounding: :func:`inference_differences`)."""
    build = vkdt_build(config, target)
    out = _network_reasons(config.model, build, target)
    model = config.model
    levels = config.infer.levels or model.levels
    if levels != build.levels and not _same_output_levels(config, levels):
        if target == "head":
            out.append(
                f"infer.levels = {levels}: kpn infers with {VKDT_INFER_LEVELS} levels (patch "
                "0008: KPN_LEVELS)"
            )
        else:
            low, high = KPN_LEVELS_RANGE
            out.append(f"infer.levels = {levels}: KPN_LEVELS (patch 0008) is {low}..{high}")
    if target == "head" and model.width != VKDT_INFERENCE_IN_WIDTH and layout != "head":
        out.append(
            f"W = {model.width} weights in kpn-t's layout (first matrix {model.width} wide): "
            f"{BASE}'s kpn module reads them with in_width {VKDT_INFERENCE_IN_WIDTH} "
            "(defect 6; patch 0004; or train with "
            "model.vkdt_head_layout = true and export with --vkdt-layout head)"
        )
    if target == "series" and layout == "head":
        out.append(
            "--vkdt-layout head is the layout of the kpn module before patch 0004, which reads "
            "in_width WIDTH: export in kpn-t's layout (the default) for the series"
        )
    return out


def needed_patches(config: Config, target: str = "series") -> list[str]:
    """The patches of the series that ``target``'s build of ``config`` depends on, each as
    "NNNN (what it does)"; on ``"head"`` only 0001 where WIDTH 32 does not compile."""
    _check_target(target)
    model = config.model
    needs = ["0001"] if model.width != 64 else []  # input.glsl's star15 branch
    if target == "series":
        build = vkdt_build(config, target)
        needs.append("0002")  # every network the series runs stores its kernels row-major
        if not build.no_alias:  # mip.comp: its true 2x2 mean, each level mirrored
            needs += ["0003", "0010"]
        if model.width != VKDT_INFERENCE_IN_WIDTH:
            needs.append("0004")
        if model.features == "star15_snr":
            needs.append("0005")
        if model.denoise_levels != VKDT_DENOISE_LEVELS:
            needs.append("0006")
        if model.blend == "post_diff" and not model.vkdt_post_diff_border:
            needs.append("0007")
        if build.levels != VKDT_INFER_LEVELS:
            needs.append("0008")
    return [f"{number} ({PATCHES[number]})" for number in sorted(needs)]


def training_patches(config: Config) -> list[str]:
    """The series' fixes of kpn-t's training that ``config``'s network trains with, each as
    "NNNN (what it does)": 0011 for softmax kernels, 0012 always, 0013 and 0014 for
    POST_MLP_DIFF (with ``needed_patches`` and, without cooperative matrices, 0009)."""
    needs = ["0012"]
    if config.model.kernel_activation == "softmax":
        needs.append("0011")
    if config.model.blend == "post_diff":
        needs += ["0013", "0014"]
    return [f"{number} ({PATCHES[number]})" for number in sorted(needs)]


def inference_differences(config: Config, target: str = "series") -> list[str]:
    """Where vkdt's kpn module on ``target`` computes otherwise than ``config`` and still
    runs its network: vkdt's float16 arithmetic."""
    _check_target(target)
    if config.model.precision != "vkdt-f16":
        return [f"model.precision = '{config.model.precision}': vkdt computes in float16"]
    return []


def training_differences(config: Config, target: str = "series") -> list[str]:
    """Where kpn-t on ``target``, built per :func:`vkdt_build`, trains otherwise than
    ``config``."""
    model, train, data = config.model, config.train, config.data
    build = vkdt_build(config, target)
    out = _network_reasons(model, build, target) + inference_differences(config, target)
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
    if target == "head" and not model.vkdt_kernel_grad_untransposed:
        out.append(
            "model.vkdt_kernel_grad_untransposed = false: kpn-t's backward pass reads the "
            "kernel gradient untransposed (its gradients do not belong to its forward pass)"
        )
    if model.precision == "vkdt-f16" and not model.vkdt_f16_backward:
        out.append(
            "model.vkdt_f16_backward = false: kpn-t's bck stores the network's gradients as "
            "float16 (and multiplies them in float16)"
        )
    head = target == "head"
    if model.kernel_activation == "softmax" and model.vkdt_softmax_grad != head:
        out.append(
            f"model.vkdt_softmax_grad = {str(model.vkdt_softmax_grad).lower()}: this build's "
            + ("dapply.comp differentiates exp(K), not exp(0.1 K) (defect 16)" if head else
               "dapply.comp differentiates exp(0.1 K) (patch 0011)")
        )  # fmt: skip
    if head and model.blend == "post_diff":
        out.append(
            "model.blend = 'post_diff': this build's dup.comp stores dE/dI at the wrong "
            "pixels and passes the coarse gradient to the wrong texels (defects 18 and 19; "
            "patches 0013 and 0014)"
        )
    if model.kernel_activation == "plain" and not model.vkdt_plain_grad:
        out.append(
            "model.vkdt_plain_grad = false: dapply.comp differentiates the plain kernels' "
            "unnormalised sum (defect 17)"
        )
    out += _training_loop_differences(train, data, head)
    return out


def _training_loop_differences(train: TrainConfig, data: DataConfig, head: bool) -> list[str]:
    """Where kpn-t's loss, optimiser and tiles differ from ``train`` and ``data``."""
    out = []
    if train.loss not in LOSSES:
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
    if train.loss == "smape" and not train.vkdt_smape_grad:
        out.append(
            "train.vkdt_smape_grad = false: loss.comp's SMAPE gradient fades small errors "
            "(defect 15)"
        )
    if not train.vkdt_f16_state:
        stored = "weights and moments" if head else "weights"
        out.append(f"train.vkdt_f16_state = false: adam.comp stores the {stored} as float16")
    elif train.vkdt_f16_moments != head:
        out.append(
            f"train.vkdt_f16_moments = {str(train.vkdt_f16_moments).lower()}: this build's "
            + ("adam.comp stores its moments as float16 (defect 14)" if head else
               "adam.comp keeps its moments in float32 (patch 0012)")
        )  # fmt: skip
    if data.tile != VKDT_TILE or data.batch != 1:
        out.append(
            f"data.tile = {data.tile}, data.batch = {data.batch}: cnngenin cuts one "
            f"{VKDT_TILE}x{VKDT_TILE} tile per step"
        )
    return out
