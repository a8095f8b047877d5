"""What a training run shows while it runs: TensorBoard events and a progress display."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from kpn.config import Config, config_to_dict, config_to_toml
from kpn.model.apply import kernel_weights
from kpn.model.network import KPN
from kpn.model.summary import summary
from kpn.train.visualize import alpha_map, comparison, kernel_stars, matrix_map

if TYPE_CHECKING:
    from kpn.data.loader import TrainingBatch
    from kpn.train.validation import Validation

SAMPLE_IMAGES = 2  # validation images shown in TensorBoard


class Monitor:
    """A run's TensorBoard events: every tag it writes, and when.

    Only the main rank writes; a Monitor opened with ``enabled`` false (another rank's)
    does nothing, so the loop calls it the same on every rank.
    """

    def __init__(self, writer: SummaryWriter | None) -> None:
        self.writer = writer

    @classmethod
    def open(
        cls,
        run_dir: Path,
        config: Config,
        model: KPN,
        step: int,
        purge: bool = False,
        seed: int = 0,
        enabled: bool = True,
    ) -> Monitor:
        """A Monitor writing into ``run_dir`` (see :func:`open_writer`), or when not
        ``enabled`` one writing nothing."""
        if not enabled:
            return cls(None)
        return cls(open_writer(run_dir, config, model, step, purge, seed))

    def training(
        self, step: int, loss: float, lr: float, grad_norm: float, skipped: int, seconds: float
    ) -> None:
        """The optimiser step taken from the weights of step ``step`` (to ``step + 1``):
        its batch's loss on those weights (the mean over ranks), its learning rate, its
        gradient's norm, the non-finite steps skipped so far (this one included), and its
        speed (``seconds`` it took).

        Logged at ``step``, not ``step + 1``: the loss and gradient are measured before
        the update, on the model of ``step``, the one ``loss/val`` at ``step`` measures.
        So the training curves start, as the validation ones do, at step 0 with the
        untrained model (its loss on the first batch, the first learning rate), and at
        every step both describe the same model; no batch is drawn for the final model,
        so they end at the last step's start.
        """
        if self.writer is None:
            return
        self.writer.add_scalar("loss/train", loss, step)
        self.writer.add_scalar("opt/lr", lr, step)
        self.writer.add_scalar("opt/grad_norm", grad_norm, step)
        self.writer.add_scalar("opt/skipped_steps", skipped, step)
        self.writer.add_scalar("perf/steps_per_s", 1.0 / seconds, step)

    def validation(self, result: Validation, step: int) -> None:
        """The validation measured at ``step``: loss, PSNR, its gain, SSIM."""
        if self.writer is None:
            return
        self.writer.add_scalar("loss/val", result.loss, step)
        self.writer.add_scalar("metrics/val_psnr", result.psnr_denoised, step)
        self.writer.add_scalar("metrics/val_psnr_gain", result.gain, step)
        self.writer.add_scalar("metrics/val_ssim", result.ssim_denoised, step)

    def pictures(self, model: KPN, batch: TrainingBatch, step: int) -> None:
        """What :func:`log_pictures` shows, at ``step``."""
        if self.writer is not None:
            log_pictures(self.writer, model, batch, step)

    def close(self, step: int, finished: bool) -> None:
        """Flush and close the events; a ``finished`` run (not stopped by a signal) ends
        its HParams entry (:func:`end_hparams`)."""
        if self.writer is None:
            return
        if finished:
            end_hparams(self.writer, step)
        self.writer.close()


def open_writer(
    run_dir: Path, config: Config, model: KPN, step: int, purge: bool = False, seed: int = 0
) -> SummaryWriter:
    """A TensorBoard writer in the run directory, with the config and model as text and
    the run's HParams entry (:func:`log_hparams`).

    ``purge``: the directory's earlier events from ``step`` on are superseded (a resumed
    run repeats the steps after its checkpoint, one restarted from step 0 all of them).
    """
    writer = SummaryWriter(log_dir=str(run_dir), purge_step=step if purge else None)
    markdown = "\n".join("    " + line for line in config_to_toml(config).splitlines())
    writer.add_text("config", markdown, step)
    text = summary(config.model, config.data.tile, config.data.tile)
    writer.add_text("model", "\n".join("    " + line for line in text.splitlines()), step)
    log_hparams(writer, run_hparams(config, seed), step)
    return writer


# Settings that do not change what a run learns, left out of its HParams entry.
NOT_HPARAMS = frozenset(
    {"train.log_every", "train.val_every", "train.checkpoint_every", "train.image_every"}
    | {"data.workers"}
)
HPARAM_SECTIONS = ("model", "data", "train")

HParam = bool | int | float | str


def run_hparams(config: Config, seed: int) -> dict[str, HParam]:
    """What shapes a run's result, as ``section.key``: every [model], [data] and [train]
    value but the logging intervals and loader processes, and the seed."""
    values: dict[str, HParam] = {}
    for section in HPARAM_SECTIONS:
        for key, value in config_to_dict(getattr(config, section)).items():
            name = f"{section}.{key}"
            if name not in NOT_HPARAMS:
                # the dashboard takes numbers, strings and booleans
                values[name] = value if isinstance(value, HParam) else str(value)
    values["seed"] = seed
    return values


def log_hparams(writer: SummaryWriter, hparams: dict[str, HParam], step: int) -> None:
    """The run's entry in TensorBoard's HParams dashboard, written into the run's own
    event file (``SummaryWriter.add_hparams`` would make a sub-folder, another run).

    Only the session's start is written, no experiment summary: the dashboard then builds
    its table from every run's entry, and its metric columns from the runs' scalars,
    each at its last value: ``metrics/val_psnr`` and ``metrics/val_ssim`` of the final
    validation.
    """
    start = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
    for name, value in hparams.items():
        # bool before int: True is an int to isinstance
        if isinstance(value, bool):
            start.hparams[name].bool_value = value
        elif isinstance(value, int | float):
            start.hparams[name].number_value = value
        else:
            start.hparams[name].string_value = value
    data = plugin_data_pb2.HParamsPluginData(session_start_info=start)
    writer._get_file_writer().add_summary(
        hparams_event(metadata.SESSION_START_INFO_TAG, data), step
    )


def end_hparams(writer: SummaryWriter, step: int) -> None:
    """The run's HParams entry is marked finished (status success).

    A run stopped by Ctrl-C or SIGTERM gets no end: the dashboard's statuses (unknown,
    success, failure, running) have none for a run that can be resumed, and a resumed
    run that finishes ends its entry then.
    """
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS, end_time_secs=time.time())
    data = plugin_data_pb2.HParamsPluginData(session_end_info=end)
    writer._get_file_writer().add_summary(hparams_event(metadata.SESSION_END_INFO_TAG, data), step)


def hparams_event(tag: str, data: plugin_data_pb2.HParamsPluginData) -> Summary:
    """A summary the HParams dashboard reads, as ``tensorboard.plugins.hparams.summary``
    writes it (that module needs TensorFlow): the message in the metadata, no data."""
    value = Summary.Value(
        tag=tag, metadata=metadata.create_summary_metadata(data), tensor=metadata.NULL_TENSOR
    )
    return Summary(value=[value])


def log_pictures(writer: SummaryWriter, model: KPN, batch: TrainingBatch, step: int) -> None:
    """Crops, alpha maps, kernels as stars, weight and gradient maps, histograms.

    Each picture is labelled and carries its colour scale (:mod:`kpn.train.visualize`).
    Each layer's weight map and gradient map is on its own symmetric scale (its largest
    |value|, which its legend states): the last layer's gradients are tens of times the
    first's, and a trained model's last weights several times the hidden ones', so one
    scale shared by all layers would draw the others white. The layers' magnitudes are
    compared by the legends' numbers and the histograms.
    """
    with torch.no_grad():
        result = model.inspect(batch.noisy[:SAMPLE_IMAGES], batch.noise_ab[:SAMPLE_IMAGES])
    for index in range(result.output.shape[0]):
        crops = comparison(batch.noisy[index], result.output[index], batch.reference[index])
        writer.add_image(f"images/{index}_noisy_denoised_reference", crops, step)
    for level, outputs in enumerate(result.levels):
        alpha = alpha_map(outputs.alpha[0, 0], f"alpha level {level}")
        writer.add_image(f"alpha/level_{level}", alpha, step)
        if outputs.kernel is not None:
            logits = outputs.kernel[:1, : model.config.kernel_outputs - 1]
            taps = kernel_weights(logits, model.config.kernel_activation)
            stars = kernel_stars(taps[0], title=f"kernels level {level}")
            writer.add_image(f"kernels/level_{level}", stars, step)
    # TensorBoard keys a tag to one plugin: an image and a histogram under the same tag
    # leave the histogram dashboards empty, so the heat maps have tags of their own
    for index, layer in enumerate(model.mlp.layers):
        title = f"layer {index}"
        weights = matrix_map(layer.weight, title=f"weights {title}")
        writer.add_image(f"weight_maps/layer_{index}", weights, step)
        writer.add_histogram(f"weights/layer_{index}", layer.weight.detach().cpu(), step)
        grad = layer.weight.grad
        if grad is not None and torch.isfinite(grad).all():
            heat = matrix_map(grad, title=f"gradients {title}")
            writer.add_image(f"gradient_maps/layer_{index}", heat, step)
            writer.add_histogram(f"gradients/layer_{index}", grad.cpu(), step)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


class Progress:
    """Where training is: a tqdm bar on a terminal, plain lines otherwise (logs, CI).

    A plain line comes after the first step (a run shows within seconds that it is under
    way), then every ``every`` steps and after the last. A validation pass says that it
    is running (on a large set it takes a while), and its result is shown with the step
    it was measured at, ``val +7.20 dB @1000``: an old value never passes for a new one.
    Only the main rank's Progress is ``enabled``.
    """

    def __init__(self, total: int, start: int, enabled: bool, every: int) -> None:
        self.enabled = enabled
        self.every = every
        self.total = total
        self.start = start
        self.started = time.perf_counter()
        self.paused = 0.0  # seconds spent validating: not training speed
        self.validation_started: float | None = None
        self.measured: tuple[Validation, int] | None = None  # the last validation, its step
        self.loss: float | None = None
        self.bar = None
        if enabled and sys.stdout.isatty():
            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)

    def validating(self, tiles: int, step: int) -> None:
        """A validation pass of ``tiles`` tiles starts at ``step``."""
        self.validation_started = time.perf_counter()
        if not self.enabled:
            return
        text = f"validating {plural(tiles, 'tile')} at step {step}..."
        if self.bar is not None:
            self.bar.set_postfix_str(text)
        else:
            print(text, flush=True)

    def validated(self, validation: Validation | None, step: int) -> None:
        """The pass begun by :meth:`validating` measured ``validation`` at ``step``."""
        if self.validation_started is not None:
            self.paused += time.perf_counter() - self.validation_started
            self.validation_started = None
        if validation is not None:
            self.measured = (validation, step)
        if self.bar is not None:
            self.bar.set_postfix_str(self.status())

    def status(self) -> str:
        """The last loss and validation, e.g. ``loss 0.0123  val +7.20 dB @1000``."""
        parts = [] if self.loss is None else [f"loss {self.loss:.4g}"]
        if self.measured is None:
            parts.append("val n/a")
        else:
            validation, step = self.measured
            parts.append(f"val {validation.gain:+.2f} dB @{step}")
        return "  ".join(parts)

    def update(self, step: int, loss: float) -> None:
        """Step ``step`` is done; ``loss`` its training loss."""
        if not self.enabled:
            return
        self.loss = loss
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix_str(self.status())
        elif step % self.every == 0 or step == self.total or step == self.start + 1:
            seconds = time.perf_counter() - self.started - self.paused
            rate = (step - self.start) / seconds if seconds > 0 else 0.0
            eta = (self.total - step) / rate if rate > 0 else 0.0
            print(
                f"step {step}/{self.total}  {self.status()}  {rate:.2f} steps/s  eta {eta:.0f} s",
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
