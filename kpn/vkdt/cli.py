"""The vkdt commands of ``python -m kpn``: ``export`` (trained weights -> ``.lut``, and
vkdt graphs with ``--vkdt-cfg``) and ``pfm`` (PFM row order, standard <-> vkdt's). A
``.lut`` to train on is training's ``import`` (:mod:`kpn.train.cli`); what float16 costs
a model is inference's ``compare-precision`` (:mod:`kpn.infer.cli`)."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from kpn.config import VKDT_INFERENCE_IN_WIDTH, Config
from kpn.errors import KpnError, make_folder
from kpn.io.atomic import atomic_write_bytes
from kpn.io.nprof import read_nprof
from kpn.io.pfm import read_pfm, write_pfm
from kpn.io.run_folder import load_training_state, model_from_state
from kpn.vkdt.export import lut_payload
from kpn.vkdt.graph import GraphFile, graph_files
from kpn.vkdt.lut_layout import LAYOUTS
from kpn.vkdt.target import TARGET_NAMES, TARGETS, cannot_run, needed_patches


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


def _target(args: argparse.Namespace) -> str:
    """--vkdt-target, by default the series (the head layout is ce12d6ed's own)."""
    if args.vkdt_target is not None:
        return args.vkdt_target
    return "head" if args.vkdt_layout == "head" else "series"


def _refusal(config: Config, target: str, layout: str, reasons: list[str]) -> str:
    """Why ``target`` cannot run the model, and the other target when that one can."""
    other = next(t for t in TARGETS if t != target)
    remedy = "" if cannot_run(config, other, layout) else f" (--vkdt-target {other} runs it)"
    return f"{TARGET_NAMES[target]} cannot run this model{remedy}: {'; '.join(reasons)}"


def _export_graphs(
    args: argparse.Namespace,
    config: Config,
    noise: tuple[float, float] | None,
    target: str,
    reasons: list[str],
) -> tuple[GraphFile, ...]:
    """The graphs ``--vkdt-cfg`` asks for (none without it), with its folder made; a model
    that ``target`` cannot run (``reasons``, :func:`cannot_run`) is refused in one line."""
    if args.vkdt_cfg is None:
        return ()
    graph_dir = Path(args.vkdt_cfg)
    if graph_dir.exists() and not graph_dir.is_dir():
        raise KpnError(f"--vkdt-cfg {graph_dir}: exists and is not a folder")
    if reasons:
        raise KpnError(f"{args.source}: {_refusal(config, target, args.vkdt_layout, reasons)}")
    init = config.train.init
    graphs = graph_files(
        config,
        _graph_path(args.output, graph_dir),
        layout=args.vkdt_layout,
        noise_a=noise[0] if noise else 0.0,
        noise_b=noise[1] if noise else 0.0,
        weights_out=f"{Path(args.output).stem}-vkdt",
        init_weights=_graph_path(init, graph_dir) if init.endswith(".lut") else None,
        target=target,
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
    target = _target(args)
    reasons = cannot_run(config, target, args.vkdt_layout)
    mlp = model_from_state(state, str(args.source)).mlp
    payload = lut_payload(mlp, config, args.dtype, args.vkdt_layout, where=args.output)
    graphs = _export_graphs(args, config, noise, target, reasons)
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
    if reasons:  # only without --vkdt-cfg: the .lut is kpn's to read back all the same
        refusal = _refusal(config, target, args.vkdt_layout, reasons)
        print(f"warning: {refusal} (kpn reads the file back)", file=sys.stderr)
    else:
        needs = needed_patches(config, target)
        print(
            f"runs in {TARGET_NAMES[target]}" + (f", needing {', '.join(needs)}" if needs else "")
        )
    if graphs and noise is None:
        print(
            "note: no --noise or --nprof: the inference graphs set kpn's noise a and b to 0",
            file=sys.stderr,
        )


def add_export_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``export`` subcommand (docs/design.md §9)."""
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
    export.add_argument(
        "--vkdt-target",
        choices=TARGETS,
        help="the vkdt that runs the weights: series, vkdt ce12d6ed with kpn's patches "
        "(vkdt/patches; the default), or head, ce12d6ed as it is (the default with "
        "--vkdt-layout head); --vkdt-cfg refuses a model the target cannot run",
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
