"""The training loop: :func:`train` a :class:`Plan` (``python train.py`` is
:mod:`kpn.train.cli` over it).

The loop reads top to bottom: model and optimiser, data, run folder, then steps with
validation, logging and checkpoints. A run folder (:class:`~kpn.io.run_folder.RunFolder`)
holds the resolved config, TensorBoard events, the latest checkpoint (everything an exact
resume needs) and the one before it, the checkpoint of the best validation PSNR and the
weights for vkdt. ``torchrun --nproc_per_node N train.py ...`` trains data-parallel; only
rank 0 writes.

A run survives every kill: SIGINT and SIGTERM end it after the step at work, with a
checkpoint, and :func:`train` raises :class:`Interrupted`.

From Python::

    from pathlib import Path

    from kpn import load_config
    from kpn.train.loop import Plan, train

    result = train(Plan(load_config("quick"), Path("runs/quick")), seed=1)
"""

from __future__ import annotations

import dataclasses
import math
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from kpn.config import Config, TrainConfig, config_to_toml
from kpn.data.loader import TrainingBatch, training_batches, validation_set
from kpn.errors import KpnError, make_folder
from kpn.io.atomic import atomic_write_bytes
from kpn.io.checkpoint import TrainingState, load_checkpoint, save_checkpoint
from kpn.io.run_folder import RunFolder
from kpn.model.mlp import load_weights
from kpn.model.network import KPN
from kpn.train.distributed import (
    Distributed,
    all_mean,
    any_rank,
    end_distributed,
    start_distributed,
)
from kpn.train.loss import kpn_loss
from kpn.train.monitor import Monitor, Progress
from kpn.train.optim import clip_gradients_, make_optimizer, weight_buffer_size
from kpn.train.validation import Validation, validate
from kpn.train.widen import grows_into, star21_outputs, widened
from kpn.vkdt.export import export_lut, lut_holds
from kpn.vkdt.lut_model import load_lut


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
class Plan:
    """Everything decided before the first write: config, run folder, start state.

    ``Plan(config, run_dir)`` starts a fresh run: ``run_dir`` should be new or empty (the
    command line refuses another run's folder). ``resume_from`` continues a checkpoint's
    run, whose model ``config`` must have.
    """

    config: Config
    run_dir: Path
    resume_from: TrainingState | None = None
    notes: tuple[str, ...] = ()  # what the user should know about the start, a line each
    resumed: bool = False  # the run folder's earlier events are superseded from the start


@dataclass(frozen=True)
class TrainResult:
    """The trained model and its validation before and after (None on ranks other than 0)."""

    model: KPN
    initial: Validation | None
    final: Validation | None


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


@contextmanager
def stop_requests() -> Iterator[StopRequest]:
    """SIGINT and SIGTERM noted in the StopRequest yielded, the handlers before restored
    after."""
    stop = StopRequest()
    previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device; KpnError when it names none, or CUDA without one."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise KpnError(f"device={device}: not a device (cpu, cuda or cuda:N)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise KpnError(f"device={device}: no CUDA device is available")
    return resolved


@dataclass
class Trainee:
    """The model in training, its optimiser, and how far its training is."""

    model: KPN
    optimizer: torch.optim.Optimizer
    step: int = 0  # optimiser steps taken, skipped ones included
    skipped: int = 0  # non-finite steps skipped
    samples_seen: int = 0  # the data stream's position: sample index of the next batch
    best_psnr: float = -math.inf  # the best validation PSNR so far (best.pt's)

    def snapshot(self, config: Config) -> TrainingState:
        """Everything an exact resume from here needs."""
        return TrainingState(
            config,
            self.model.state_dict(),
            self.optimizer.state_dict(),
            self.step,
            self.skipped,
            self.samples_seen,
            torch.get_rng_state(),
            self.best_psnr,
        )


def start_trainee(plan: Plan, seed: int, device: torch.device) -> Trainee:
    """The model and optimiser: fresh (``seed`` makes the initialisation repeatable, then
    ``train.init``), or as the plan's checkpoint left them."""
    config = plan.config
    torch.manual_seed(seed)
    model = KPN(config.training_model).to(device)
    optimizer = make_optimizer(model.parameters(), config.train)
    state = plan.resume_from
    if state is None:
        initialise(model, config)
        return Trainee(model, optimizer)
    model.load_state_dict(state.model)
    optimizer.load_state_dict(state.optimizer)
    torch.set_rng_state(state.rng)
    return Trainee(
        model, optimizer, state.step, state.skipped_steps, state.samples_seen, state.best_psnr
    )


