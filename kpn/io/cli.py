"""``python -m kpn nprof import-darktable``: darktable's noise profiles as ``.nprof`` files."""

from __future__ import annotations

import argparse

from kpn.io.nprof import import_darktable


def command_nprof_import_darktable(args: argparse.Namespace) -> None:
    paths = import_darktable(args.json, args.output, scale=args.scale)
    cameras = {path.name.rpartition("-")[0] for path in paths}
    print(
        f"wrote {len(paths)} noise profiles of {len(cameras)} cameras to {args.output} "
        f"({args.scale} scale)"
    )


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``nprof`` subcommand and its own subcommand ``import-darktable``."""
    nprof = commands.add_parser("nprof", help="noise profiles (.nprof files)")
    nprof_commands = nprof.add_subparsers(dest="nprof_command", required=True)
    darktable = nprof_commands.add_parser(
        "import-darktable", help="darktable's noiseprofiles.json -> one .nprof per camera and ISO"
    )
    darktable.add_argument(
        "json",
        nargs="?",
        help="darktable's noiseprofiles.json (default: the first at darktable's usual paths)",
    )
    darktable.add_argument("-o", "--output", required=True, help="folder for the .nprof files")
    darktable.add_argument(
        "--scale",
        choices=("u16", "dng"),
        default="u16",
        help="u16: x on 0..65535, what kpn uses (default); dng: x on [0,1], vkdt's nprof today",
    )
    darktable.set_defaults(handler=command_nprof_import_darktable)
