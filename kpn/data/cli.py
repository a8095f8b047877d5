"""``python -m kpn photos``: a training set of real photographs from Debian's wallpaper
packages, linear and downscaled."""

from __future__ import annotations

import argparse

from kpn.data.photos import MANIFEST, MIN_FACTOR, TRAIN, VALIDATION, assemble_photos


def command_photos(args: argparse.Namespace) -> None:
    records, made = assemble_photos(args.folder, args.factor)
    counts = {split: sum(r.split == split for r in records) for split in (TRAIN, VALIDATION)}
    state = "assembled" if made else "already assembled (kept)"
    print(
        f"{args.folder}: {len(records)} photos {state}: {counts[TRAIN]} in train/, "
        f"{counts[VALIDATION]} in validation/, downscaled by {args.factor}; sources and "
        f"licences in {MANIFEST}"
    )


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``photos`` subcommand."""
    photos = commands.add_parser(
        "photos", help="a training set of real photographs from Debian's wallpaper packages"
    )
    photos.add_argument("folder", help="where the set goes (train/, validation/, manifest)")
    photos.add_argument(
        "--factor",
        type=int,
        default=MIN_FACTOR,
        help=f"box-downscale factor in linear light, at least {MIN_FACTOR} (default)",
    )
    photos.set_defaults(handler=command_photos)