def initialise(model: KPN, config: Config) -> None:
    """vkdt's init: random (already done by the constructor) or weights from a file."""
    init = config.train.init
    if init.endswith(".lut") and not lut_holds(config.model):
        # a .lut holds one star15 kernel: the chroma's kernel and alpha start as the luma's,
        # so the model starts as the file's network (design §18); star21's new taps as
        # their transposes (design §20)
        shared = KPN(dataclasses.replace(config.model, chroma_kernel=False, kernel_taps="star15"))
        load_lut(shared.mlp, shared.config, init)
        matrices = [weight.detach() for weight in shared.mlp.weights]
        if config.model.chroma_kernel:
            matrices[-1] = matrices[-1].repeat(2, 1)
        if config.model.kernel_taps == "star21":
            matrices[-1] = star21_outputs(matrices[-1])
        load_weights(model.mlp, matrices)
    elif init.endswith(".lut"):
        load_lut(model.mlp, config.model, init)
    elif init.endswith(".pt"):
        state = load_checkpoint(init)
        trained = state.config.model
        if trained == config.model:
            model.load_state_dict(state.model)
        elif grows_into(trained, config.model):
            small = KPN(trained)
            small.load_state_dict(state.model)
            matrices = [weight.detach() for weight in small.mlp.weights]
            if trained.kernel_taps != config.model.kernel_taps:
                matrices[-1] = star21_outputs(matrices[-1])
            load_weights(model.mlp, widened(matrices, model.mlp.weights))
        else:
            raise KpnError(
                f"{init}: checkpoint's model differs from the config's (only a narrower "
                "model.width or model.chroma_input off, where the new network starts as it, "
                "or star15 kernels for star21 may)"
            )


def prepare_run_dir(folder: RunFolder, config: Config) -> None:
    """Create the run folder and write the resolved config into it."""
    make_folder(folder.path)
    atomic_write_bytes(folder.config, config_to_toml(config).encode("utf-8"))


@dataclass(frozen=True)
class StepOutcome:
    """What one training step measured."""

    loss: float  # the batch's loss, the mean over ranks
    grad_norm: float  # the gradient's norm before clipping
    skipped: bool  # the loss or gradient was not finite: the weights were left alone


def train_step(
    trainee: Trainee,
    parallel: torch.nn.Module,
    batch: TrainingBatch,
    lr: float,
    train: TrainConfig,
    ranks: Distributed,
) -> StepOutcome:
    """One optimiser step on ``batch`` (``[B,3,H,W]`` tiles): forward (through
    ``parallel``, the model or its DDP wrapper), loss, backward, clip, update. A step
    whose loss or gradient is not finite changes no weight and no optimiser state."""
    optimizer = trainee.optimizer
    for group in optimizer.param_groups:
        group["lr"] = lr
    output = parallel(batch.noisy, batch.noise_ab)
    loss = kpn_loss(
        output, batch.reference, train.loss, train.loss_reduction, train.vkdt_smape_grad
    )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    buffer_size = weight_buffer_size(trainee.model.config)  # vkdt's clipping reads a prefix
    grad_norm = clip_gradients_(trainee.model.mlp.parameter_matrices, train, buffer_size)
    loss_value = all_mean(loss.detach(), ranks)
    # gradients are identical on every rank after DDP's all-reduce, so every rank takes
    # the same decision
    finite = bool(torch.isfinite(loss_value)) and bool(torch.isfinite(grad_norm))
    if finite:
        optimizer.step()
    else:
        optimizer.zero_grad(set_to_none=True)  # no NaN lingers in the logs
    return StepOutcome(loss_value.item(), grad_norm.item(), not finite)


def due(step: int, every: int, last: int) -> bool:
    """Whether what is done every ``every`` steps, and after the last, is due at ``step``."""
    return step % every == 0 or step == last


def measure(
    trainee: Trainee, val_batch: TrainingBatch, config: Config, progress: Progress
) -> Validation:
    """Validate the model where it is, showing that it does."""
    progress.validating(val_batch.noisy.shape[0], trainee.step)
    result = validate(trainee.model, val_batch, config)
    progress.validated(result, trainee.step)
    return result


def first_validation(
    trainee: Trainee,
    val_batch: TrainingBatch,
    config: Config,
    progress: Progress,
    monitor: Monitor,
    ranks: Distributed,
) -> Validation | None:
    """The model as the run starts, validated on the main rank (None on others); the
    untrained model's (step 0) also in TensorBoard, with its pictures."""
    if not ranks.main:
        return None
    initial = measure(trainee, val_batch, config, progress)
    if trainee.step == 0:
        monitor.validation(initial, 0)
        monitor.pictures(trainee.model, val_batch, 0)
    return initial


