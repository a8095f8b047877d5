"""``python -m kpn COMMAND``: the project's small tools.

- ``summary --config X [--size WxH]``: layers, parameters, pyramid, FLOPs.
- ``smoke --config X [--size WxH]``: one forward pass of the (untrained) model on a
  generated noisy image, with timing: proof that a fresh install works.
- ``nprof import-darktable [noiseprofiles.json] -o DIR [--scale u16|dng]``: darktable's
  noise profiles (from its usual install paths when no file is given) as ``.nprof`` files.
- ``export RUN|CKPT -o weights.lut [--dtype f16|f32] [--vkdt-cfg DIR] [--vkdt-layout
  kpn-t|head]``: the trained weights as vkdt's ``.lut``, and with ``--vkdt-cfg`` vkdt
  graphs to use and train them.
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
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from kpn.cli import Parser
from kpn.config import apply_overrides, load_config
from kpn.data.photos import MANIFEST, MIN_FACTOR, TRAIN, VALIDATION, assemble_photos
from kpn.errors import KpnError
from kpn.io.atomic import atomic_write_bytes
from kpn.io.checkpoint import save_checkpoint
from kpn.io.images import read_pfm, write_pfm
from kpn.io.nprof import import_darktable, read_nprof
from kpn.metrics import psnr
from kpn.model.network import KPN
from kpn.model.summary import summary
from kpn.vkdt.export import (
    INFERENCE_IN_WIDTH,
    checkpoint_from_lut,
    config_for_lut,
    inference_layout_warning,
    load_training_state,
    lut_layout,
    lut_payload,
    model_from_state,
)
from kpn.vkdt.graph import GraphFile, graph_files
from kpn.vkdt.lut import LAYOUTS, read_lut


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


def command_nprof_import_darktable(args: argparse.Namespace) -> None:
    paths = import_darktable(args.json, args.output, scale=args.scale)
    cameras = {path.name.rpartition("-")[0] for path in paths}
    print(
        f"wrote {len(paths)} noise profiles of {len(cameras)} cameras to {args.output} "
        f"({args.scale} scale)"
    )


def _graph_path(target: str, graph_dir: Path) -> str:
    """``target`` as a vkdt graph in ``graph_dir`` names it: relative to that folder."""
    try:
        return Path(os.path.relpath(os.path.abspath(target), os.path.abspath(graph_dir))).as_posix()
    except ValueError:  # another drive: only an absolute path reaches it
        return Path(os.path.abspath(target)).as_posix()


def _noise_profile(args: argparse.Namespace) -> tuple[float, float] | None:
    """(a, b) on the 0..65535 scale from --noise or --nprof, or None when neither is given."""
    if args.vkdt_cfg is None and (args.noise is not None or args.nprof is not None):
        raise KpnError("--noise and --nprof set the graphs' kpn parameters: give --vkdt-cfg too")
    if args.nprof_scale is not None and args.nprof is None:
        raise KpnError("--nprof-scale says the scale of a --nprof file: give --nprof too")
    if args.nprof is not None:
        profile = read_nprof(args.nprof, unmarked=args.nprof_scale).converted("u16")
        return profile.a, profile.b
    if args.noise is not None:
        a, b = args.noise
        if not (math.isfinite(a) and math.isfinite(b) and a >= 0 and b >= 0):
            raise KpnError(f"--noise {a:g} {b:g}: a and b must be finite and >= 0")
        return a, b
    return None


def command_compare_precision(args: argparse.Namespace) -> None:
    from kpn.infer.profile import NoiseOptions
    from kpn.vkdt.compare import compare_precision

    if (args.noise_a is None) != (args.noise_b is None):
        raise KpnError("--noise-a and --noise-b go together")
    explicit = None if args.noise_a is None else (args.noise_a, args.noise_b)
    if explicit is None and args.noise != "auto":
        raise KpnError("give the noise profile: --noise-a A --noise-b B, or --noise auto")
    if explicit is not None and min(explicit) < 0:
        raise KpnError(f"noise profile (a, b) = {explicit} must be >= 0")
    noise = NoiseOptions(explicit=explicit, auto=args.noise == "auto")
    references = [Path(r) for r in args.reference] if args.reference else [None] * len(args.images)
    images = [Path(i) for i in args.images]
    for result in compare_precision(
        args.weights, images, references, noise, args.config, args.tile
    ):
        line = f"{result.image}: fp32 vs vkdt-f16 {result.fp32_vs_f16:.2f} dB"
        if result.fp32_vs_reference is not None:
            line += (
                f"; against the reference: fp32 {result.fp32_vs_reference:.2f} dB, "
                f"vkdt-f16 {result.f16_vs_reference:.2f} dB"
            )
        print(f"{line}  [{result.profile}]")


def command_export(args: argparse.Namespace) -> None:
    state = load_training_state(args.source)
    config = state.config
    if args.vkdt_cfg is not None and args.dtype != "f16":
        raise KpnError(
            "--vkdt-cfg with --dtype f32: vkdt's kpn reads its weights as f16 "
            "(connector w:read:ssbo:f16) and refuses an f32 file"
        )
    noise = _noise_profile(args)
    mlp = model_from_state(state, str(args.source)).mlp
    payload = lut_payload(mlp, config, args.dtype, args.vkdt_layout, where=args.output)
    graphs: tuple[GraphFile, ...] = ()
    graph_dir = Path(args.vkdt_cfg) if args.vkdt_cfg is not None else None
    if graph_dir is not None:
        if graph_dir.exists() and not graph_dir.is_dir():
            raise KpnError(f"--vkdt-cfg {graph_dir}: exists and is not a folder")
        init = config.train.init
        graphs = graph_files(
            config,
            _graph_path(args.output, graph_dir),
            layout=args.vkdt_layout,
            noise_a=noise[0] if noise else 0.0,
            noise_b=noise[1] if noise else 0.0,
            weights_out=f"{Path(args.output).stem}-vkdt",
            init_weights=_graph_path(init, graph_dir) if init.endswith(".lut") else None,
        )
        try:
            graph_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise KpnError(f"--vkdt-cfg {graph_dir}: cannot create ({error.strerror})") from None
    atomic_write_bytes(args.output, payload)
    model = config.model
    later = model.width * (model.width if args.vkdt_layout == "kpn-t" else INFERENCE_IN_WIDTH)
    owner = "kpn-t's" if args.vkdt_layout == "kpn-t" else "vkdt HEAD's kpn module's"
    print(
        f"wrote {args.output}: W {model.width}, {model.n_hidden} hidden layers, {args.dtype}, "
        f"first matrix {model.width} wide, the others from float {later} ({owner} layout)"
    )
    for graph in graphs:
        assert graph_dir is not None
        atomic_write_bytes(graph_dir / graph.name, graph.text.encode("utf-8"))
        print(f"wrote {graph_dir / graph.name}")
    warning = inference_layout_warning(model, args.vkdt_layout)
    if warning is not None:
        print(f"warning: {warning}", file=sys.stderr)
    if graphs and noise is None:
        print(
            "note: no --noise or --nprof: the inference graphs set kpn's noise a and b to 0",
            file=sys.stderr,
        )


def command_import(args: argparse.Namespace) -> None:
    lut = read_lut(args.lut)
    config = load_config(args.config) if args.config is not None else None
    imported = config_for_lut(lut, config, f"--config {args.config}", args.preset)
    layout = lut_layout(lut, args.vkdt_layout)
    save_checkpoint(args.output, checkpoint_from_lut(lut, imported.config, layout))
    for note in imported.notes:
        print(f"note: {note}", file=sys.stderr)
    print(
        f"wrote {args.output}: W {lut.width}, {lut.n_hidden} hidden layers from {args.lut} "
        f"({layout} layout), step 0; config from {imported.source}"
    )


def add_lut_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The ``export`` and ``import`` subcommands (vkdt's .lut weights, SPEC 9, 10)."""
    export = commands.add_parser(
        "export", help="trained weights -> vkdt .lut (and vkdt graphs with --vkdt-cfg)"
    )
    export.add_argument("source", metavar="RUN|CKPT", help="run directory or checkpoint file")
    export.add_argument("-o", "--output", required=True, help="the .lut to write")
    export.add_argument(
        "--dtype", choices=("f16", "f32"), default="f16", help="f16: what vkdt reads (default)"
    )
    export.add_argument(
        "--vkdt-cfg",
        metavar="DIR",
        help="also write vkdt graphs here: inference (PFM and raw) and kpn-t training",
    )
    export.add_argument(
        "--vkdt-layout",
        choices=LAYOUTS,
        default="kpn-t",
        help="kpn-t: what kpn-t writes and reads (default); head: what vkdt HEAD's kpn module "
        "reads (W 64: for models trained with model.vkdt_head_layout; docs/vkdt.md)",
    )
    noise = export.add_mutually_exclusive_group()
    noise.add_argument(
        "--noise",
        nargs=2,
        type=float,
        metavar=("A", "B"),
        help="the graphs' kpn noise a, b (the camera's profile on the 0..65535 scale)",
    )
    noise.add_argument("--nprof", metavar="FILE", help="take noise a, b from a .nprof file")
    export.add_argument(
        "--nprof-scale",
        choices=("u16", "dng"),
        help="scale of a --nprof file without kpn's 'scale' line (vkdt's own files): "
        "u16 for 0..65535, dng for [0,1] (vkdt's nprof since 2026-04)",
    )
    export.set_defaults(handler=command_export)

    imp = commands.add_parser("import", help="vkdt .lut -> checkpoint to train on or export")
    imp.add_argument("lut", metavar="weights.lut", help="vkdt .lut weights file")
    told = imp.add_mutually_exclusive_group()
    told.add_argument(
        "--config",
        help="config of the weights (must agree with the file); a file kpn wrote says its "
        "model itself, one without kpn's section (vkdt's) needs this or --preset",
    )
    told.add_argument(
        "--preset",
        metavar="NAME",
        help="for a file without kpn's section: a config in configs/ under the trailer's "
        "items (vkdt's W 64 build: vkdt-head, W 32: vkdt-head-w32)",
    )
    imp.add_argument("-o", "--output", required=True, help="the checkpoint to write")
    imp.add_argument(
        "--vkdt-layout",
        choices=LAYOUTS,
        help="read the weights as kpn-t (its files) or vkdt HEAD's kpn module (head) does; "
        "default: what the file's kpn section says, else kpn-t",
    )
    imp.set_defaults(handler=command_import)

    compare = commands.add_parser(
        "compare-precision", help="PSNR between fp32 and vkdt-f16 outputs of a model"
    )
    compare.add_argument("images", nargs="+", metavar="IMAGE")
    compare.add_argument("--weights", required=True, help="run directory, checkpoint or .lut")
    compare.add_argument("--config", help="TOML config (a .lut without trailer needs one)")
    compare.add_argument("--reference", action="append", help="clean image, one per IMAGE")
    compare.add_argument("--noise-a", type=float, help="Gaussian part a, 0..65535 scale")
    compare.add_argument("--noise-b", type=float, help="Poissonian part b, 0..65535 scale")
    compare.add_argument("--noise", choices=("auto",), help="auto: estimate from the image")
    compare.add_argument("--tile", type=int, help="tile side in pixels, 0 = untiled")
    compare.set_defaults(handler=command_compare_precision)


