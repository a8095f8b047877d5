"""TensorBoard events as TensorBoard itself reads them: every dashboard finds its data."""

from __future__ import annotations

import io
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.data_provider import MultiplexerDataProvider
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
from tensorboard.context import RequestContext
from tensorboard.plugins.base_plugin import TBContext
from tensorboard.plugins.hparams import api_pb2, list_session_groups, metadata
from tensorboard.plugins.hparams.backend_context import Context
from tensorboard.util.tensor_util import make_ndarray

from kpn.config import load_config
from kpn.data.loader import TrainingBatch, training_batches
from kpn.model.network import KPN
from kpn.train.cli import main
from kpn.train.loop import Plan, get_lr, start_trainee
from kpn.train.loss import kpn_loss
from kpn.train.monitor import Monitor
from kpn.train.validation import Validation
from kpn.train.visualize import GLYPH_HEIGHT, PAD, TEXT_SCALE, diverging_legend

# one tile a step, a validation and pictures at steps 0 and 2, no checkpoint before the end
TINY = (
    "data.batch=1",
    "data.validation_count=1",
    "train.steps=2",
    "train.log_every=1",
    "train.checkpoint_every=100",
    "train.image_every=2",
)
TRAINING_SCALARS = (
    "loss/train",
    "opt/lr",
    "opt/grad_norm",
    "opt/skipped_steps",
    "perf/steps_per_s",
)
LABEL_HEIGHT = GLYPH_HEIGHT * TEXT_SCALE + 2 * PAD  # a heading's strip
CELL = 4  # screen pixels per matrix entry in a heat map


def tags(multiplexer: EventMultiplexer, plugin: str) -> set[str]:
    """The tags one TensorBoard plugin (dashboard) sees, over all runs."""
    found: set[str] = set()
    for tag_to_content in multiplexer.PluginRunToTagToContent(plugin).values():
        found |= set(tag_to_content)
    return found


def test_monitor_writes_each_scalar_under_its_tag_at_its_step(
    tmp_path: Path, tiny_config: Callable[..., Path]
) -> None:
    config = load_config(tiny_config())
    run = tmp_path / "run"
    monitor = Monitor.open(run, config, KPN(config.model), step=0)
    monitor.training(3, loss=0.5, lr=0.01, grad_norm=2.0, skipped=1, seconds=0.25)
    monitor.validation(Validation(0.125, 20.0, 27.0, 0.5, 0.75), 4)
    monitor.close(4, finished=True)

    events = EventAccumulator(str(run))
    events.Reload()
    logged = {
        tag: [(e.step, pytest.approx(e.value)) for e in events.Scalars(tag)]
        for tag in events.Tags()["scalars"]
    }
    assert logged == {
        "loss/train": [(3, 0.5)],
        "opt/lr": [(3, 0.01)],
        "opt/grad_norm": [(3, 2.0)],
        "opt/skipped_steps": [(3, 1.0)],
        "perf/steps_per_s": [(3, 4.0)],  # 1 / 0.25 s
        "loss/val": [(4, 0.125)],
        "metrics/val_psnr": [(4, 27.0)],
        "metrics/val_psnr_gain": [(4, 7.0)],
        "metrics/val_ssim": [(4, 0.75)],
    }


def test_another_ranks_monitor_writes_nothing(
    tmp_path: Path, tiny_config: Callable[..., Path]
) -> None:
    config = load_config(tiny_config())
    model = KPN(config.model)
    batch = TrainingBatch(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16), torch.ones(1, 2))
    monitor = Monitor.open(tmp_path / "run", config, model, step=0, enabled=False)
    monitor.training(1, loss=0.5, lr=0.01, grad_norm=2.0, skipped=0, seconds=0.25)
    monitor.validation(Validation(0.125, 20.0, 27.0), 1)
    monitor.pictures(model, batch, 1)
    monitor.close(1, finished=True)
    assert not (tmp_path / "run").exists()


