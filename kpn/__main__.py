"""``python -m kpn COMMAND``: the project's small tools.

- ``summary --config X [--size WxH]``: layers, parameters, pyramid, FLOPs.
- ``smoke --config X [--size WxH]``: one forward pass of the (untrained) model on a
  generated noisy image, with timing: proof that a fresh install works.
- ``nprof import-darktable [noiseprofiles.json] -o DIR [--scale u16|dng]``: darktable's
  noise profiles (from its usual install paths when no file is given) as ``.nprof`` files.
- ``export RUN|CKPT -o weights.lut [--dtype f16|f32] [--vkdt-cfg DIR] [--vkdt-layout
  kpn-t|head] [--vkdt-target series|head]``: the trained weights as vkdt's ``.lut``, and
  with ``--vkdt-cfg`` vkdt graphs to use and train them, for vkdt ce12d6ed with kpn's
  patch series or as it is (a model that vkdt cannot run is refused).
- ``import weights.lut [--config X | --preset NAME] [--vkdt-layout kpn-t|head] -o CKPT``:
  a ``.lut`` as a checkpoint to train on (a ``.lut`` without kpn's section needs
  ``--config`` or ``--preset``).
- ``compare-precision --weights W IMAGE... [--reference REF]...``: PSNR between the fp32
  and vkdt-f16 outputs, and of each against the reference.
- ``photos DIR [--factor N]``: real photographs from Debian's wallpaper packages, linear
  and downscaled, as a training set (``DIR/train``, ``DIR/validation``, a manifest).
- ``pfm --to-vkdt IN OUT`` / ``pfm --from-vkdt IN OUT``: a PFM in the format's row order
  (bottom row first, what infer.py and other tools read and write) to vkdt's (top row
  first, what vkdt's i-pfm reads and o-pfm writes), or back.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from kpn.cli import Parser, exit_with
from kpn.errors import KpnError


def build_parser() -> argparse.ArgumentParser:
    # here, not at the top: they import torch, which python -m kpn's exit_with must cover
    from kpn.data import cli as data_cli
    from kpn.infer import cli as infer_cli
    from kpn.io import cli as io_cli
    from kpn.model import cli as model_cli
    from kpn.train import cli as train_cli
    from kpn.vkdt import cli as vkdt_cli

    # each adds its subcommands, with the handler each runs; in the order --help lists them
    commands = (
        model_cli.add_commands,  # summary, smoke
        io_cli.add_commands,  # nprof import-darktable
        data_cli.add_commands,  # photos
        vkdt_cli.add_pfm_command,  # pfm
        vkdt_cli.add_export_command,  # export
        train_cli.add_import_command,  # import
        infer_cli.add_compare_command,  # compare-precision
    )
    parser = Parser(
        prog="python -m kpn",
        description=__doc__,  # its markup removed by Parser
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subcommands = parser.add_subparsers(dest="command", required=True)
    for add_commands in commands:
        add_commands(subcommands)
    return parser


# The library's parameters as the commands' flags name them (KpnError.worded).
FLAGS = {
    "path": "--weights",
    "config": "--config",
    "preset": "--preset",
    "tile": "--tile",
    "scale": "--scale",
    "factor": "--factor",
    "references": "--reference",
    "noise_a": "--noise-a",
    "noise_b": "--noise-b",
    "noise": "--noise",
    "nprof": "--nprof",
    "nprof_dir": "--nprof-dir",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; a :class:`KpnError` is printed as one line and gives exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except KpnError as error:
        print(f"error: {error.worded(FLAGS)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # the console script kpn: kpn.cli.kpn_tools
    exit_with(main)
