"""Training: ``python train.py --config X.toml`` (also ``kpn-train``).

The loop reads top to bottom: config, run directory, data, model, optimiser, then steps
with validation, logging and checkpoints. A run directory holds the resolved
``config.toml``, TensorBoard events, ``checkpoint.pt`` (everything an exact resume needs)
and the one before it, ``checkpoint.prev.pt``, ``best.pt`` (the checkpoint of the best
validation PSNR) and ``weights.lut`` for vkdt. ``torchrun --nproc_per_node N train.py ...``
trains data-parallel; only rank 0 writes.

A run survives every kill: SIGINT and SIGTERM end it after the step at work, with a
checkpoint; ``--resume`` continues from the latest checkpoint (from the one before when
the latest cannot be read), and starts a run killed before its first checkpoint afresh
from its ``config.toml``.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter

from kpn.cli import Parser
from kpn.config import Config, TrainConfig, apply_overrides, config_to_toml, load_config
from kpn.data.loader import TrainingBatch, training_batches, validation_set
from kpn.errors import KpnError
from kpn.io.checkpoint import (
    TrainingState,
    load_checkpoint,
    load_latest_checkpoint,
    previous_path,
    save_checkpoint,
)
from kpn.metrics import display_ssim, psnr
from kpn.model.network import KPN
from kpn.train.allocator import keep_freed_memory
from kpn.train.loss import kpn_loss
from kpn.train.monitor import Progress, end_hparams, log_pictures, open_writer
from kpn.train.optim import clip_gradients_, make_optimizer
from kpn.vkdt.export import export_lut, load_lut

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
WEIGHTS = "weights.lut"
CONFIG = "config.toml"


def get_lr(step: int, train: TrainConfig) -> float:
    """Learning rate of step ``step``: linear warm-up, then constant or cosine decay."""
    if step < train.warmup_steps:
        return train.lr * (step + 1) / train.warmup_steps
    if train.lr_schedule == "constant":
        return train.lr
    progress = (step - train.warmup_steps) / max(1, train.steps - train.warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return train.lr * (train.min_lr_ratio + (1.0 - train.min_lr_ratio) * cosine)


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int
    world: int

    @property
    def main(self) -> bool:
        return self.rank == 0


def start_distributed(device: torch.device) -> Distributed:
    """Join the process group torchrun describes in the environment, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed(0, 1)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), world)


def all_mean(value: Tensor, ranks: Distributed) -> Tensor:
    """Mean of a scalar over all ranks (itself on one)."""
    if ranks.world > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= ranks.world
    return value


@dataclass(frozen=True)
class Validation:
    """The validation set's loss, and PSNR (linear) and SSIM (as shown) of its images."""

    loss: float
    psnr_noisy: float
    psnr_denoised: float
    ssim_noisy: float = math.nan
    ssim_denoised: float = math.nan

    @property
    def gain(self) -> float:
        return self.psnr_denoised - self.psnr_noisy


@dataclass(frozen=True)
class TrainResult:
    """The trained model and its validation before and after (None on ranks other than 0)."""

    model: KPN
    initial: Validation | None
    final: Validation | None


def log_validation(writer: SummaryWriter, result: Validation, step: int) -> None:
    writer.add_scalar("loss/val", result.loss, step)
    writer.add_scalar("metrics/val_psnr", result.psnr_denoised, step)
    writer.add_scalar("metrics/val_psnr_gain", result.gain, step)
    writer.add_scalar("metrics/val_ssim", result.ssim_denoised, step)


def validate(model: KPN, batch: TrainingBatch, config: Config) -> Validation:
    """Loss, PSNR and SSIM of the fixed validation set, noisy and denoised."""
    model.eval()
    with torch.no_grad():
        output = model(batch.noisy, batch.noise_ab)
        loss = kpn_loss(output, batch.reference, config.train.loss, config.train.loss_reduction)
    model.train()
    return Validation(
        loss.item(),
        psnr(batch.noisy, batch.reference),
        psnr(output, batch.reference),
        display_ssim(batch.noisy, batch.reference),
        display_ssim(output, batch.reference),
    )


# ------------------------------------------------------------------------------------------
# Command line


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


@dataclass(frozen=True)
class Plan:
    """Everything decided before the first write: config, run directory, start state."""

    config: Config
    run_dir: Path
    resume_from: TrainingState | None
    notes: tuple[str, ...] = ()  # what the user should know about the start, a line each
    resumed: bool = False  # --resume: earlier events in run_dir are superseded