def test_weights_and_gradients_show_as_histograms_and_as_images(
    tmp_path: Path, tiny_config: Callable[..., Path]
) -> None:
    """An image and a histogram under one tag hide each other in TensorBoard's plugins."""
    config = tiny_config(*TINY)
    run = tmp_path / "run"
    assert main(["--config", str(config), "--out", str(run)]) == 0

    multiplexer = EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(tmp_path))
    multiplexer.Reload()
    histograms, images = tags(multiplexer, "histograms"), tags(multiplexer, "images")
    expected_histograms = {"weights/layer_0", "weights/layer_1", "gradients/layer_0"}
    assert expected_histograms <= histograms, histograms
    assert {"weight_maps/layer_0", "gradient_maps/layer_1", "alpha/level_0"} <= images, images
    assert not histograms & images
    # and the data is there, not only the tag
    [run_name] = multiplexer.Runs()
    events = multiplexer.Tensors(run_name, "weights/layer_0")
    assert [event.step for event in events] == [0, 2]  # the untrained model, and trained


def test_step_0_pictures_ssim_and_the_hparams_entry(
    tmp_path: Path, tiny_config: Callable[..., Path]
) -> None:
    """Every picture and validation scalar has a point for the untrained model; the run's
    HParams entry is in its own events (one run, no sub-folder), with the config values
    and the metrics the dashboard reads at their last value."""
    config = tiny_config(*TINY)
    assert main(["--config", str(config), "--out", str(tmp_path / "run"), "--seed", "3"]) == 0

    multiplexer = EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(tmp_path))
    multiplexer.Reload()
    [run_name] = multiplexer.Runs()
    pictures = ("images/0_noisy_denoised_reference", "alpha/level_1", "kernels/level_0")
    for tag in (*pictures, "weight_maps/layer_1"):
        assert [event.step for event in multiplexer.Tensors(run_name, tag)] == [0, 2], tag
    for tag in ("metrics/val_psnr", "metrics/val_ssim", "loss/val"):
        assert [event.step for event in multiplexer.Tensors(run_name, tag)] == [0, 2], tag
    ssim = [
        float(make_ndarray(e.tensor_proto))
        for e in multiplexer.Tensors(run_name, "metrics/val_ssim")
    ]
    assert all(-1 <= value <= 1 for value in ssim), ssim

    content = multiplexer.PluginRunToTagToContent("hparams")[run_name]
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    hparams = start.hparams
    assert hparams["model.width"].number_value == 32
    assert hparams["model.levels"].number_value == 2
    assert hparams["data.source"].string_value == "deadleaves"
    assert hparams["data.flip_x"].bool_value is True
    assert hparams["train.loss"].string_value == "smape"
    assert hparams["seed"].number_value == 3
    assert "train.log_every" not in hparams and "data.workers" not in hparams
    end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
    assert end.status == api_pb2.STATUS_SUCCESS

    # the dashboard's table: the run is a session, with the final validation's values
    [group] = session_groups(tmp_path, multiplexer)
    assert group.hparams["model.width"].number_value == 32
    final = {value.name.tag: value for value in group.metric_values}
    psnr = multiplexer.Tensors(run_name, "metrics/val_psnr")[-1]
    assert final["metrics/val_psnr"].training_step == 2
    assert final["metrics/val_psnr"].value == pytest.approx(float(make_ndarray(psnr.tensor_proto)))
    assert final["metrics/val_ssim"].value == pytest.approx(ssim[-1])


def session_groups(logdir: Path, multiplexer: EventMultiplexer) -> list[api_pb2.SessionGroup]:
    """What TensorBoard's HParams dashboard lists, asked of its backend as the page asks."""
    provider = MultiplexerDataProvider(multiplexer, str(logdir))
    plugin_context = TBContext(logdir=str(logdir), multiplexer=multiplexer, data_provider=provider)
    every_status = [api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS, api_pb2.STATUS_FAILURE]
    request = api_pb2.ListSessionGroupsRequest(
        start_index=0, slice_size=100, allowed_statuses=[*every_status, api_pb2.STATUS_RUNNING]
    )
    handler = list_session_groups.Handler(RequestContext(), Context(plugin_context), "", request)
    return list(handler.run().session_groups)


