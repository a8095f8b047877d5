"""The vkdt commands of ``python -m kpn``: ``export`` (trained weights -> ``.lut``, and
vkdt graphs with ``--vkdt-cfg``), ``import`` (``.lut`` -> checkpoint), ``pfm`` (PFM row
order, standard <-> vkdt's) and ``compare-precision`` (fp32 vs vkdt-f16 outputs)."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from kpn.config import VKDT_INFERENCE_IN_WIDTH, Config, load_config
from kpn.errors import KpnError, make_folder
from kpn.infer.weights import load_training_state, model_from_state
from kpn.io.atomic import atomic_write_bytes
from kpn.io.checkpoint import save_checkpoint
from kpn.io.nprof import read_nprof
from kpn.io.pfm import read_pfm, write_pfm
from kpn.vkdt.export import inference_layout_warning, lut_payload
from kpn.vkdt.graph import GraphFile, graph_files
from kpn.vkdt.lut import read_lut
from kpn.vkdt.lut_checkpoint import checkpoint_from_lut
from kpn.vkdt.lut_layout import LAYOUTS
from kpn.vkdt.lut_model import config_for_lut, layout_to_read


# --- export ------------------------------------------------------------------------------
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


def _export_graphs(
    args: argparse.Namespace, config: Config, noise: tuple[float, float] | None
) -> tuple[GraphFile, ...]:
    """The graphs ``--vkdt-cfg`` asks for (none without it), with its folder made."""
    if args.vkdt_cfg is None:
        return ()
    graph_dir = Path(args.vkdt_cfg)
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
    make_folder(graph_dir)
    return graphs


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
    graphs = _export_graphs(args, config, noise)
    atomic_write_bytes(args.output, payload)
    model = config.model
    later = model.width * (model.width if args.vkdt_layout == "kpn-t" else VKDT_INFERENCE_IN_WIDTH)
    owner = "kpn-t's" if args.vkdt_layout == "kpn-t" else "vkdt HEAD's kpn module's"
    print(
        f"wrote {args.output}: W {model.width}, {model.n_hidden} hidden layers, {args.dtype}, "
        f"first matrix {model.width} wide, the others from float {later} ({owner} layout)"
    )
    for graph in graphs:
        path = Path(args.vkdt_cfg) / graph.name
        atomic_write_bytes(path, graph.text.encode("utf-8"))
        print(f"wrote {path}")
    warning = inference_layout_warning(model, args.vkdt_layout)
    if warning is not None:
        print(f"warning: {warning}", file=sys.stderr)
    if graphs and noise is None:
        print(
            "note: no --noise or --nprof: the inference graphs set kpn's noise a and b to 0",
            file=sys.stderr,
        )


def _add_export(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


# --- import ------------------------------------------------------------------------------
def command_import(args: argparse.Namespace) -> None:
    lut = read_lut(args.lut)
    config = load_config(args.config) if args.config is not None else None
    imported = config_for_lut(lut, config, f"--config {args.config}", args.preset)
    layout = layout_to_read(lut, args.vkdt_layout)
    save_checkpoint(args.output, checkpoint_from_lut(lut, imported.config, layout))
    for note in imported.notes:
        print(f"note: {note}", file=sys.stderr)
    print(
        f"wrote {args.output}: W {lut.width}, {lut.n_hidden} hidden layers from {args.lut} "
        f"({layout} layout), step 0; config from {imported.source}"
    )


def _add_import(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


# --- compare-precision -------------------------------------------------------------------
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


def _add_compare_precision(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def add_lut_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``export``, ``import`` and ``compare-precision`` subcommands (docs/design.md §9, §10)."""
    _add_export(commands)
    _add_import(commands)
    _add_compare_precision(commands)


# --- pfm ---------------------------------------------------------------------------------
def command_pfm(args: argparse.Namespace) -> None:
    """Rewrite a PFM in the other row order; nothing is written when IN is not a PFM."""
    to_vkdt = args.to_vkdt is not None
    source, target = args.to_vkdt if to_vkdt else args.from_vkdt
    image = read_pfm(source, vkdt_rows=not to_vkdt)
    write_pfm(target, image, vkdt_rows=to_vkdt)
    height, width = image.shape[:2]
    order = "vkdt's (top row first)" if to_vkdt else "the PFM format's (bottom row first)"
    print(f"wrote {target}: {width} x {height}, rows in {order} order")


def add_pfm_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``pfm`` subcommand: a PFM's rows between the format's order and vkdt's."""
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