def refuse_occupied(run_dir: Path, resumed: Path | None = None) -> None:
    """KpnError when ``run_dir`` holds anything and is not ``resumed``, the run continued.

    A run written there would mix its files with another's and overwrite its config.toml.
    """
    if resumed is not None and run_dir.resolve() == resumed.resolve():
        return
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        if resumed is None:
            raise KpnError(f"{run_dir}: run directory exists; use --resume or another --out")
        raise KpnError(
            f"{run_dir}: run directory exists and is not the run resumed ({resumed}); "
            "choose another --out"
        )


def started_without_checkpoint(run_dir: Path) -> bool:
    """A run directory that a kill stopped before its first checkpoint: its resolved
    config.toml is there, and no checkpoint."""
    latest = run_dir / CHECKPOINT
    return (
        run_dir.is_dir()
        and (run_dir / CONFIG).is_file()
        and not latest.exists()
        and not previous_path(latest).exists()
    )


def plan_run(args: argparse.Namespace) -> Plan:
    """Resolve config, run directory and resume state, refusing bad input before any write."""
    if args.resume is None:
        if not args.config:
            raise KpnError("--config is required (or --resume a run)")
        config = apply_overrides(load_config(args.config), args.set)
        run_dir = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
        refuse_occupied(run_dir)
        return Plan(config, run_dir, None)

    source = Path(args.resume or args.out or "")
    if not str(source) or str(source) == ".":
        raise KpnError("--resume needs a run directory or checkpoint (or --out)")
    checkpoint = source / CHECKPOINT if source.is_dir() else source
    state: TrainingState | None = None
    if started_without_checkpoint(source):
        # nothing was saved to continue from: the run starts over, as it was configured
        where = source / CONFIG
        config = load_config(where)
        notes = (f"{source}: no checkpoint yet; starting the run from step 0 with its {CONFIG}",)
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
    refuse_occupied(run_dir, checkpoint.parent)
    return Plan(config, run_dir, state, notes, resumed=True)