def test_training_scalars_start_at_the_untrained_model(
    tmp_path: Path, tiny_config: Callable[..., Path]
) -> None:
    """As validation's, the training curves have a point at step 0, and each point is
    measured on the weights of its step: step 0's loss is the untrained model's on the
    first batch, its learning rate the first step's."""
    path = tiny_config(*TINY)
    run = tmp_path / "run"
    assert main(["--config", str(path), "--out", str(run), "--seed", "3"]) == 0
    events = EventAccumulator(str(run))
    events.Reload()
    for tag in TRAINING_SCALARS:
        assert [event.step for event in events.Scalars(tag)] == [0, 1], tag
    first = {tag: events.Scalars(tag)[0].value for tag in TRAINING_SCALARS}

    config = load_config(path)
    cpu = torch.device("cpu")
    untrained = start_trainee(Plan(config, run), 3, cpu).model
    with closing(training_batches(config.data, 3, 0, 0, 1, cpu)) as batches:
        batch = next(batches)
    output = untrained(batch.noisy, batch.noise_ab)
    loss = kpn_loss(output, batch.reference, config.train.loss, config.train.loss_reduction)
    assert first["loss/train"] == pytest.approx(loss.item(), rel=1e-6)
    assert first["opt/lr"] == pytest.approx(get_lr(0, config.train))
    assert first["opt/grad_norm"] > 0 and first["perf/steps_per_s"] > 0
    assert first["opt/skipped_steps"] == 0


def logged_image(events: EventAccumulator, tag: str) -> torch.Tensor:
    """The picture logged under ``tag``, decoded from its PNG. ``-> [3,H,W]`` in [0,1]"""
    [event] = events.Images(tag)
    picture = Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB")
    return torch.from_numpy(np.array(picture)).permute(2, 0, 1).float() / 255


@pytest.mark.parametrize("kind", ["weight", "gradient"])
def test_each_layer_map_has_its_own_colour_scale(
    kind: str, tmp_path: Path, tiny_config: Callable[..., Path]
) -> None:
    """A layer whose values are 100 times smaller than the last layer's (early layers'
    gradients are) is not drawn white: every heat map spans the colour map from blue to
    red on its own symmetric scale, and its legend states that scale."""
    config = load_config(tiny_config())
    model = KPN(config.model)
    layers = list(model.mlp.layers)
    scales = [0.0027] * (len(layers) - 1) + [0.27]
    for layer, scale in zip(layers, scales, strict=True):
        ramp = torch.linspace(-scale, scale, layer.weight.numel()).reshape(layer.weight.shape)
        with torch.no_grad():
            layer.weight.copy_(ramp)
        layer.weight.grad = ramp.clone()
    batch = TrainingBatch(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16), torch.ones(1, 2))
    run = tmp_path / "run"
    monitor = Monitor.open(run, config, model, step=0)
    monitor.pictures(model, batch, 0)
    monitor.close(0, finished=True)

    events = EventAccumulator(str(run), size_guidance={"images": 0})
    events.Reload()
    for index, (layer, scale) in enumerate(zip(layers, scales, strict=True)):
        picture = logged_image(events, f"{kind}_maps/layer_{index}")
        rows, columns = layer.weight.shape
        heat = picture[:, LABEL_HEIGHT + 1 :, 1:][:, : rows * CELL, : columns * CELL]
        pixels = heat.flatten(1).T.tolist()
        assert [0.0, 0.0, 1.0] in pixels and [1.0, 0.0, 0.0] in pixels, (index, scale)
        legend = diverging_legend(scale, columns * CELL + 2)  # "-0.0027 ... +0.0027"
        shown = picture[:, -legend.shape[1] :, : legend.shape[2]]
        # PNG's 8 bits: TensorBoard truncates value * 255
        torch.testing.assert_close(shown, legend, atol=1 / 255, rtol=0)
