"""Training: ``python train.py --config X.toml`` (also ``kpn-train``).

The command line over :func:`kpn.train.loop.train`: it resolves the config and the run
directory (``--out``, or ``runs/<config name>``) and what a ``--resume`` continues,
refusing bad input before anything is written. ``torchrun --nproc_per_node N train.py
...`` trains data-parallel.

A run survives every kill: SIGINT and SIGTERM end it after the step at work, with a
checkpoint (exit code 130); ``--resume`` continues from the latest checkpoint (from the
one before when the latest cannot be read), and starts a run killed before its first
checkpoint afresh from its ``config.toml``.

Also ``python -m kpn import weights.lut -o CKPT``: a vkdt ``.lut`` as a checkpoint to train
on (:mod:`kpn.train.from_lut`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from kpn.cli import Parser
from kpn.config import apply_overrides, load_config
from kpn.errors import KpnError, file_error, os_problem
from kpn.io.checkpoint import TrainingState, load_latest_checkpoint, save_checkpoint
from kpn.io.run_folder import RunFolder
from kpn.train.allocator import keep_freed_memory
from kpn.train.from_lut import checkpoint_from_lut
from kpn.train.loop import Interrupted, Plan, train
from kpn.vkdt.lut import read_lut
from kpn.vkdt.lut_layout import LAYOUTS
from kpn.vkdt.lut_model import config_for_lut, layout_to_read

# train()'s parameters as the options that set them: its errors name the option
PARAMETER_OPTIONS = {"device=": "--device "}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="train.py", description="Train the multilevel KPN denoiser (vkdt's kpn-t)."
    )
    parser.add_argument("--config", help="TOML config, e.g. configs/quick.toml")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value (repeatable), e.g. train.steps=500",
    )
    parser.add_argument("--out", help="run directory (default: runs/<config name>)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="",
        metavar="RUN_DIR|CKPT",
        help="continue a run from its last checkpoint (default: the --out directory)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--seed", type=int, default=0, help="model initialisation and data")
    return parser


def claim_run_dir(run_dir: Path, resumed: Path | None = None) -> str | None:
    """``run_dir`` as the run's folder: KpnError when it holds anything and is not
    ``resumed``, the run continued.

    A run written there would mix its files with another's and overwrite its config.toml.
    An existing folder that is empty, or holds only the temporary files of killed writes
    (removed here), is used: returns the line that says so; None for a new folder.
    """
    if (resumed is not None and run_dir.resolve() == resumed.resolve()) or not run_dir.exists():
        return None
    stale = RunFolder(run_dir).stale_temps() if run_dir.is_dir() else []
    if not run_dir.is_dir() or {p.name for p in run_dir.iterdir()} != {p.name for p in stale}:
        if resumed is None:
            raise KpnError(f"{run_dir}: run directory exists; use --resume or another --out")
        raise KpnError(
            f"{run_dir}: run directory exists and is not the run resumed ({resumed}); "
            "choose another --out"
        )
    if not stale:
        return f"{run_dir}: empty folder, used as the run folder"
    for path in stale:
        try:
            path.unlink(missing_ok=True)
        except OSError as error:
            raise file_error(path, os_problem(error, "remove")) from None
    files = "file" if len(stale) == 1 else "files"
    removed = f"removed {len(stale)} stale temporary {files} of a killed write"
    return f"{run_dir}: {removed}; used as the run folder"


def started_without_checkpoint(run_dir: Path) -> bool:
    """A run directory that a kill stopped before its first checkpoint: its resolved
    config.toml is there, and no checkpoint."""
    folder = RunFolder(run_dir)
    return (
        run_dir.is_dir()
        and folder.config.is_file()
        and not folder.checkpoint.exists()
        and not folder.previous_checkpoint.exists()
    )


def plan_run(args: argparse.Namespace) -> Plan:
    """Resolve config, run directory and resume state, refusing bad input before any write."""
    if args.resume is None:
        if not args.config:
            raise KpnError("--config is required (or --resume a run)")
        config = apply_overrides(load_config(args.config), args.set)
        run_dir = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
        used = claim_run_dir(run_dir)
        return Plan(config, run_dir, notes=() if used is None else (used,))

    source = Path(args.resume or args.out or "")
    if not str(source) or str(source) == ".":
        raise KpnError("--resume needs a run directory or checkpoint (or --out)")
    checkpoint = RunFolder(source).checkpoint if source.is_dir() else source
    state: TrainingState | None = None
    if started_without_checkpoint(source):
        # nothing was saved to continue from: the run starts over, as it was configured
        where = RunFolder(source).config
        config = load_config(where)
        start = f"starting the run from step 0 with its {where.name}"
        notes = (f"{source}: no checkpoint yet; {start}",)
    else:
        where = checkpoint
        state, note = load_latest_checkpoint(checkpoint)
        config, notes = state.config, () if note is None else (note,)
    saved_model = config.model
    if args.config:
        requested = load_config(args.config)
        if requested.model != saved_model:
            raise KpnError(
                f"{where}: the run's model differs from {args.config}'s (another architecture)"
            )
    config = apply_overrides(config, args.set)
    if config.model != saved_model:
        raise KpnError(f"{where}: --set may not change the model of a resumed run")
    run_dir = Path(args.out) if args.out else checkpoint.parent
    used = claim_run_dir(run_dir, checkpoint.parent)
    notes = notes if used is None else (*notes, used)
    return Plan(config, run_dir, state, notes, resumed=True)


def as_options(error: KpnError) -> str:
    """``error``'s message, a train() parameter it starts with named as its option."""
    message = str(error)
    for parameter, option in PARAMETER_OPTIONS.items():
        if message.startswith(parameter):
            return option + message.removeprefix(parameter)
    return message


def main(argv: Sequence[str] | None = None) -> int:
    """Train; KpnError is one line on stderr and exit code 2, Ctrl-C exit code 130."""
    args = build_parser().parse_args(argv)
    keep_freed_memory()
    try:
        final = train(plan_run(args), args.seed, args.device).final
    except KpnError as error:
        print(f"error: {as_options(error)}", file=sys.stderr)
        return 2
    except Interrupted:
        return 130
    if final is not None:
        print(
            f"validation PSNR noisy {final.psnr_noisy:.2f} dB -> denoised "
            f"{final.psnr_denoised:.2f} dB ({final.gain:+.2f} dB); SSIM "
            f"{final.ssim_noisy:.3f} -> {final.ssim_denoised:.3f}"
        )
    return 0


# --- python -m kpn import ----------------------------------------------------------------
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


def add_import_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``python -m kpn import``: a vkdt ``.lut`` as a checkpoint to train on (design §9)."""
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
