"""``python -m kpn summary`` and ``smoke``: a config's network in numbers, and one timed
forward pass of it (proof that a fresh install works)."""

from __future__ import annotations

import argparse
import time

import torch

from kpn.config import apply_overrides, load_config
from kpn.errors import KpnError
from kpn.metrics import psnr
from kpn.model.network import KPN
from kpn.model.summary import summary


def parse_size(text: str) -> tuple[int, int]:
    """``"WxH"`` -> (height, width)."""
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit() or int(width) < 1 or int(height) < 1:
        raise KpnError(f"--size {text!r}: expected WxH with positive integers, e.g. 1024x768")
    return int(height), int(width)


def test_scene(height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """A smooth colour gradient with hard-edged discs, linear RGB in [0,1]. ``-> [1,3,H,W]``"""
    y = torch.linspace(0, 1, height).view(height, 1)
    x = torch.linspace(0, 1, width).view(1, width)
    image = torch.stack(
        (
            0.2 + 0.6 * x.expand(height, width),
            0.2 + 0.6 * y.expand(height, width),
            0.5 * (x + y).expand(height, width) / 2,
        ),
        dim=0,
    )
    for _ in range(8):
        cx, cy, radius = torch.rand(3, generator=generator).tolist()
        colour = torch.rand(3, 1, 1, generator=generator)
        inside = (x - cx) ** 2 + (y - cy) ** 2 < (0.05 + 0.2 * radius) ** 2
        image = torch.where(inside, colour, image)
    return image.unsqueeze(0)


def command_summary(args: argparse.Namespace) -> None:
    config = apply_overrides(load_config(args.config), args.set)
    print(summary(config.model, *parse_size(args.size)))


def command_smoke(args: argparse.Namespace) -> None:
    config = apply_overrides(load_config(args.config), args.set)
    height, width = parse_size(args.size)
    generator = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    clean = test_scene(height, width, generator)
    noise_ab = torch.tensor([[args.noise_a, args.noise_b]])
    sigma = torch.sqrt(noise_ab[0, 0] + 65535 * clean.clamp(min=0) * noise_ab[0, 1]) / 65535
    noisy = clean + sigma * torch.randn(clean.shape, generator=generator)
    model = KPN(config.model)
    with torch.no_grad():
        start = time.perf_counter()
        output = model(noisy, noise_ab)
        seconds = time.perf_counter() - start
    print(
        f"forward pass of {args.config} (untrained: vkdt's random initialisation) on a "
        f"{width}x{height} generated image, noise (a, b) = ({args.noise_a:g}, {args.noise_b:g})"
    )
    print(f"time {seconds:.3f} s, {height * width / seconds / 1e6:.2f} Mpx/s")
    print(f"PSNR noisy {psnr(noisy, clean):.2f} dB -> output {psnr(output, clean):.2f} dB")


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``summary`` and ``smoke`` subcommands, which share their options."""
    for name, handler, help_text in (
        ("summary", command_summary, "layers, parameters, pyramid sizes and FLOPs"),
        ("smoke", command_smoke, "one timed forward pass on a generated image"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--config", required=True, help="TOML config, e.g. configs/design.toml")
        sub.add_argument("--size", default="1024x1024", help="image size WxH")
        sub.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="SECTION.KEY=VALUE",
            help="override a config value (repeatable)",
        )
        sub.set_defaults(handler=handler)
        if name == "smoke":
            sub.add_argument("--seed", type=int, default=0)
            sub.add_argument("--noise-a", type=float, default=1e5)
            sub.add_argument("--noise-b", type=float, default=100.0)
