"""Ctrl-C and SIGTERM in kpn-infer (issue 22): one line naming the file that was not
written and the files that were, exit status 128 + the signal, no partial output or
temporary file, the outputs written before kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from kpn.infer.denoiser import Denoiser
from kpn.infer.files import Job
from kpn.infer.interrupt import Progress, Stopped, stops_raise
from kpn.io.pfm import read_pfm, write_pfm

from infer_shared import NOISE, ROOT, leftovers, noisy_image, run

pytestmark = pytest.mark.usefixtures("one_thread")  # small images


def inputs(folder: Path, count: int) -> list[Path]:
    folder.mkdir()
    paths = [folder / f"photo{index}.pfm" for index in range(count)]
    for index, path in enumerate(paths):
        write_pfm(path, noisy_image(24, 24, seed=index))
    return paths


def test_ctrl_c_on_the_second_file_keeps_the_first_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sources = inputs(tmp_path / "in", 3)
    out = tmp_path / "out"
    denoise = Denoiser.__call__
    calls = []

    def interrupted_second(self: Denoiser, image: np.ndarray, *args: object) -> np.ndarray:
        calls.append(image.shape)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return denoise(self, image, *args)

    monkeypatch.setattr(Denoiser, "__call__", interrupted_second)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    code, _, err = run(capsys, *sources, "--out-dir", out, *NOISE)
    assert code == 130
    assert "Traceback" not in err
    assert err.splitlines() == [
        f"interrupted: {sources[1]} -> {out / 'photo1.pfm'} not written; "
        f"1 of 3 written ({out / 'photo0.pfm'})"
    ]
    assert len(calls) == 2  # the third file was not started
    assert sorted(p.name for p in out.iterdir()) == ["photo0.pfm"]
    assert np.isfinite(read_pfm(out / "photo0.pfm")).all()
    assert leftovers(out) == []
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers


def test_ctrl_c_before_any_file_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("kpn.infer.cli.load_weights", interrupted)
    source = inputs(tmp_path / "in", 1)[0]
    code, _, err = run(capsys, source, *NOISE)
    assert (code, err) == (130, "interrupted: nothing written\n")


def job(folder: Path, index: int) -> Job:
    return Job(folder / f"in{index}.pfm", folder / f"out{index}.pfm")


def test_a_signal_after_the_rename_counts_the_file_as_written(tmp_path: Path) -> None:
    done = Progress(total=3)
    done.start(job(tmp_path, 0))
    (tmp_path / "out0.pfm").write_bytes(b"written")
    done.finish(written=True)
    done.start(job(tmp_path, 1))
    (tmp_path / "out1.pfm").write_bytes(b"renamed into place, then the signal")
    line = done.interrupted_line(Stopped(signal.SIGTERM))
    outputs = f"{tmp_path / 'out0.pfm'}, {tmp_path / 'out1.pfm'}"
    assert line == f"interrupted (SIGTERM): 2 of 3 written ({outputs})"


def test_an_output_that_existed_before_is_not_counted_unless_replaced(tmp_path: Path) -> None:
    (tmp_path / "out0.pfm").write_bytes(b"an earlier run's")
    done = Progress(total=1)
    done.start(job(tmp_path, 0))
    line = done.interrupted_line(KeyboardInterrupt())
    unfinished = f"{tmp_path / 'in0.pfm'} -> {tmp_path / 'out0.pfm'}"
    assert line == f"interrupted: {unfinished} not written; 0 of 1 written"


def test_a_long_list_of_written_files_names_the_first_and_the_last(tmp_path: Path) -> None:
    done = Progress(total=9)
    for index in range(6):
        done.start(job(tmp_path, index))
        done.finish(written=True)
    line = done.interrupted_line(KeyboardInterrupt())
    first, last = tmp_path / "out0.pfm", tmp_path / "out5.pfm"
    assert line == f"interrupted: 6 of 9 written ({first}, ..., {last})"


def test_stops_raise_turns_sigterm_into_stopped_and_restores_the_handlers() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Stopped) as caught, stops_raise():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler runs at the next bytecode: never reached
    assert caught.value.signum == signal.SIGTERM
    assert isinstance(caught.value, KeyboardInterrupt)
    assert signal.getsignal(signal.SIGTERM) is before


def test_stops_raise_leaves_an_ignored_signal_ignored() -> None:
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with stops_raise():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    finally:
        signal.signal(signal.SIGINT, before)


# infer.py's kpn_infer(), each output held 1 s in its temporary file before the rename: a signal
# sent once the first output and the second's temporary file exist lands mid-write.
SLOW_WRITES = textwrap.dedent(
    """
    import sys, time
    import kpn.infer.cli as cli

    write_output = cli.write_output

    def slow(*args, **kwargs):
        write_output(*args, **kwargs)
        time.sleep(1.0)

    cli.write_output = slow
    sys.argv[0] = "infer.py"
    from kpn.cli import kpn_infer
    kpn_infer()
    """
)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_write_removes_the_partial_output(tmp_path: Path, stop: int) -> None:
    sources = inputs(tmp_path / "in", 4)
    out = tmp_path / "out"
    argv = [str(path) for path in sources] + ["--out-dir", str(out), *NOISE, "--tile", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITES, *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not ((out / "photo0.pfm").exists() and leftovers(out)):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the first output never appeared"
            time.sleep(0.01)
        process.send_signal(stop)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 128 + stop
    name = "" if stop == signal.SIGINT else " (SIGTERM)"
    assert err.splitlines() == [
        f"interrupted{name}: {sources[1]} -> {out / 'photo1.pfm'} not written; "
        f"1 of 4 written ({out / 'photo0.pfm'})"
    ]
    assert sorted(path.name for path in out.iterdir()) == ["photo0.pfm"]  # no temporary file
    written = read_pfm(out / "photo0.pfm")
    assert written.shape == (24, 24, 3) and np.isfinite(written).all()
