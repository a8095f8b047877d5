"""One dataclass tree for every setting, read from TOML and validated before any work.

A config file has the sections ``[model]``, ``[data]``, ``[train]`` and ``[infer]``; every
key is optional and falls back to the default written here, whose comment says why it was
chosen. Unknown keys, wrong types and values outside their choices are refused with one
line naming the key, the value and what is allowed (:class:`~kpn.errors.KpnError`).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kpn import presets
from kpn.errors import KpnError
from kpn.hints import setting_problem

DownFilter = Literal["box2", "binomial5", "box2_vkdt"]
UpFilter = Literal["bspline", "bilinear"]
MlpInput = Literal["mip", "detail"]
Blend = Literal["mix", "add", "post_diff"]
Guide = Literal["none", "centre"]
Features = Literal["star15", "star15_snr", "patch8x8"]
KernelTaps = Literal["star15", "star21"]
NoiseLuminance = Literal["x", "lowpass"]
Activation = Literal["leaky_relu", "relu", "none"]
KernelActivation = Literal["softmax", "plain"]
AlphaActivation = Literal["const", "plain", "clamped", "sigmoid"]
Precision = Literal["fp32", "bf16", "vkdt-f16"]  # kpn.model.mlp.PRECISIONS
VkdtMatmul = Literal["coopmat", "fallback"]  # kpn.model.precision.VKDT_MATMULS
Loss = Literal["l2", "smape", "cosh", "psnr"]
TrainPrecision = Literal["model", "bf16"]
LossReduction = Literal["sum", "mean"]
LrSchedule = Literal["constant", "cosine"]

# The input width each feature extractor produces (docs/design.md §2).
FEATURE_CHANNELS = {"star15": 32, "star15_snr": 32, "patch8x8": 64}
# ... and the channels a guide adds (design §16): the coarser output's lum and saturation
GUIDE_CHANNELS = {"none": 0, "centre": 2}
# ... and those model.chroma_input adds (design §18): two opponent colours of each tap
CHROMA_INPUT_CHANNELS = 30
KERNEL_OUTPUTS = 16  # vkdt's kernel outputs a pixel: star15's 15 tap logits, then alpha
# The taps of each kernel shape (kpn.model.features.KERNEL_TAPS lists them, design §20).
KERNEL_TAP_COUNTS = {"star15": 15, "star21": 21}
# vkdt's kpn inference module reads every .lut with in_width 32 (kpn/main.c).
VKDT_INFERENCE_IN_WIDTH = 32


@dataclass(frozen=True)
class ModelConfig:
    """The network and the pyramid around it (design §1-§5, §10). Defaults: the design
    (configs/design.toml), which runs in kpn only (its star15_snr input, and W 64, which
    vkdt's kpn module misreads: configs/photos-vkdt-w32.toml is the model for vkdt).

    ``precision = "vkdt-f16"`` computes as vkdt's inference graph stores: the module's
    input M_0 and output O_0 in float32 (the i-pfm and o-pfm connectors), every other
    image (mips, each reduced from a stored one before it as mip.comp and sub.comp do;
    details; filtered images, alphas; coarser outputs), the weights, activations and
    kernels in float16.
    ``vkdt_matmul`` picks vkdt's matrix path for it (``kpn.model.precision``): ``"coopmat"``,
    the cooperative-matrix path of GPUs with ``VK_KHR_cooperative_matrix`` (a float16
    accumulator rounded after each 16-wide slice), or ``"fallback"``, the path of all
    others (``shared/coopmat.glsl``: every product rounded to float16 and added to the
    float16 accumulator one at a time); only ``vkdt-f16`` has it. ``vkdt_head_layout``
    (W > 32) trains a network whose first hidden layer feeds only its first 32 units on,
    the one kind of W 64 network that vkdt HEAD's kpn module runs as trained from a
    ``.lut`` in its layout (``export --vkdt-layout head``; docs/vkdt.md, defect 6).
    """

    levels: int = 4  # network levels N; vkdt's kpn-t trains 4
    down: DownFilter = "box2"  # pyramid reduction; box2 is the original 2x2 mip
    up: UpFilter = "bspline"  # expansion for details and reconstruction
    mlp_input: MlpInput = "mip"  # X of each level: its mip M_i or its detail D_i
    blend: Blend = "mix"  # coarse-to-fine reconstruction (design §5)
    features: Features = "star15_snr"  # per-pixel input; star15_snr: taps in noise units
    guide: Guide = "none"  # centre: the MLP also reads up(O_{k+1}) at the pixel (design §16)
    noise_luminance: NoiseLuminance = "x"  # sigma channel from X (vkdt) or the low-pass M_i
    width: int = 64  # hidden width W; vkdt builds 32 or 64, its kpn module reads 32
    n_hidden: int = 6  # hidden layers, as tiny-cuda-nn's fully fused MLP in vkdt
    activation: Activation = "leaky_relu"  # vkdt's default hidden activation (slope 0.001)
    kernel_activation: KernelActivation = "softmax"  # kernel weights always normalised
    alpha_activation: AlphaActivation = "sigmoid"  # blend weight kept in [0, 1], smooth
    denoise_levels: int = 0  # filter only levels < this; 0 = all (vkdt HEAD: 2)
    gradient_stop: bool = False  # vkdt's training: no gradient from level 0 into coarser
    block_transpose: bool = False  # vkdt HEAD's kernel store bug since 2026-01 (design §10)
    vkdt_kernel_grad_untransposed: bool = False  # ... and its backward, which ignores it
    precision: Precision = "fp32"  # bf16: hidden products in bfloat16; vkdt-f16: vkdt f16
    vkdt_matmul: VkdtMatmul = "coopmat"  # vkdt-f16 only: GPUs with cooperative matrices
    # vkdt-f16 only (other precisions ignore it, as a float32 run of a vkdt preset does):
    # the network's gradients as kpn-t's bck and mulw compute them (float16 stores and
    # products, kpn.model.vkdt_backward); false: float32, through the rounding
    vkdt_f16_backward: bool = False
    # kpn-t's dapply: the softmax kernels' gradient 10 times the true one (defect 16), the
    # plain kernels' that of their unnormalised sum (defect 17); each for its activation
    # only (a vkdt preset's switches stay with a .lut whose trailer names the other)
    vkdt_softmax_grad: bool = False
    vkdt_plain_grad: bool = False
    vkdt_head_layout: bool = False  # W > 32: first layer units 32.. unused, for vkdt HEAD
    # times level 0 is filtered with its kernels: 2 filters the filtered image again with the
    # same kernels, a reach of 4 pixels for one more apply pass (kpn only, design §17)
    fine_passes: int = 1
    # post_diff: up(down(I)) as vkdt's up.comp computes it, whose odd-sized levels take the
    # coarse texels past the edge from the fine image mirrored (design §5); false: the
    # pyramid's own, which reconstructs the mip exactly on any size
    vkdt_post_diff_border: bool = False
    # kpn only (design §18): the MLP also predicts a kernel and an alpha for the chroma, the
    # image less its channel mean, so colour noise is smoothed beyond what the luma's edges
    # allow; the network then has 32 outputs, which vkdt's .lut (16) cannot hold
    chroma_kernel: bool = False
    # kpn only (design §18): the MLP also reads each star tap's two opponent colours against
    # the centre's, in noise units, where star15_snr's saturation cannot tell hues apart
    chroma_input: bool = False
    # kpn only (design §20): the kernels' taps, vkdt's 15-tap star or star21, the star with
    # its transpose (5x5 without its corners), which reaches 2 pixels along both axes
    kernel_taps: KernelTaps = "star15"

    @property
    def in_features(self) -> int:
        """Channels of the per-pixel network input."""
        chroma = CHROMA_INPUT_CHANNELS if self.chroma_input else 0
        return FEATURE_CHANNELS[self.features] + GUIDE_CHANNELS[self.guide] + chroma

    @property
    def kernel_outputs(self) -> int:
        """One kernel's outputs a pixel: its taps' logits, then its alpha."""
        return KERNEL_TAP_COUNTS[self.kernel_taps] + 1

    @property
    def outputs(self) -> int:
        """The network's outputs a pixel: a kernel's logits and an alpha, twice with
        ``chroma_kernel`` (luma's, then chroma's)."""
        return (2 if self.chroma_kernel else 1) * self.kernel_outputs

    def validate(self, where: str) -> None:
        if not 1 <= self.levels <= 16:
            raise KpnError(f"{where}: model.levels = {self.levels} is outside 1..16")
        if self.width % 16 or not 16 <= self.width <= 256:
            raise KpnError(
                f"{where}: model.width = {self.width} must be a multiple of 16 in 16..256 "
                "(vkdt's cooperative matrices work on 16x16 blocks)"
            )
        if not 1 <= self.n_hidden <= 32:
            raise KpnError(f"{where}: model.n_hidden = {self.n_hidden} is outside 1..32")
        if self.chroma_input and self.features != "star15_snr":
            raise KpnError(
                f"{where}: model.chroma_input extends star15_snr's taps (its sigma): it needs "
                f"model.features = 'star15_snr', not '{self.features}'"
            )
        if self.width < self.in_features:
            # vkdt feeds the input as one W-wide row: the .lut layout has no room otherwise
            guided = "" if self.guide == "none" else f" with model.guide = '{self.guide}'"
            guided += " with model.chroma_input" if self.chroma_input else ""
            raise KpnError(
                f"{where}: model.features = '{self.features}'{guided} has {self.in_features} "
                f"input channels and needs model.width >= {self.in_features}, not {self.width}"
            )
        if self.denoise_levels < 0:
            raise KpnError(f"{where}: model.denoise_levels = {self.denoise_levels} must be >= 0")
        if self.vkdt_kernel_grad_untransposed and not self.block_transpose:
            raise KpnError(
                f"{where}: model.vkdt_kernel_grad_untransposed needs model.block_transpose"
            )
        if self.vkdt_matmul != "coopmat" and self.precision != "vkdt-f16":
            raise KpnError(
                f"{where}: model.vkdt_matmul = '{self.vkdt_matmul}' is a path of vkdt's float16 "
                f"arithmetic: it needs model.precision = 'vkdt-f16', not '{self.precision}'"
            )
        if self.vkdt_head_layout and self.width <= VKDT_INFERENCE_IN_WIDTH:
            raise KpnError(
                f"{where}: model.vkdt_head_layout is for model.width > "
                f"{VKDT_INFERENCE_IN_WIDTH}: vkdt's kpn module reads W = {self.width} files "
                "as kpn-t writes them"
            )
        if self.guide != "none" and (self.features, self.mlp_input) != ("star15_snr", "mip"):
            # the guide is the coarser output against the pixel, in noise units: both
            # must be images of the same thing, and the sigma star15_snr divides by
            raise KpnError(
                f"{where}: model.guide = '{self.guide}' needs model.features = 'star15_snr' "
                f"and model.mlp_input = 'mip', not '{self.features}' and '{self.mlp_input}'"
            )
        wanted_input = "detail" if self.blend == "add" else "mip"
        if self.mlp_input != wanted_input:
            raise KpnError(
                f"{where}: model.blend = '{self.blend}' needs model.mlp_input = "
                f"'{wanted_input}', not '{self.mlp_input}' (docs/design.md §5)"
            )
        if self.fine_passes not in (1, 2):
            raise KpnError(f"{where}: model.fine_passes = {self.fine_passes!r} must be 1 or 2")
        if self.chroma_kernel and (self.precision == "vkdt-f16" or self.block_transpose):
            raise KpnError(
                f"{where}: model.chroma_kernel is kpn's own network (32 outputs): it has no "
                "vkdt float16 emulation nor vkdt's block transpose (docs/design.md §18)"
            )
        if self.kernel_taps != "star15" and (self.precision == "vkdt-f16" or self.block_transpose):
            raise KpnError(
                f"{where}: model.kernel_taps = '{self.kernel_taps}' is kpn's own kernel: it has "
                "no vkdt float16 emulation nor vkdt's block transpose (docs/design.md §20)"
            )
        if self.chroma_kernel and self.fine_passes != 1:
            raise KpnError(
                f"{where}: model.chroma_kernel filters level 0 once (model.fine_passes = 1)"
            )
        if self.vkdt_post_diff_border and self.blend != "post_diff":
            raise KpnError(
                f"{where}: model.vkdt_post_diff_border is post_diff's, not "
                f"model.blend = '{self.blend}''s (docs/design.md §5)"
            )


DataSource = Literal["deadleaves", "clean", "pairs"]
RawMode = Literal["half", "demosaic", "mosaic"]  # kpn.io.raw.RAW_MODES
TileOffset = Literal["anywhere", "inside"]
NoiseLaw = Literal["uniform", "loguniform", "loglevel", "cameras"]
NprofScale = Literal["refuse", "u16", "dng", "raw"]
EV_LIMIT = 16.0  # 2**16 is float16's range, vkdt's tile format
MAX_GRAIN = 0.1  # data.grain: a tenth of sRGB's range is no longer grain
NOISE_MODES = (2, 4)  # the data.generate modes that add synthetic noise
MAX_TOLD_JITTER = 4.0  # data.noise_told_jitter: sigma told at most 4x off


@dataclass(frozen=True)
class DataConfig:
    """Where training tiles come from and how cnngenin turns them into pairs (design §8)."""

    source: DataSource = "deadleaves"  # built in: trains on a fresh machine, no download
    reference_dir: str = ""  # clean and pairs: folder of clean images (PFM, PNG/JPEG/TIFF, raw)
    noisy_dir: str = ""  # pairs: noisy images, matched to references by file name
    deadleaves_fraction: float = 0.0  # clean, pairs: share of training tiles from dead leaves
    texture_candidates: int = 1  # clean: a training tile is the most textured of this many
    raw_mode: RawMode = "half"  # raw files: a pixel per 2x2 block, no demosaicing artefacts
    tile: int = 64  # vkdt's cnngenin tile size
    batch: int = 16  # tiles per step
    generate: int = 2  # cnngenin mode: 0 static, 1 random, 2 noise, 3 mosaic, 4 noise + mosaic
    ev_min: float = -2.0  # exposure 2**ev, ev uniform in [ev_min, ev_max]: vkdt's [-2, 2]
    ev_max: float = 2.0  # see ev_min
    flip_x: bool = True  # vkdt flips tiles at random in x
    flip_y: bool = True  # and in y
    # kpn only (design §8): also transpose tiles at random (vkdt's cnngenin never does)
    transpose: bool = False
    # kpn only (design §8): half the training tiles' references get white grain, std
    # u * grain on the sRGB scale (u uniform), as a scan's film grain or a photo's finest
    # texture: fine variation beyond the noise told is the image's (vkdt's cnngenin: none)
    grain: float = 0.0
    offset: TileOffset = "anywhere"  # vkdt: uniform over the image, mirrored past its edges
    # vkdt's (a, b) law; "loguniform"; "loglevel": each decade of sigma at mid-grey as
    # likely; "cameras": real profiles (kpn.data.synthesis.draw_noise_profile)
    noise: NoiseLaw = "uniform"
    noise_a_min: float = 0.0  # a on the 0..65535 scale; vkdt: 1000*65535*u, u in [0, 1)
    noise_a_max: float = 65535000.0  # see noise_a_min; real cameras stay far below
    noise_b_min: float = 0.0  # b on the 0..65535 scale; vkdt: 1000*u
    noise_b_max: float = 1000.0  # see noise_b_min
    nprof_dir: str = ""  # .nprof folder: the cameras law draws from it, pairs look up theirs
    nprof_scale: NprofScale = "refuse"  # scale of .nprof files without a scale line (vkdt's)
    noise_a: float = 0.0  # pairs: profile of noisy files without a .nprof; 0, 0: refuse them
    noise_b: float = 0.0  # see noise_a
    # training tiles tell the network their profile times f^2 (sigma times f), f
    # log-uniform in [1/jitter, jitter]: a network that degrades gracefully when told an
    # estimate (--noise auto); 1: told exactly. The validation set is always told exactly.
    noise_told_jitter: float = 1.0
    workers: int = 2  # loader processes making tiles while the model trains
    validation_count: int = 32  # tiles in the fixed validation set
    validation_tile: int = 128  # larger than a training tile: every level sees structure
    validation_seed: int = 0  # fixed, so the validation set is the same in every run
    validation_reference_dir: str = ""  # held-out clean images; "" = reference_dir
    validation_noisy_dir: str = ""  # held-out noisy images (pairs); "" = noisy_dir

    def validate(self, where: str) -> None:
        def fail(key: str, problem: str) -> KpnError:
            return KpnError(f"{where}: data.{key} = {getattr(self, key)!r} {problem}")

        # the dead-leaves blur mirrors two pixels past each edge
        for key in ("tile", "validation_tile"):
            if getattr(self, key) < 2:
                raise fail(key, "must be >= 2")
        for key in ("batch", "validation_count", "texture_candidates"):
            if getattr(self, key) < 1:
                raise fail(key, "must be >= 1")
        for key in ("workers", "validation_seed"):
            if getattr(self, key) < 0:
                raise fail(key, "must be >= 0")
        if not 0 <= self.generate <= 4:
            raise fail("generate", "is outside 0..4 (cnngenin's modes)")
        for key in ("ev_min", "ev_max"):
            if abs(getattr(self, key)) > EV_LIMIT:
                raise fail(key, f"is outside -{EV_LIMIT:g}..{EV_LIMIT:g}")
        if self.ev_min > self.ev_max:
            raise fail("ev_min", f"is above data.ev_max = {self.ev_max!r}")
        for key in ("noise_a_min", "noise_b_min", "noise_a", "noise_b"):
            if getattr(self, key) < 0:
                raise fail(key, "must be >= 0 (a variance)")
        for name in ("a", "b"):
            low, high = f"noise_{name}_min", f"noise_{name}_max"
            if getattr(self, low) > getattr(self, high):
                raise fail(low, f"is above data.{high} = {getattr(self, high)!r}")
            if self.noise == "loguniform" and getattr(self, low) <= 0:
                raise fail(low, "must be > 0 for data.noise = 'loguniform'")
        if self.noise == "loglevel" and self.noise_a_min <= 0 and self.noise_b_min <= 0:
            raise fail("noise_a_min", "or data.noise_b_min must be > 0 for data.noise = 'loglevel'")
        if not 1 <= self.noise_told_jitter <= MAX_TOLD_JITTER:
            raise fail("noise_told_jitter", f"is outside 1..{MAX_TOLD_JITTER:g}")
        if not 0 <= self.grain <= MAX_GRAIN:
            raise fail("grain", f"is outside 0..{MAX_GRAIN:g} (sRGB std)")
        if self.grain and self.generate not in NOISE_MODES:
            raise fail("grain", "goes under synthetic noise only: needs data.generate 2 or 4")
        if not 0 <= self.deadleaves_fraction <= 1:
            raise fail("deadleaves_fraction", "is outside 0..1")
        if self.deadleaves_fraction and self.source == "deadleaves":
            raise fail(
                "deadleaves_fraction",
                "mixes dead leaves into files: needs source 'clean' or 'pairs'",
            )
        if self.noise == "cameras" and not self.nprof_dir:
            raise fail("nprof_dir", "must name a folder of .nprof files for noise = 'cameras'")
        if self.source in ("clean", "pairs") and not self.reference_dir:
            raise fail("reference_dir", f"must name a folder for source = '{self.source}'")
        if self.source == "pairs" and not self.noisy_dir:
            raise fail("noisy_dir", "must name a folder for source = 'pairs'")


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation (design §6, §7). Adam's defaults are vkdt's kpn-t parameters."""

    loss: Loss = "smape"  # vkdt's shipped LOSS; favours noise reduction
    loss_reduction: LossReduction = "mean"  # vkdt sums; a mean keeps lr independent of tile
    steps: int = 2000  # optimiser steps
    lr: float = 0.01  # vkdt's Adam alpha
    lr_schedule: LrSchedule = "constant"  # vkdt's; "cosine" decays to lr * min_lr_ratio
    warmup_steps: int = 0  # linear warm-up from 0, before either schedule
    min_lr_ratio: float = 0.1  # where the cosine schedule ends
    beta1: float = 0.99  # vkdt's
    beta2: float = 0.999  # vkdt's
    eps: float = 1e-4  # vkdt's: large, as its moments live in float16
    l2: float = 0.001  # vkdt's L2: adds 2 * l2 * w to the gradient after clipping
    grad_clip: float = 1000.0  # vkdt's: global gradient norm bound (0 = off)
    # the network's arithmetic while training: the model's own, or (a float32 model) its
    # hidden products in bfloat16 (model.precision "bf16"): 1.75x the steps per hour with
    # equal validation PSNR per step (README, Speed); the trained model stays float32
    precision: TrainPrecision = "model"
    # "random" (vkdt's Xavier) or a .lut / checkpoint to start from (a checkpoint of a
    # narrower model.width, or without model.chroma_input, is grown into it: design §7)
    init: str = "random"
    log_every: int = 10  # steps between scalar logs and progress lines
    val_every: int = 100  # steps between validations
    checkpoint_every: int = 250  # steps between checkpoints
    image_every: int = 500  # steps between TensorBoard images and histograms
    # vkdt's optimiser as it is (design §7, §10), for replaying its training:
    vkdt_grad_clip: bool = False  # clip by the norm of only the first ceil(N/32) entries
    grad_scale: float = 128.0  # vkdt's GRAD_SCALE, which that norm includes
    vkdt_bias_correction: bool = False  # Adam's bias correction only before frame 5000
    vkdt_f16_state: bool = False  # weights (and Adam moments, vkdt_f16_moments) as float16
    vkdt_f16_moments: bool = True  # adam.comp's float16 moments (defect 14; patch 0012: float32)
    vkdt_smape_grad: bool = False  # loss.comp's SMAPE derivative (kpn.train.loss), not SMAPE's

    def validate(self, where: str) -> None:
        positive = ("steps", "log_every", "val_every", "checkpoint_every", "image_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise KpnError(f"{where}: train.{name} = {getattr(self, name)} must be >= 1")
        if not self.lr > 0:
            raise KpnError(f"{where}: train.lr = {self.lr} must be > 0")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise KpnError(f"{where}: train.{name} = {getattr(self, name)} must be in [0, 1)")
        for name in ("eps", "l2", "grad_clip", "warmup_steps"):
            if getattr(self, name) < 0:
                raise KpnError(f"{where}: train.{name} = {getattr(self, name)} must be >= 0")
        if not self.grad_scale > 0:
            raise KpnError(f"{where}: train.grad_scale = {self.grad_scale} must be > 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise KpnError(f"{where}: train.min_lr_ratio = {self.min_lr_ratio} must be in [0, 1]")
        if self.vkdt_smape_grad and self.loss != "smape":
            raise KpnError(
                f"{where}: train.vkdt_smape_grad is loss.comp's SMAPE derivative: it needs "
                f"train.loss = 'smape', not '{self.loss}'"
            )
        if self.init != "random" and not self.init.endswith((".lut", ".pt")):
            raise KpnError(
                f"{where}: train.init = {self.init!r} must be 'random' or a .lut or .pt file"
            )


InferPrecision = Literal["auto", "model", "fp32", "bf16", "vkdt-f16"]
SureDivergence = Literal["one_pass", "two_pass"]  # kpn.infer.sure
SureSplit = Literal["none", "luma_chroma"]  # kpn.infer.sure.SPLITS
MIN_TILE = 8  # smaller tiles are nearly all halo
MAX_SURE_WINDOW = 4095
ENSEMBLES = (1, 2, 4, 8)  # infer.ensemble: the first 1, 2, 4 or all 8 of the square's symmetries


@dataclass(frozen=True)
class InferConfig:
    """How photos are denoised (kpn.infer.denoiser, tiled by kpn.model.tiling)."""

    levels: int = 0  # network levels at inference; 0 = model.levels (vkdt's kpn uses 6)
    tile: int = 1024  # core side of a tile, pixels of each level; 0 = whole image at once
    # auto: model.precision, but fp32 as bf16 where the device has native bfloat16
    # (kpn.infer.denoiser)
    precision: InferPrecision = "auto"
    nprof_scale: NprofScale = "refuse"  # scale of .nprof files without a scale line (vkdt's)
    # blend the output towards the input where SURE estimates that the network does harm
    # (kpn.infer.sure); vkdt has no such stage
    sure: bool = True
    sure_window: int = 33  # odd side of the window of each pixel's blend weight; 0: one weight
    # SURE's divergence: one_pass, the probe carried through the network's own pass (a
    # model with vkdt's block transpose, or run in vkdt-f16, takes two_pass); two_pass, a
    # second pass of the network on a perturbed input (design §13)
    sure_divergence: SureDivergence = "one_pass"
    # kpn only: which parts of the network's change get a SURE weight of their own: all of
    # it, none; or its luma (the channels' mean) and its chroma, luma_chroma (design §13:
    # better from ISO 6400 up; not yet the default, which would change every published number)
    sure_split: SureSplit = "none"
    # kpn only: the mean of the outputs of 1, 2, 4 or 8 orientations of the image (identity,
    # transpose, half turn, anti-transpose, then the flips): ENSEMBLE times the time
    # (kpn.infer.denoiser.ORIENTATIONS, docs/design.md §19)
    ensemble: int = 1

    def validate(self, where: str) -> None:
        if self.ensemble not in ENSEMBLES:
            raise KpnError(
                f"{where}: infer.ensemble = {self.ensemble!r} must be one of "
                f"{', '.join(map(str, ENSEMBLES))} (orientations of the image averaged)"
            )
        if (
            self.sure_window < 0
            or self.sure_window > MAX_SURE_WINDOW
            or (self.sure_window > 0 and self.sure_window % 2 == 0)
        ):
            raise KpnError(
                f"{where}: infer.sure_window = {self.sure_window} must be 0 (one weight for "
                f"the image) or odd, at most {MAX_SURE_WINDOW}"
            )
        if self.levels < 0 or self.levels > 16:
            raise KpnError(f"{where}: infer.levels = {self.levels} is outside 0..16")
        if self.tile != 0 and self.tile < MIN_TILE:
            raise KpnError(
                f"{where}: infer.tile = {self.tile} must be 0 (untiled) or >= {MIN_TILE}"
            )


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)

    def validate(self, where: str) -> None:
        for section in dataclasses.fields(self):
            getattr(self, section.name).validate(where)
        if self.train.precision == "bf16" and self.model.precision != "fp32":
            raise KpnError(
                f"{where}: train.precision = 'bf16' trains a float32 model, not "
                f"model.precision = '{self.model.precision}'"
            )

    @property
    def training_model(self) -> ModelConfig:
        """The model as training runs it: ``model``, with ``train.precision`` applied."""
        if self.train.precision == "model":
            return self.model
        return dataclasses.replace(self.model, precision=self.train.precision)


def _describe_type(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(hint))
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[hint]


def _coerce(value: Any, hint: Any, key: str, where: str) -> Any:
    """Check one TOML value against its field's type; ints are accepted for floats."""
    ok: bool
    if typing.get_origin(hint) is Literal:
        ok = value in typing.get_args(hint) and isinstance(value, str)
    elif hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
            ok = math.isfinite(value)
    elif hint is str:
        ok = isinstance(value, str)
    else:  # pragma: no cover - a field type this loader was not taught
        raise TypeError(f"unsupported config field type {hint!r} for {key}")
    if not ok:
        expected = _describe_type(hint)
        raise KpnError(f"{where}: {key} = {value!r} is not allowed: expected {expected}")
    return value


def _build(cls: type, table: Any, prefix: str, where: str) -> Any:
    if not isinstance(table, dict):
        raise KpnError(f"{where}: [{prefix}] must be a table, not {table!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in table.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if key not in names:
            allowed = ", ".join(sorted(names))
            raise KpnError(f"{where}: unknown key '{dotted}' (allowed: {allowed})")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, dotted, where)
        else:
            kwargs[key] = _coerce(value, hint, dotted, where)
    return cls(**kwargs)


def config_from_dict(table: dict[str, Any], where: str = "<config>") -> Config:
    """Build and validate a :class:`Config` from nested dicts as ``tomllib`` returns them."""
    config = _build(Config, table, "", where)
    config.validate(where)
    return config


BASE_KEY = "base"  # a config may name another, relative to itself, whose values it changes


def load_config(path: str | Path) -> Config:
    """Read a TOML config file, or a preset by name (``"quick"``: :mod:`kpn.presets`);
    every failure is a one-line :class:`KpnError`.

    A top-level ``base = "design.toml"`` reads that file first (relative to this one) and
    lays this file's tables over it key by key, so presets name only what they change.
    """
    path = Path(path)
    if not path.exists() and presets.is_preset_name(str(path)):
        path = presets.preset_path(str(path), "config")
    return config_from_dict(_read_table(path, ()), str(path))


def _read_table(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        where = f" (base of {chain[-1]})" if chain else ""
        raise KpnError(f"{path}: config file not found{where}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KpnError(f"{path}: cannot read config: {exc}") from None
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise KpnError(f"{path}: invalid TOML: {exc}") from None
    base = table.pop(BASE_KEY, None)
    if base is None:
        return table
    if not isinstance(base, str):
        raise KpnError(f"{path}: {BASE_KEY} = {base!r} must be a file name")
    base_path = (path.parent / base).resolve()
    if base_path in chain or base_path == path.resolve():
        raise KpnError(f"{path}: {BASE_KEY} = {base!r} makes a cycle of configs")
    merged = _read_table(base_path, (*chain, path.resolve()))
    for section, values in table.items():
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section] = {**merged[section], **values}
        else:
            merged[section] = values
    return merged


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"model.width=64"`` -> (["model", "width"], 64), the value read as a TOML value.

    A value that is not valid TOML (``model.down=box2``) is taken as a bare string, so
    shells need no extra quoting.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise KpnError(f"override '{text}': expected section.key=value")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.split("."), value


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Return ``config`` with ``section.key=value`` overrides applied and re-validated; an
    unknown setting is a KpnError naming the settings closest to it."""
    table = config_to_dict(config)
    for text in overrides:
        path, value = parse_override(text)
        problem = setting_problem(path, table)
        if problem is not None:
            raise KpnError(f"--set {'.'.join(path)}: {problem}")
        table[path[0]][path[1]] = value
    return config_from_dict(table, "--set")


def config_to_dict(config: Any) -> dict[str, Any]:
    """The config as nested plain dicts (a fresh copy)."""
    return dataclasses.asdict(config)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    raise TypeError(f"cannot write {value!r} as TOML")  # pragma: no cover


def config_to_toml(config: Config) -> str:
    """The fully resolved config as TOML text that :func:`load_config` reads back equal."""
    lines: list[str] = []
    for section, table in config_to_dict(config).items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in table.items())
        lines.append("")
    return "\n".join(lines)
