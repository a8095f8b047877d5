#!/usr/bin/env python3
"""kpn-t's training in vkdt-cli against kpn's emulation of it, for vkdt/oracle.sh's train step.

setup OUTDIR [--weights weights/vkdt-w32] [--frames 21] [--told A B]
    OUTDIR/run/checkpoint.pt: the weights' model with vkdt's training as kpn replays it
    on the series (:data:`OVERRIDES`: SMAPE summed with loss.comp's gradient, Adam 1e-3 /
    0.9 / 0.999 / 1e-4 with vkdt's bias correction, float16 weights and float32 moments
    (patch 0012), no clipping, no L2, one tile, ``generate`` 0, the gradient stopped into
    coarser levels as NO_ALIAS's dup.comp does, the fallback matrix path forward and
    backward in float16), FRAMES - 1 steps from the weights' .lut; OUTDIR/img/{noisy,
    clean}.pfm: a 64x64 pair, top row first (what cnngenin's generate 0 cuts whole), and
    img/told.json, the noise cnngenin tells kpn-t: (0, 0) as vkdt does, or ``--told A B``
    (oracle harness 08 tells the pair's own (2e4, 40) for the design's star15_snr).
replay OUTDIR --json FILE [--vkdt NAME] [--defects] [--envelope NAME]
    kpn trains the same steps on the same tile and, per frame f, compares its loss with
    the SMAPE of vkdt-cli's denoised tile OUTDIR/NAME/out_%04d.pfm (kpn-t's output of
    frame f, the weights after f updates; NAME defaults to vkdt), and at the end its
    weights with vkdt's o-lut (OUTDIR/NAME/*.lut). ``--defects``: kpn replays vkdt
    ce12d6ed's kpn-t without patches 0011 and 0012 (:data:`DEFECTS`). ``--envelope``:
    also compares OUTDIR/NAME's frames and weights with another vkdt-cli run's (the same
    build with lavapipe's truncating float16 stores: what float16 rounding alone moves).
    Writes FILE (JSON) and prints the table.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch

from kpn.config import Config, apply_overrides, config_to_toml, load_config
from kpn.io.checkpoint import load_checkpoint, save_checkpoint
from kpn.io.pfm import read_pfm, write_pfm
from kpn.model.network import KPN
from kpn.train.from_lut import checkpoint_from_lut
from kpn.train.loss import kpn_loss
from kpn.train.optim import clip_gradients_, make_optimizer, weight_buffer_size
from kpn.vkdt.lut import read_lut
from kpn.vkdt.lut_model import load_lut
from kpn.vkdt.target import vkdt_build

TILE = 64  # cnngenin's tile
OVERRIDES = (
    "train.loss=smape",
    "train.loss_reduction=sum",
    "train.lr=0.001",
    "train.lr_schedule=constant",
    "train.warmup_steps=0",
    "train.beta1=0.9",
    "train.beta2=0.999",
    "train.eps=0.0001",
    "train.l2=0",
    "train.grad_clip=0",
    "train.vkdt_bias_correction=true",
    "train.vkdt_f16_state=true",
    "train.vkdt_smape_grad=true",
    "data.generate=0",
    "data.batch=1",
    "data.tile=64",
    "model.precision=vkdt-f16",
    "train.precision=model",
    "model.vkdt_matmul=fallback",
    "model.vkdt_f16_backward=true",
    "train.vkdt_f16_moments=false",
)
# vkdt ce12d6ed's kpn-t without patches 0011 and 0012: defects 16 and 14 (--defects)
DEFECTS = ("model.vkdt_softmax_grad=true", "train.vkdt_f16_moments=true")


def test_pair() -> tuple[np.ndarray, np.ndarray]:
    """(noisy, clean) ``[64,64,3]`` float32: gradients, a dark disc and a bright square
    with Poisson-Gaussian noise (a, b) = (2e4, 40) on the 0..65535 scale; row 0 on top."""
    y, x = np.mgrid[0:TILE, 0:TILE] / TILE
    clean = np.stack([0.2 + 0.6 * x, 0.3 + 0.4 * y, 0.5 + 0.3 * np.sin(6 * x + 4 * y)], -1)
    clean[(x - 0.5) ** 2 + (y - 0.4) ** 2 < 0.06] *= 0.3
    clean[(x > 0.7) & (y > 0.6)] = [0.9, 0.8, 0.1]
    a, b = 2e4 / 65535**2, 40 / 65535
    noise = np.random.default_rng(0).standard_normal(clean.shape) * np.sqrt(a + b * clean)
    return (clean + noise).astype(np.float32), clean.astype(np.float32)


def command_setup(args: argparse.Namespace) -> int:
    out = Path(args.outdir)
    (out / "run").mkdir(parents=True, exist_ok=True)
    (out / "img").mkdir(exist_ok=True)
    lut = os.path.abspath(Path(args.weights) / "weights.lut")
    overrides = [*OVERRIDES, f"train.steps={args.frames - 1}", f"train.init={lut}"]
    config = apply_overrides(load_config(Path(args.weights) / "config.toml"), overrides)
    # NO_ALIAS builds' dup.comp zeroes the gradient into coarser levels; the others' pass it
    stop = vkdt_build(config, "series").no_alias
    config = apply_overrides(config, [f"model.gradient_stop={str(stop).lower()}"])
    save_checkpoint(out / "run" / "checkpoint.pt", checkpoint_from_lut(read_lut(lut), config))
    (out / "run" / "config.toml").write_text(config_to_toml(config), encoding="utf-8")
    noisy, clean = test_pair()
    write_pfm(out / "img" / "noisy.pfm", noisy, vkdt_rows=True)
    write_pfm(out / "img" / "clean.pfm", clean, vkdt_rows=True)
    told = {"a": args.told[0], "b": args.told[1]}  # what cnngenin tells kpn-t (generate 0)
    (out / "img" / "told.json").write_text(json.dumps(told), encoding="utf-8")
    print(
        f"wrote {out}/run (from {lut}, {args.frames - 1} steps) and {out}/img/{{noisy,clean}}.pfm"
    )
    return 0


def _tile(path: Path) -> torch.Tensor:
    """A 64x64 tile as cnngenin stores it (float16), ``[1,3,64,64]``."""
    image = read_pfm(path, vkdt_rows=True)[:TILE, :TILE]
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].half().float()


def _vkdt_matrices(lut: str, config: Config) -> list[torch.Tensor]:
    model = KPN(config.training_model)
    load_lut(model.mlp, config.model, read_lut(lut), "kpn-t")
    return [w.detach() for w in model.mlp.parameter_matrices]


def _compare_weights(
    ours: list[torch.Tensor], theirs: list[torch.Tensor], start: list[torch.Tensor]
) -> list[dict[str, float]]:
    """One set of matrices after the steps against another, and how far each moved."""
    rows = []
    for index, (mine, other, first) in enumerate(zip(ours, theirs, start, strict=True)):
        rows.append({
            "matrix": index, "identical": float((mine == other).float().mean()),
            "max_d": float((mine - other).abs().max()),
            "moved_kpn": float((mine - first).abs().mean()),
            "moved_vkdt": float((other - first).abs().mean()),
        })  # fmt: skip
    return rows


def _frames(directory: Path) -> list[torch.Tensor]:
    paths = sorted(glob.glob(str(directory / "out_*.pfm")))
    if not paths:
        raise SystemExit(f"{directory}: no out_*.pfm (run vkdt-cli first)")
    return [torch.from_numpy(read_pfm(p, vkdt_rows=True)).permute(2, 0, 1)[None] for p in paths]


def _final_lut(directory: Path) -> str | None:
    luts = sorted(glob.glob(str(directory / "*.lut")))
    return luts[-1] if luts else None


def command_replay(args: argparse.Namespace) -> int:
    out = Path(args.outdir)
    config = load_checkpoint(out / "run" / "checkpoint.pt").config
    if args.defects:
        config = apply_overrides(config, DEFECTS)
    torch.manual_seed(0)
    model = KPN(config.training_model)
    load_lut(model.mlp, config.model, config.train.init)
    start = [w.detach().clone() for w in model.mlp.parameter_matrices]
    optimizer = make_optimizer(model.parameters(), config.train)
    noisy, clean = _tile(out / "img" / "noisy.pfm"), _tile(out / "img" / "clean.pfm")
    told_file = json.loads((out / "img" / "told.json").read_text(encoding="utf-8"))
    told = torch.tensor([[told_file["a"], told_file["b"]]])
    frames = _frames(out / args.vkdt)
    envelope = _frames(out / args.envelope) if args.envelope else None
    rows = []
    for frame, theirs in enumerate(frames):
        output = model(noisy, told)
        loss = kpn_loss(
            output, clean, config.train.loss, config.train.loss_reduction,
            config.train.vkdt_smape_grad,
        )  # fmt: skip
        row = {
            "frame": frame, "loss_kpn": loss.item(),
            "loss_vkdt": kpn_loss(theirs, clean, "smape", "sum").item(),
            "max_d": (output.detach() - theirs).abs().max().item(),
        }  # fmt: skip
        if envelope is not None:
            row["loss_envelope"] = kpn_loss(envelope[frame], clean, "smape", "sum").item()
            row["max_d_envelope"] = (envelope[frame] - theirs).abs().max().item()
        rows.append(row)
        print(" ".join(f"{k} {v:.6g}" for k, v in row.items()), flush=True)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_gradients_(
            model.mlp.parameter_matrices, config.train, weight_buffer_size(config.model)
        )
        if frame < len(frames) - 1:
            optimizer.step()
    result = {"frames": rows, "steps": len(frames) - 1, "defects": args.defects, "weights": []}
    lut = _final_lut(out / args.vkdt)
    if lut:
        vkdt = _vkdt_matrices(lut, config)
        ours = [w.detach() for w in model.mlp.parameter_matrices]
        result["weights"] = _compare_weights(ours, vkdt, start)
        other = _final_lut(out / args.envelope) if args.envelope else None
        if other:
            result["weights_envelope"] = _compare_weights(
                _vkdt_matrices(other, config), vkdt, start
            )
    Path(args.json).write_text(json.dumps(result, indent=1), encoding="utf-8")
    relative = [abs(r["loss_kpn"] / r["loss_vkdt"] - 1) for r in rows if r["loss_vkdt"] > 0]
    print(f"wrote {args.json}: loss within {100 * max(relative):.3g}% over {len(rows)} frames")
    return 0 if all(math.isfinite(r["loss_vkdt"]) for r in rows) else 3


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    setup = commands.add_parser("setup")
    setup.add_argument("outdir")
    setup.add_argument("--weights", default="weights/vkdt-w32")
    setup.add_argument("--frames", type=int, default=21)
    setup.add_argument(
        "--told", type=float, nargs=2, default=(0.0, 0.0), metavar=("A", "B"),
        help="the noise cnngenin tells kpn-t (0 0: vkdt's generate 0; oracle harness 08)",
    )  # fmt: skip
    replay = commands.add_parser("replay")
    replay.add_argument("outdir")
    replay.add_argument("--json", required=True)
    replay.add_argument("--vkdt", default="vkdt", help="OUTDIR's folder of vkdt-cli's frames")
    replay.add_argument("--defects", action="store_true", help="vkdt ce12d6ed's kpn-t")
    replay.add_argument("--envelope", help="another vkdt-cli run's folder to compare with")
    args = parser.parse_args()
    return {"setup": command_setup, "replay": command_replay}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
