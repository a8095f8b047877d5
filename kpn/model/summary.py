"""A Keras-style summary of a model config: layers, parameters, pyramid sizes, FLOPs."""

from __future__ import annotations

import itertools

from kpn.config import ModelConfig
from kpn.model.pyramid import level_sizes


def layer_shapes(config: ModelConfig) -> list[tuple[str, int, int]]:
    """``[(name, in, out), ...]`` of the MLP's bias-free layers."""
    sizes = [config.in_features] + [config.width] * config.n_hidden + [config.outputs]
    names = [f"hidden {i}" for i in range(config.n_hidden)] + ["output"]
    pairs = zip(names, itertools.pairwise(sizes), strict=True)
    return [(name, fan_in, fan_out) for name, (fan_in, fan_out) in pairs]


def parameter_count(config: ModelConfig) -> int:
    return sum(fan_in * fan_out for _, fan_in, fan_out in layer_shapes(config))


def mlp_flops_per_pixel(config: ModelConfig) -> int:
    """Multiply-adds of the MLP for one pixel of one level, counted as 2 FLOPs each."""
    return 2 * parameter_count(config)


def filtered_pixels(config: ModelConfig, height: int, width: int, levels: int | None = None) -> int:
    """Pixels the MLP runs on for one image: the levels that are filtered, summed."""
    count = config.levels if levels is None else levels
    denoised = min(config.denoise_levels or count, count)
    return sum(h * w for h, w in level_sizes(height, width, count)[:denoised])


def flops_per_pixel(config: ModelConfig, height: int, width: int) -> float:
    """MLP FLOPs per input pixel of an image of this size, all levels included."""
    return mlp_flops_per_pixel(config) * filtered_pixels(config, height, width) / (height * width)


def summary(config: ModelConfig, height: int = 1024, width: int = 1024) -> str:
    """The summary text; its last line is ``total parameters: N``."""
    rule = "-" * 64
    lines = [
        f"KPN: {config.levels} levels, {config.features} input, width {config.width}, "
        f"{config.n_hidden} hidden, {config.activation}, {config.precision}",
        f"down {config.down}, up {config.up}, X = {config.mlp_input}, blend {config.blend}, "
        f"kernel {config.kernel_activation} {config.kernel_taps}, alpha {config.alpha_activation}"
        + (", and a chroma kernel and alpha" if config.chroma_kernel else "")
        + (", and the taps' opponent colours as input" if config.chroma_input else ""),
        rule,
        f"{'layer':<16}{'shape':<24}{'output':<14}{'params':>10}",
        rule,
    ]
    for name, fan_in, fan_out in layer_shapes(config):
        lines.append(
            f"{name:<16}{f'[{fan_out} x {fan_in}]':<24}{f'[N, {fan_out}]':<14}"
            f"{fan_in * fan_out:>10}"
        )
    lines += [rule, f"pyramid for {width}x{height}:"]
    with_residual = config.blend == "add"
    denoised = config.denoise_levels or config.levels
    sizes = level_sizes(height, width, config.levels + with_residual)
    for level, (h, w) in enumerate(sizes):
        if level == config.levels:
            role = "residual low-pass"
        elif level < denoised:
            role = "filtered"
        else:
            role = "passed through"
        lines.append(f"  level {level}: {w}x{h} ({role})")
    lines += [
        rule,
        f"MLP FLOPs per level pixel: {mlp_flops_per_pixel(config)}",
        f"MLP FLOPs per input pixel at {width}x{height}: "
        f"{flops_per_pixel(config, height, width):.0f}",
        f"total parameters: {parameter_count(config)}",
    ]
    return "\n".join(lines)