def keep_if_best(trainee: Trainee, result: Validation, folder: RunFolder, config: Config) -> None:
    """Save the run as ``best.pt`` when ``result`` is its best validation PSNR yet."""
    if result.psnr_denoised > trainee.best_psnr:  # never for NaN
        trainee.best_psnr = result.psnr_denoised
        save_checkpoint(folder.best, trainee.snapshot(config))


def save_run(folder: RunFolder, config: Config, trainee: Trainee) -> None:
    """The checkpoint (the one before kept beside it) and vkdt's weights, as they are,
    where a ``.lut`` holds them (:func:`kpn.vkdt.export.lut_holds`)."""
    save_checkpoint(folder.checkpoint, trainee.snapshot(config), keep_previous=True)
    if lut_holds(config.model):
        export_lut(trainee.model.mlp, config, folder.weights)


def train(plan: Plan, seed: int = 0, device: str | torch.device = "cpu") -> TrainResult:
    """Train ``plan.config``'s model into ``plan.run_dir`` on ``device``; ``seed`` draws
    the initial weights and the data. KpnError for bad input (before any write);
    :class:`Interrupted` after SIGINT or SIGTERM stopped and saved the run."""
    where = resolve_device(device)
    ranks = start_distributed(where)
    config, schedule = plan.config, plan.config.train
    if ranks.main:
        for note in plan.notes:
            print(note, flush=True)
    trainee = start_trainee(plan, seed, where)
    parallel = DistributedDataParallel(trainee.model) if ranks.world > 1 else trainee.model
    # data: sample i of the stream is a pure function of (seed, i), so resuming is
    # starting the stream at samples_seen
    start = trainee.samples_seen
    batches = training_batches(config.data, seed, start, ranks.rank, ranks.world, where)
    val_batch = validation_set(config.data).to(where)
    folder = RunFolder(plan.run_dir)
    if ranks.main:
        prepare_run_dir(folder, config)
    monitor = Monitor.open(
        folder.path, config, trainee.model, trainee.step, plan.resumed, seed, ranks.main
    )
    progress = Progress(schedule.steps, trainee.step, ranks.main, schedule.log_every)
    with stop_requests() as stop:
        initial = result = first_validation(trainee, val_batch, config, progress, monitor, ranks)
        stopped = False
        try:
            while trainee.step < schedule.steps:
                # a signal lands anywhere; it is acted on only here, between whole steps
                stopped = any_rank(stop.name is not None, ranks, where)
                if stopped:
                    break
                started = time.perf_counter()
                batch = next(batches)
                trainee.samples_seen += batch.noisy.shape[0] * ranks.world
                lr = get_lr(trainee.step, schedule)
                outcome = train_step(trainee, parallel, batch, lr, schedule, ranks)
                trainee.skipped += int(outcome.skipped)
                trainee.step += 1
                step, seconds = trainee.step, time.perf_counter() - started

                # measured on the weights the step started from: logged at their step,
                # 0 for the untrained model (Monitor.training says why)
                measured = step - 1
                if due(measured, schedule.log_every, schedule.steps - 1):
                    monitor.training(
                        measured, outcome.loss, lr, outcome.grad_norm, trainee.skipped, seconds
                    )
                if ranks.main and due(step, schedule.val_every, schedule.steps):
                    result = measure(trainee, val_batch, config, progress)
                    monitor.validation(result, step)
                    keep_if_best(trainee, result, folder, config)
                if due(step, schedule.image_every, schedule.steps):
                    monitor.pictures(trainee.model, val_batch, step)
                progress.update(step, outcome.loss)
                if ranks.main and step % schedule.checkpoint_every == 0 and step < schedule.steps:
                    save_run(folder, config, trainee)
            progress.close()
            if ranks.main:  # still under our handler: a second Ctrl-C does not cut it short
                save_run(folder, config, trainee)
        finally:
            batches.close()  # stops the loader's workers before the process goes
    monitor.close(trainee.step, finished=not stopped)
    end_distributed(ranks)
    if stopped:
        why = stop.name or "another rank's signal"
        if ranks.main:
            saved = f"checkpoint and weights saved in {folder.path}"
            print(f"{why}: stopped at step {trainee.step}; {saved}")
        raise Interrupted(why)
    return TrainResult(trainee.model, initial, result)
