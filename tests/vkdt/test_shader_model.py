"""The shipped design's vkdt-f16 emulation against a NumPy model of the shaders vkdt runs it
with: vkdt ce12d6ed with kpn's patch series, built as `python -m kpn export --vkdt-cfg`
says (INPUT_STAR15_SNR, DENOISE_LEVELS 0, POST_MLP_DIFF with POST_MLP_DIFF_MIRROR_COARSE,
KPN_LEVELS 4, WIDTH 64), on a GPU without cooperative matrices (coopmat.glsl's fallback).

Each function below is one shader, written from its text (line numbers at ce12d6ed plus
the series), with its float16 stores and float16 arithmetic made explicit in NumPy, and
nothing from kpn: ``mip.comp`` (patches 0003 and 0010: the 2x2, 4x4 and 8x8 means of M0
in float32, each level mirrored at its own edge),
``input.glsl`` (0005's star15_snr), ``inf-impl.glsl``/``mlp.h``/``fwd.h`` with
``coopmat_madd``'s fallback (every product a float16, added to a float16 accumulator in
the order of k), ``apply.comp`` (softmax, vkdt's sigmoid), ``up.comp`` (B-spline up,
post_diff's smoothing mirrored at the coarse size, 0007), ``kpn/main.c``'s graph (the
coarsest level's I is the coarser output of the next finer; O_0 float32). vkdt's sampler
is MIRRORED_REPEAT (qvk.c). vkdt-cli itself is compared with kpn by vkdt/oracle.sh.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pytest
import torch

from kpn.config import ModelConfig
from kpn.infer.weights import load_weights
from kpn.model.network import KPNOutput, kpn_forward

from conftest import SPEC_STAR15_CENTRE, SPEC_STAR15_TAPS
from vkdt_shared import ROOT

F16, F32 = np.float16, np.float32
LUMINANCE = np.array([2.62700212e-01, 6.77998072e-01, 5.93017165e-02], F32)  # shared.glsl
Design = tuple[ModelConfig, Sequence[torch.Tensor], list[np.ndarray]]
BSPLINE = {0: (5 / 16, 10 / 16, 1 / 16), 1: (1 / 16, 10 / 16, 5 / 16)}  # up.comp w0, w1


def store16(x: np.ndarray) -> np.ndarray:
    """A float16 image or buffer store (round to nearest even), read back as float32."""
    return np.asarray(x, F32).astype(F16).astype(F32)


def mirror(index: np.ndarray, size: int) -> np.ndarray:
    """VK_SAMPLER_ADDRESS_MODE_MIRRORED_REPEAT on texel indices."""
    folded = np.mod(index, 2 * size)
    return np.where(folded < size, folded, 2 * size - 1 - folded)


def fetch(image: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """texture() at texel centres: ``image[H,W,3]`` at integer (y, x), mirrored."""
    return image[mirror(y, image.shape[0]), mirror(x, image.shape[1])]


def mirror_levels(c: np.ndarray, size: int) -> np.ndarray:
    """mip.comp's mirror_levels (patch 0010): past the 4x4 level's edge, then the 2x2
    level's, then the input's."""
    s1 = (size + 1) // 2
    s2 = (s1 + 1) // 2
    j = c >> 2
    c = np.where(j >= s2, ((2 * s2 - 1 - j) << 2) | (c & 3), c)
    j = c >> 1
    c = np.where(j >= s1, ((2 * s1 - 1 - j) << 1) | (c & 1), c)
    return np.where(c >= size, 2 * size - 1 - c, c)


def mip_comp(m0: np.ndarray) -> list[np.ndarray]:
    """M1, M2, M3: the 2x2, 4x4, 8x8 means of M0 (texelFetch at mirror_levels), pairwise,
    rows then columns, in float32, each stored as float16 (mip.comp with patches 0003 and
    0010)."""
    height, width = m0.shape[:2]
    sizes = [(height, width)]
    for _ in range(3):
        sizes.append(((sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2))
    mips = []
    for level in (1, 2, 3):
        n = 2**level
        out_h, out_w = sizes[level]
        y, x = np.mgrid[0 : n * out_h, 0 : n * out_w]
        block = m0[mirror_levels(y, height), mirror_levels(x, width)]
        while block.shape[1] > out_w:
            block = (block[:, 0::2] + block[:, 1::2]) / F32(2)
        while block.shape[0] > out_h:
            block = (block[0::2] + block[1::2]) / F32(2)
        mips.append(store16(block))
    return mips


def star15_snr(image: np.ndarray, level: int, noise_a: float, noise_b: float) -> np.ndarray:
    """input.glsl's INPUT_STAR15_SNR channels 0..31 of every pixel, ``[H*W, 32]``, as
    inf's threadblock_load_input_static stores them: float16."""
    height, width = image.shape[:2]
    y, x = np.mgrid[0:height, 0:width]

    def lum(rgb: np.ndarray) -> np.ndarray:
        return rgb[..., 0] * LUMINANCE[0] + rgb[..., 1] * LUMINANCE[1] + rgb[..., 2] * LUMINANCE[2]

    def sat(rgb: np.ndarray) -> np.ndarray:
        return rgb.max(axis=-1) - rgb.min(axis=-1)

    centre = fetch(image, y, x)
    lum_c, sat_c = lum(centre), sat(centre)
    scale = F32(65535.0)
    root = np.sqrt(F32(noise_a) + scale * np.maximum(lum_c, 0) * F32(noise_b))
    sigma = np.clip(F32(0.5**level) * root / scale, F32(1e-7), F32(1e30)).astype(F32)
    channels = np.zeros((height, width, 32), F32)
    for tap, (dx, dy) in enumerate(SPEC_STAR15_TAPS):
        rgb = fetch(image, y + dy, x + dx)
        for offset, (value, of_centre) in enumerate(((lum(rgb), lum_c), (sat(rgb), sat_c))):
            v = value if tap == SPEC_STAR15_CENTRE else value - of_centre
            v = v * (F32(1.0) / sigma)
            a = np.abs(v)
            u = F32(1.0) + a
            with np.errstate(divide="ignore", invalid="ignore"):
                log1p = np.where(u == 1, a, np.log(u) * (a / (u - F32(1.0))))
            channels[..., 2 * tap + offset] = np.sign(v) * log1p
    channels[..., 30] = np.log2(sigma * scale) / F32(16.0)
    channels[..., 31] = 1.0
    return channels.reshape(-1, 32).astype(F16)