def prepare_run_dir(run_dir: Path, config: Config) -> None:
    """Create the run directory and write the resolved config into it."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CONFIG).write_text(config_to_toml(config), encoding="utf-8")
    except OSError as error:
        raise KpnError(f"{run_dir}: cannot write run directory ({error.strerror})") from None


def initialise(model: KPN, config: Config) -> None:
    """vkdt's init: random (already done by the constructor) or weights from a file."""
    init = config.train.init
    if init.endswith(".lut"):
        load_lut(model.mlp, config.model, init)
    elif init.endswith(".pt"):
        state = load_checkpoint(init)
        if state.config.model != config.model:
            raise KpnError(f"{init}: checkpoint's model differs from the config's")
        model.load_state_dict(state.model)


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived: the run saved and stopped."""


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """The handler of SIGINT and SIGTERM: it only notes the signal for the loop.

    Raising from the handler would end the step it lands in half done (its batch drawn,
    the weights not updated), leaving the checkpoint's data position a batch ahead of
    its step; the loop finishes the step, then saves and stops.
    """

    def __init__(self) -> None:
        self.name: str | None = None

    def __call__(self, signum: int, frame: object) -> None:
        self.name = signal.Signals(signum).name


def stop_agreed(stop: StopRequest, ranks: Distributed, device: torch.device) -> bool:
    """Whether any rank was asked to stop. All ranks leave the loop after the same step:
    one that went on would wait forever in the next step's all-reduce."""
    if ranks.world == 1:
        return stop.name is not None
    flag = torch.tensor([float(stop.name is not None)], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


# ------------------------------------------------------------------------------------------
# The training loop


def train(args: argparse.Namespace) -> TrainResult:
    device = torch.device(args.device)
    ranks = start_distributed(device)
    plan = plan_run(args)
    config = plan.config
    if device.type == "cuda" and not torch.cuda.is_available():
        raise KpnError("--device cuda: no CUDA device is available")
    if ranks.main:
        for note in plan.notes:
            print(note, flush=True)

    # model and optimiser, resumed or fresh; the seed makes the initialisation repeatable
    torch.manual_seed(args.seed)
    model = KPN(config.training_model).to(device)
    optimizer = make_optimizer(model.parameters(), config.train)
    buffer_size = (config.model.n_hidden + 1) * config.model.width**2  # vkdt's weights
    step, skipped, samples_seen, best_psnr = 0, 0, 0, -math.inf
    if plan.resume_from is None:
        initialise(model, config)
    else:
        state = plan.resume_from
        model.load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer)
        step, skipped, samples_seen = state.step, state.skipped_steps, state.samples_seen
        best_psnr = state.best_psnr
        torch.set_rng_state(state.rng)
    parallel = DistributedDataParallel(model) if ranks.world > 1 else model

    # data: sample i of the stream is a pure function of (seed, i), so resuming is
    # starting the stream at samples_seen
    batches = training_batches(
        config.data, args.seed, samples_seen, ranks.rank, ranks.world, device
    )
    val_batch = validation_set(config.data).to(device)

    writer = None
    if ranks.main:
        prepare_run_dir(plan.run_dir, config)
        writer = open_writer(plan.run_dir, config, model, step, plan.resumed, args.seed)

    def snapshot() -> TrainingState:
        return TrainingState(
            config,
            model.state_dict(),
            optimizer.state_dict(),
            step,
            skipped,
            samples_seen,
            torch.get_rng_state(),
            best_psnr,
        )

    def save_all() -> None:
        if ranks.main:
            save_checkpoint(plan.run_dir / CHECKPOINT, snapshot(), keep_previous=True)
            export_lut(model.mlp, config, plan.run_dir / WEIGHTS)

    stop = StopRequest()
    previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    progress = Progress(config.train.steps, step, ranks.main, config.train.log_every)
    val_tiles = val_batch.noisy.shape[0]
    progress.validating(val_tiles, step)
    initial = validate(model, val_batch, config) if ranks.main else None
    progress.validated(initial, step)
    result = initial
    if writer is not None and initial is not None and step == 0:  # the untrained model
        log_validation(writer, initial, step)
        log_pictures(writer, model, val_batch, step)
    stopped = False
    try:
        while step < config.train.steps:
            # a signal lands anywhere; it is acted on only here, between whole steps
            stopped = stop_agreed(stop, ranks, device)
            if stopped:
                break
            started = time.perf_counter()
            batch = next(batches)
            samples_seen += batch.noisy.shape[0] * ranks.world
            lr = get_lr(step, config.train)
            for group in optimizer.param_groups:
                group["lr"] = lr

            output = parallel(batch.noisy, batch.noise_ab)
            loss = kpn_loss(output, batch.reference, config.train.loss, config.train.loss_reduction)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = clip_gradients_(model.mlp.parameter_matrices, config.train, buffer_size)
            loss_value = all_mean(loss.detach(), ranks)
            # gradients are identical on every rank after DDP's all-reduce, so every rank
            # takes the same decision
            if torch.isfinite(loss_value) and torch.isfinite(grad_norm):
                optimizer.step()
            else:
                skipped += 1
                optimizer.zero_grad(set_to_none=True)  # no NaN lingers in the logs
            step += 1
            seconds = time.perf_counter() - started

            if writer is not None:
                if step % config.train.log_every == 0 or step == config.train.steps:
                    writer.add_scalar("loss/train", loss_value.item(), step)
                    writer.add_scalar("opt/lr", lr, step)
                    writer.add_scalar("opt/grad_norm", grad_norm.item(), step)
                    writer.add_scalar("opt/skipped_steps", skipped, step)
                    writer.add_scalar("perf/steps_per_s", 1.0 / seconds, step)
                if step % config.train.val_every == 0 or step == config.train.steps:
                    progress.validating(val_tiles, step)
                    result = validate(model, val_batch, config)
                    progress.validated(result, step)
                    log_validation(writer, result, step)
                    if result.psnr_denoised > best_psnr:  # never for NaN
                        best_psnr = result.psnr_denoised
                        save_checkpoint(plan.run_dir / BEST, snapshot())
                if step % config.train.image_every == 0 or step == config.train.steps:
                    log_pictures(writer, model, val_batch, step)
                progress.update(step, loss_value.item())
            if step % config.train.checkpoint_every == 0 and step < config.train.steps:
                save_all()
        progress.close()
        save_all()  # still under our handler: a second Ctrl-C does not cut the save short
    finally:
        batches.close()  # stops the loader's workers before the process goes
        for s, handler in previous.items():
            signal.signal(s, handler)
    if writer is not None:
        if not stopped:
            end_hparams(writer, step)
        writer.close()
    if ranks.world > 1:
        dist.destroy_process_group()
    if stopped:
        why = stop.name or "another rank's signal"
        if ranks.main:
            print(f"{why}: stopped at step {step}; checkpoint and weights saved in {plan.run_dir}")
        raise Interrupted(why)
    return TrainResult(model, initial, result)


def main(argv: Sequence[str] | None = None) -> int:
    """Train; KpnError is one line on stderr and exit code 2, Ctrl-C exit code 130."""
    args = build_parser().parse_args(argv)
    keep_freed_memory()
    try:
        final = train(args).final
    except KpnError as error:
        print(f"error: {error}", file=sys.stderr)
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


def run() -> None:
    sys.exit(main())
