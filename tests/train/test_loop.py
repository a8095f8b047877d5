"""Training: run directory, exact resume, skipped steps, DDP, overrides, SIGINT, bad input."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import kpn.model.mlp
import kpn.train.loop
from kpn.config import load_config
from kpn.io.checkpoint import load_checkpoint
from kpn.model.mlp import MLP
from kpn.train.cli import build_parser, main, plan_run
from kpn.train.loop import Plan, get_lr, train
from kpn.train.monitor import Progress
from kpn.train.validation import Validation
from kpn.vkdt.lut import read_lut
from kpn.vkdt.lut_model import load_lut

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tiny(tiny_config: Callable[..., Path]) -> Path:
    return tiny_config()


def test_run_directory_has_every_part(tiny: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["--config", str(tiny), "--out", str(run)]) == 0

    assert load_config(run / "config.toml") == load_config(tiny)
    state = load_checkpoint(run / "checkpoint.pt")
    assert state.step == 4 and state.skipped_steps == 0
    assert state.samples_seen == 4 * 2  # steps * batch
    # weights.lut holds the trained weights (to float16) with kpn-t's trailer
    lut = read_lut(run / "weights.lut")
    assert (lut.width, lut.n_hidden) == (32, 1)
    assert lut.trailer is not None and lut.trailer.loss == "smape"
    mlp = MLP(32, 32, 1, "leaky_relu")
    load_lut(mlp, state.config.model, run / "weights.lut")
    for loaded, trained in zip(mlp.weights, state.model.values(), strict=True):
        torch.testing.assert_close(loaded, trained.half().float())

    events = EventAccumulator(str(run), size_guidance={"images": 0, "histograms": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {
        "loss/train",
        "loss/val",
        "metrics/val_psnr",
        "metrics/val_psnr_gain",
        "opt/lr",
        "opt/grad_norm",
        "opt/skipped_steps",
        "perf/steps_per_s",
    } <= scalars
    images = set(events.Tags()["images"])
    assert "images/0_noisy_denoised_reference" in images
    assert {"alpha/level_0", "kernels/level_0", "weight_maps/layer_0"} <= images
    assert "gradient_maps/layer_0" in images
    assert "weights/layer_1" in set(events.Tags()["histograms"])
    # each on the weights it was measured on: the untrained model's (0) to the last step's
    assert [e.step for e in events.Scalars("loss/train")] == [0, 2, 3]


def test_final_line_reports_validation_psnr(tiny: Path, tmp_path: Path, capsys) -> None:
    assert main(["--config", str(tiny), "--out", str(tmp_path / "run")]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("validation PSNR noisy ") and " dB -> denoised " in last


def test_resume_continues_exactly(
    tmp_path: Path, tiny_config: Callable[..., Path], same_weights: Callable[[Path, Path], None]
) -> None:
    """10 steps + resume + 10 steps == 20 steps, bit for bit (CPU)."""
    config = tiny_config("train.steps=10")
    assert main(["--config", str(config), "--out", str(tmp_path / "a")]) == 0
    assert main(["--resume", str(tmp_path / "a"), "--set", "train.steps=20"]) == 0
    assert (
        main(["--config", str(config), "--set", "train.steps=20", "--out", str(tmp_path / "b")])
        == 0
    )
    same_weights(tmp_path / "a" / "checkpoint.pt", tmp_path / "b" / "checkpoint.pt")
    a, b = (
        load_checkpoint(tmp_path / "a" / "checkpoint.pt"),
        load_checkpoint(tmp_path / "b" / "checkpoint.pt"),
    )
    assert a.step == b.step == 20 and a.samples_seen == b.samples_seen == 40
    for sa, sb in zip(a.optimizer["state"].values(), b.optimizer["state"].values(), strict=True):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"])


def test_resume_from_checkpoint_file_with_vkdt_optimizer(
    tmp_path: Path, tiny_config: Callable[..., Path], same_weights: Callable[[Path, Path], None]
) -> None:
    vkdt = ("train.vkdt_bias_correction=true", "train.vkdt_f16_state=true")
    config = tiny_config("train.steps=3", *vkdt, "train.vkdt_grad_clip=true")
    assert main(["--config", str(config), "--out", str(tmp_path / "a")]) == 0
    ckpt = tmp_path / "a" / "checkpoint.pt"
    assert main(["--resume", str(ckpt), "--set", "train.steps=6"]) == 0
    assert (
        main(["--config", str(config), "--set", "train.steps=6", "--out", str(tmp_path / "b")]) == 0
    )
    same_weights(tmp_path / "a" / "checkpoint.pt", tmp_path / "b" / "checkpoint.pt")


def test_non_finite_step_is_skipped(tiny: Path, tmp_path: Path, monkeypatch) -> None:
    real_loss = kpn.train.loop.kpn_loss
    calls = {"training": 0}

    def loss_with_a_nan(output, reference, *how):
        value = real_loss(output, reference, *how)
        if output.requires_grad:
            calls["training"] += 1
            if calls["training"] == 3:
                return value * math.nan
        return value

    monkeypatch.setattr(kpn.train.loop, "kpn_loss", loss_with_a_nan)
    result = train(Plan(load_config(tiny), tmp_path / "run"))
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state.step == 4 and state.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    # the third step (from step 2's weights) was skipped
    assert [e.value for e in events.Scalars("opt/skipped_steps")] == [0.0, 1.0, 1.0]


def test_skipped_step_changes_nothing(tiny: Path, tmp_path: Path, monkeypatch) -> None:
    """A run whose every step is NaN ends with its initial weights."""
    monkeypatch.setattr(
        kpn.train.loop,
        "kpn_loss",
        lambda o, r, *how: (o - r).sum() * (math.nan if o.requires_grad else 1),
    )
    trained = train(Plan(load_config(tiny), tmp_path / "run")).model
    torch.manual_seed(0)
    fresh = kpn.train.loop.KPN(load_config(tiny).model)
    for a, b in zip(trained.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b)


def test_lr_schedules() -> None:
    train_config = load_config(ROOT / "configs" / "design.toml").train
    from dataclasses import replace

    warm = replace(
        train_config, lr=1.0, warmup_steps=4, steps=14, lr_schedule="cosine", min_lr_ratio=0.1
    )
    assert [get_lr(s, warm) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert get_lr(4, warm) == pytest.approx(1.0)
    assert get_lr(9, warm) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway: cos = 0
    assert get_lr(14, warm) == pytest.approx(0.1)
    constant = replace(train_config, lr=0.5, lr_schedule="constant", warmup_steps=0)
    assert get_lr(0, constant) == get_lr(10_000, constant) == 0.5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_worker(rank: int, world: int, port: int, argv: list[str], out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    result = train(plan_run(build_parser().parse_args(argv)))
    torch.save(
        {"model": result.model.state_dict(), "initial": result.initial, "final": result.final},
        f"{out}/rank{rank}.pt",
    )


@pytest.mark.slow
def test_ddp_two_gloo_processes_stay_identical(
    tmp_path: Path, tiny_config: Callable[..., Path]
) -> None:
    config = tiny_config("train.steps=12")
    argv = ["--config", str(config), "--out", str(tmp_path / "run")]
    mp.spawn(ddp_worker, args=(2, free_port(), argv, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    for name, value in ranks[0]["model"].items():
        assert torch.equal(value, ranks[1]["model"][name]), name
    assert ranks[1]["final"] is None  # only rank 0 validates and writes
    assert ranks[0]["final"].loss < ranks[0]["initial"].loss
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state.samples_seen == 12 * 2 * 2  # each rank draws its own tiles


def test_set_overrides_and_their_errors(
    tiny: Path, tmp_path: Path, capsys, error_line: Callable[[], str]
) -> None:
    run = tmp_path / "run"
    assert (
        main(
            [
                "--config",
                str(tiny),
                "--set",
                "train.steps=2",
                "--set",
                "model.width=64",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    config = load_config(run / "config.toml")
    assert config.train.steps == 2 and config.model.width == 64
    capsys.readouterr()
    for bad in ("model.nope=1", "train.steps=abc", "steps", "model.width=20"):
        assert main(["--config", str(tiny), "--set", bad, "--out", str(tmp_path / "x")]) == 2
        line = error_line()
        assert "steps" in line or "nope" in line or "width" in line, line
        assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.slow
def test_sigint_writes_weights_and_checkpoint(
    tmp_path: Path, workers: int, tiny_config: Callable[..., Path]
) -> None:
    """Ctrl-C reaches the whole process group, loader workers included."""
    config = tiny_config("train.steps=100_000")
    run = tmp_path / "run"
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "--config",
            str(config),
            "--out",
            str(run),
            "--set",
            f"data.workers={workers}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        start_new_session=True,
    )
    assert process.stdout is not None
    for line in process.stdout:  # the first progress line: training is under way
        if line.startswith("step "):
            break
    os.killpg(process.pid, signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    assert "SIGINT: stopped at step" in output
    # a worker's file-descriptor sharing thread may report its connection closed under it
    # (torch's, harmless); nothing of ours may fail
    assert "Interrupted" not in output and "RuntimeError" not in output, output
    if workers == 0:
        assert "Traceback" not in output
    state = load_checkpoint(run / "checkpoint.pt")
    assert 0 < state.step < 100_000
    assert read_lut(run / "weights.lut").width == 32


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint(
    tmp_path: Path, tiny_config: Callable[..., Path]
) -> None:
    config = tiny_config("train.steps=100_000")
    run = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "--config", str(config), "--out", str(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 120
    while not (run / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    process.kill()  # SIGKILL: no handler runs
    process.wait()
    step = load_checkpoint(run / "checkpoint.pt").step
    assert step % 3 == 0 and step > 0  # checkpoint_every = 3
    assert main(["--resume", str(run), "--set", f"train.steps={step + 2}"]) == 0
    assert load_checkpoint(run / "checkpoint.pt").step == step + 2


def test_refuses_bad_input_before_writing(
    tiny: Path, tmp_path: Path, capsys, error_line: Callable[[], str]
) -> None:
    out = tmp_path / "out"
    bad_key = tmp_path / "bad_key.toml"
    bad_key.write_text(tiny.read_text().replace("n_hidden = 1", "n_hidden = 1\ncolour = 2"))
    assert main(["--config", str(bad_key), "--out", str(out)]) == 2
    assert "model.colour" in error_line()

    missing = ["--set", "data.source=clean", "--set", f"data.reference_dir={tmp_path / 'nope'}"]
    assert main(["--config", str(tiny), *missing, "--out", str(out)]) == 2
    assert "nope" in error_line()
    assert not out.exists()

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["--config", str(tiny), "--out", str(blocker / "run")]) == 2
    error_line()

    assert main(["--config", str(tiny), "--out", str(out)]) == 0
    capsys.readouterr()
    before = (out / "checkpoint.pt").read_bytes()
    assert main(["--config", str(tiny), "--out", str(out)]) == 2
    assert "exists" in error_line()
    assert (out / "checkpoint.pt").read_bytes() == before

    wider = tmp_path / "wider.toml"
    wider.write_text(tiny.read_text().replace("width = 32", "width = 64"), encoding="utf-8")
    assert main(["--config", str(wider), "--resume", str(out)]) == 2
    assert "architecture" in error_line()
    assert (out / "checkpoint.pt").read_bytes() == before

    assert main(["--resume", str(tmp_path / "no_run")]) == 2
    assert "not found" in error_line()
    assert main([]) == 2
    error_line()


# --- progress display ---------------------------------------------------------------------
def test_progress_lines_come_early_and_date_their_validation(capsys) -> None:
    """Plain lines (not a terminal): after the first step, every ``every``, after the last;
    a validation says that it runs, and its gain shows the step it was measured at."""
    progress = Progress(total=10, start=0, enabled=True, every=5)
    progress.validating(3, 0)
    progress.validated(Validation(0.1, 20.0, 27.25), 0)
    for step in range(1, 6):
        progress.update(step, 0.5)
    progress.validating(1, 6)
    progress.validated(Validation(0.1, 20.0, 28.5), 6)
    progress.update(10, 0.25)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "validating 3 tiles at step 0..."
    assert lines[1].startswith("step 1/10  loss 0.5  val +7.25 dB @0  ")
    assert lines[2].startswith("step 5/10  loss 0.5  val +7.25 dB @0  ")
    assert lines[3] == "validating 1 tile at step 6..."
    assert lines[4].startswith("step 10/10  loss 0.25  val +8.50 dB @6  ")
    assert len(lines) == 5
    quiet = Progress(total=10, start=0, enabled=False, every=5)  # another rank's
    quiet.validating(3, 0)
    quiet.validated(None, 0)
    quiet.update(1, 0.5)
    assert capsys.readouterr().out == ""


def test_training_shows_progress_after_its_first_step(tiny: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["--config", str(tiny), "--out", str(run), "--set", "train.log_every=3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    progress = [line for line in lines if line.startswith(("step ", "validating "))]
    assert progress[0] == "validating 2 tiles at step 0..."  # the untrained model
    assert progress[1].startswith("step 1/4  loss ") and " dB @0  " in progress[1]
    assert progress[2] == "validating 2 tiles at step 2..."
    assert progress[3].startswith("step 3/4  loss ") and " dB @2  " in progress[3]
    assert progress[4] == "validating 2 tiles at step 4..."
    assert progress[5].startswith("step 4/4  loss ") and " dB @4  " in progress[5]
    assert "; SSIM " in lines[-1]


def test_vkdt_head_layout_trains_32_live_units(
    tmp_path: Path, tiny_config: Callable[..., Path]
) -> None:
    """model.vkdt_head_layout (W 64): training runs, with vkdt's clipping (which reads the
    matrices' gradients) and float16 state too, and the second matrix's columns 32.. stay
    0 under L2 decay."""
    config = tiny_config(
        "train.steps=3", "model.width=64", "model.vkdt_head_layout=true",
        "train.vkdt_grad_clip=true", "train.vkdt_f16_state=true", "train.l2=0.01",
    )  # fmt: skip
    assert main(["--config", str(config), "--out", str(tmp_path / "a")]) == 0
    first = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    hidden = first.model["mlp.layers.1.weight"]
    assert hidden.shape == (16, 64)  # n_hidden = 1: the second matrix is W_out
    assert torch.equal(hidden[:, 32:], torch.zeros(16, 32))
    assert hidden[:, :32].abs().min() > 0


def test_bf16_training_trains_the_float32_model_with_bf16_products(
    tmp_path: Path, tiny_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """train.precision = "bf16": the network runs its hidden products in bfloat16 while
    training (seen by the MLP), the run's config and checkpoint keep the float32 model,
    and the weights differ from a float32 run's but not by much after a few steps."""
    seen: list[str] = []
    hidden = kpn.model.mlp.mlp_hidden

    def spy(inputs, weights, activation, precision, matmul="coopmat"):  # type: ignore[no-untyped-def]
        seen.append(precision)
        return hidden(inputs, weights, activation, precision, matmul)

    monkeypatch.setattr(kpn.model.mlp, "mlp_hidden", spy)
    runs = {}
    for precision in ("model", "bf16"):
        seen.clear()
        config = tiny_config("train.steps=3", f'train.precision="{precision}"')
        run = tmp_path / precision
        assert main(["--config", str(config), "--out", str(run)]) == 0
        runs[precision] = load_checkpoint(run / "checkpoint.pt")
        assert set(seen) == {"fp32" if precision == "model" else "bf16"}
        assert runs[precision].config.model.precision == "fp32"
        assert load_config(run / "config.toml").train.precision == precision
    for name, exact in runs["model"].model.items():
        bf16 = runs["bf16"].model[name]
        assert not torch.equal(bf16, exact), name
        torch.testing.assert_close(bf16, exact, rtol=0.05, atol=0.02)


def test_bf16_training_needs_a_float32_model(tiny_config: Callable[..., Path], capsys) -> None:
    config = tiny_config('train.precision="bf16"', 'model.precision="vkdt-f16"')
    assert main(["--config", str(config), "--out", str(config.parent / "run")]) == 2
    err = capsys.readouterr().err
    assert "train.precision = 'bf16' trains a float32 model, not model.precision" in err
    assert not (config.parent / "run").exists()


@pytest.mark.parametrize("switch", [False, True])
def test_training_loss_takes_vkdt_smape_grad(
    tiny_config: Callable[..., Path], tmp_path: Path, monkeypatch, switch: bool
) -> None:
    """train.vkdt_smape_grad reaches the training loss (validation has no gradient)."""
    real_loss = kpn.train.loop.kpn_loss
    seen = []

    def recording(output, reference, *how):
        seen.append(how)
        return real_loss(output, reference, *how)

    monkeypatch.setattr(kpn.train.loop, "kpn_loss", recording)
    config = tiny_config("train.loss='smape'", f"train.vkdt_smape_grad={str(switch).lower()}")
    train(Plan(load_config(config), tmp_path / "run"))
    assert seen and all(how[-1] is switch and how[0] == "smape" for how in seen)