def mlp_fallback(inputs: np.ndarray, matrices: list[np.ndarray]) -> np.ndarray:
    """inf-impl.glsl's layers with coopmat.glsl's fallback madd: C[i] += A*B over k in
    order, a float16 product into a float16 accumulator from 0; mlp.h's leaky relu
    max(float16(0.001*x), x) after every layer but the last. ``[P,32]`` f16 -> ``[P,16]``."""
    act = inputs
    for index, matrix in enumerate(matrices):
        weights = matrix.astype(F16)  # [out, in]
        acc = np.zeros((act.shape[0], weights.shape[0]), F16)
        for k in range(weights.shape[1]):
            if k < act.shape[1]:  # the input's channels past 31 are 0 (WIDTH 64)
                acc = acc + act[:, k : k + 1] * weights[None, :, k]
        if index < len(matrices) - 1:
            leak = (F32(0.001) * acc.astype(F32)).astype(F16)
            acc = np.maximum(leak, acc)
        act = acc
    return act


def apply_comp(image: np.ndarray, kernels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """apply.comp (softmax, sigmoid alpha): I and alpha, stored as float16."""
    height, width = image.shape[:2]
    y, x = np.mgrid[0:height, 0:width]
    k = kernels.astype(F32).reshape(height, width, 16)
    max_k = k[..., :15].max(axis=-1)
    rgb = np.zeros((height, width, 3), F32)
    den = np.zeros((height, width), F32)
    for tap, (dx, dy) in enumerate(SPEC_STAR15_TAPS):
        w = np.exp(np.clip(F32(0.1) * (k[..., tap] - max_k), -1000, 1000)).astype(F32)
        rgb = rgb + w[..., None] * fetch(image, y + dy, x + dx)
        den = den + w
    rgb = rgb / np.maximum(F32(1e-3), den)[..., None]
    x15 = k[..., 15]
    alpha = F32(0.5) * x15 / np.sqrt(F32(1.0) + x15 * x15) + F32(0.5)  # sigmoid.glsl
    return store16(np.clip(rgb, -65000, 65000)), store16(alpha)


def up_comp(filtered: np.ndarray, alpha: np.ndarray, coarse: np.ndarray, level: int) -> np.ndarray:
    """up.comp with POST_MLP_DIFF and POST_MLP_DIFF_MIRROR_COARSE: the B-spline up of the
    coarser output plus alpha times I minus its own 2x2-mean-then-B-spline smoothing;
    stored as float16 except at level 0 (the module's float32 output)."""
    height, width = filtered.shape[:2]
    y, x = np.mgrid[0:height, 0:width]
    coarse_h, coarse_w = (height + 1) // 2, (width + 1) // 2
    up = np.zeros((height, width, 3), F32)
    smooth = np.zeros((height, width, 3), F32)
    for j in (-1, 0, 1):
        for i in (-1, 0, 1):
            w = np.where(x % 2 == 0, BSPLINE[0][i + 1], BSPLINE[1][i + 1]).astype(F32)
            w = w * np.where(y % 2 == 0, BSPLINE[0][j + 1], BSPLINE[1][j + 1]).astype(F32)
            cy, cx = y // 2 + j, x // 2 + i
            up = up + w[..., None] * fetch(coarse, cy, cx)
            cy, cx = mirror(cy, coarse_h), mirror(cx, coarse_w)
            # bilinear at fine (2c+1): the mean of fine 2c..2c+1, mirrored past the edge
            top = F32(0.5) * (fetch(filtered, 2 * cy, 2 * cx) + fetch(filtered, 2 * cy, 2 * cx + 1))
            bottom = F32(0.5) * (
                fetch(filtered, 2 * cy + 1, 2 * cx) + fetch(filtered, 2 * cy + 1, 2 * cx + 1)
            )
            smooth = smooth + w[..., None] * (F32(0.5) * (top + bottom))
    out = up + alpha[..., None] * (filtered - smooth)
    return out.astype(F32) if level == 0 else store16(out)


def shader_model(
    m0: np.ndarray, matrices: list[np.ndarray], noise_a: float, noise_b: float
) -> list[dict[str, np.ndarray]]:
    """kpn/main.c's graph for 4 levels: every level's I, alpha and O; O of level 0 is
    the output. ``m0`` ``[H,W,3]`` float32."""
    mips = [m0.astype(F32), *mip_comp(m0)]
    levels = []
    for level, mip in enumerate(mips):
        kernels = mlp_fallback(star15_snr(mip, level, noise_a, noise_b), matrices)
        filtered, alpha = apply_comp(mip, kernels)
        levels.append({"mip": mip, "kernels": kernels, "filtered": filtered, "alpha": alpha})
    coarse = levels[-1]["filtered"]  # the coarsest I is the next finer level's Oc
    levels[-1]["output"] = coarse
    for level in reversed(range(len(mips) - 1)):
        parts = levels[level]
        coarse = up_comp(parts["filtered"], parts["alpha"], coarse, level)
        parts["output"] = coarse
    return levels


NOISE_A, NOISE_B = 20000.0, 40.0  # the oracle's profile, on the 0..65535 scale


def noisy_image(height: int, width: int) -> np.ndarray:
    """``[H,W,3]`` float32: a random clean image with the profile's noise."""
    generator = np.random.default_rng(height)
    clean = generator.uniform(0.05, 0.8, (height, width, 3)).astype(F32)
    sigma = np.sqrt(NOISE_A + 65535 * clean * NOISE_B) / 65535
    return (clean + sigma * generator.standard_normal(clean.shape)).astype(F32)


def kpn_levels(
    noisy: np.ndarray, weights: Sequence[torch.Tensor], config: ModelConfig
) -> KPNOutput:
    """kpn's forward pass of ``noisy`` ``[H,W,3]`` with every level's images."""
    image = torch.from_numpy(noisy).permute(2, 0, 1)[None]
    with torch.no_grad():
        return kpn_forward(image, torch.tensor([[NOISE_A, NOISE_B]]), weights, config)


def kpn(tensor: torch.Tensor) -> np.ndarray:
    """``[1,C,H,W]`` -> ``[H,W,C]`` float32."""
    return tensor[0].permute(1, 2, 0).float().numpy()


@pytest.fixture(scope="module")
def design() -> Design:
    loaded = load_weights(ROOT / "weights" / "design")
    config = dataclasses.replace(loaded.config.model, precision="vkdt-f16", vkdt_matmul="fallback")
    assert (config.width, config.levels, config.features, config.blend) == (
        64, 4, "star15_snr", "post_diff",
    )  # fmt: skip
    assert (config.down, config.up, config.denoise_levels, config.vkdt_post_diff_border) == (
        "box2", "bspline", 0, False,
    )  # fmt: skip
    matrices = [w.detach().to(torch.float16).numpy() for w in loaded.model.mlp.weights]
    return config, loaded.model.mlp.weights, matrices


@pytest.mark.parametrize("size", [(40, 48), (37, 29)], ids=["even", "odd"])
def test_the_design_in_vkdt_f16_is_the_patched_shaders(
    design: Design, size: tuple[int, int]
) -> None:
    """Level by level: the mips bit for bit, 97% of the network outputs bit for bit (the
    rest round the other way through the op order inside a float32 sum or exp), every I
    and alpha within two float16 steps, the output within 1e-3 and 95% of it bit for bit
    (the oracle's bound for vkdt-cli itself is 2e-3)."""
    config, weights, matrices = design
    noisy = noisy_image(*size)
    model = shader_model(noisy, matrices, NOISE_A, NOISE_B)
    out = kpn_levels(noisy, weights, config)
    for level, (ours, theirs) in enumerate(zip(model, out.levels, strict=True)):
        np.testing.assert_array_equal(kpn(theirs.mip), ours["mip"], err_msg=f"M{level}")
        kernels = kpn(theirs.kernel).reshape(-1, 16)
        identical = np.mean(kernels == ours["kernels"].astype(F32))
        assert identical > 0.97, f"level {level}: {identical:.4f} of the network outputs"
        step = 2.0**-10 * np.maximum(1.0, np.abs(ours["filtered"]))
        assert np.all(np.abs(kpn(theirs.filtered) - ours["filtered"]) <= 2 * step), level
        assert np.abs(kpn(theirs.alpha)[..., 0] - ours["alpha"]).max() <= 2.0**-10, level
    difference = np.abs(kpn(out.output) - model[0]["output"])
    assert difference.max() <= 1e-3
    assert np.mean(difference == 0) > 0.95


def test_the_model_sees_the_order_of_float16_sums(design: Design) -> None:
    """kpn's coopmat path (a float16 accumulator rounded per 16-wide slice, what GPUs with
    cooperative matrices run) is another network output: most of level 0's differ."""
    config, weights, matrices = design
    noisy = noisy_image(40, 48)
    model = shader_model(noisy, matrices, NOISE_A, NOISE_B)
    out = kpn_levels(noisy, weights, dataclasses.replace(config, vkdt_matmul="coopmat"))
    kernels = kpn(out.levels[0].kernel).reshape(-1, 16)
    assert np.mean(kernels == model[0]["kernels"].astype(F32)) < 0.5