def command_photos(args: argparse.Namespace) -> None:
    records, made = assemble_photos(args.folder, args.factor)
    counts = {split: sum(r.split == split for r in records) for split in (TRAIN, VALIDATION)}
    state = "assembled" if made else "already assembled (kept)"
    print(
        f"{args.folder}: {len(records)} photos {state}: {counts[TRAIN]} in train/, "
        f"{counts[VALIDATION]} in validation/, downscaled by {args.factor}; sources and "
        f"licences in {MANIFEST}"
    )


def command_pfm(args: argparse.Namespace) -> None:
    """Rewrite a PFM in the other row order; nothing is written when IN is not a PFM."""
    to_vkdt = args.to_vkdt is not None
    source, target = args.to_vkdt if to_vkdt else args.from_vkdt
    image = read_pfm(source, vkdt_rows=not to_vkdt)
    write_pfm(target, image, vkdt_rows=to_vkdt)
    height, width = image.shape[:2]
    order = "vkdt's (top row first)" if to_vkdt else "the PFM format's (bottom row first)"
    print(f"wrote {target}: {width} x {height}, rows in {order} order")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m kpn",
        description=__doc__,  # its markup removed by Parser
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
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
    pfm = commands.add_parser(
        "pfm",
        help="PFM row order: standard (bottom row first) <-> vkdt's i-pfm/o-pfm (top first)",
    )
    direction = pfm.add_mutually_exclusive_group(required=True)
    direction.add_argument(
        "--to-vkdt",
        nargs=2,
        metavar=("IN", "OUT"),
        help="a standard PFM (infer.py's) -> one that vkdt's i-pfm reads the right way up",
    )
    direction.add_argument(
        "--from-vkdt",
        nargs=2,
        metavar=("IN", "OUT"),
        help="a PFM that vkdt's o-pfm wrote -> a standard PFM (infer.py's)",
    )
    pfm.set_defaults(handler=command_pfm)
    add_lut_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; a :class:`KpnError` is printed as one line and gives exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except KpnError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
