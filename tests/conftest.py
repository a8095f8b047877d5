"""What the test modules share: one thread for small tensors, tiny training runs and the
checks of their results, the check of a one-line error, and docs/design.md §2's star taps.

Test modules import the plain helpers and constants (``from conftest import ...``:
pyproject's ``pythonpath`` puts tests/ on the path) and take the fixtures as arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from kpn.io.checkpoint import load_checkpoint

# design §2's 15 star taps (dx, dy) in vkdt's order, written out by hand as design §2 lists them
# them, so that a wrong order in kpn.model.features.STAR15_TAPS is caught, not copied.
SPEC_STAR15_TAPS = (
    (0, -2),
    (-2, -1), (-1, -1), (0, -1), (1, -1), (2, -1),
    (-1, 0), (0, 0), (1, 0),
    (-2, 1), (-1, 1), (0, 1), (1, 1), (2, 1),
    (0, 2),
)  # fmt: skip
SPEC_STAR15_CENTRE = 7  # (0, 0): after (0,-2), the five taps at dy=-1 and (-1,0)


def assert_one_line_error(
    error: str | BaseException | pytest.ExceptionInfo[BaseException],
    *names: object,
    starts: str = "",
) -> str:
    """Check that ``error`` is one line for a user: not empty, no line break (a printed
    line's final newline aside), no traceback, beginning with ``starts`` and naming each
    of ``names`` (paths, keys, values; compared as ``str``). Returns the line.

    ``error``: the message, the exception, or what ``pytest.raises`` caught.
    """
    if isinstance(error, pytest.ExceptionInfo):
        error = error.value
    text = str(error)
    line = text.removesuffix("\n") if isinstance(error, str) else text
    assert line.strip(), f"empty message: {error!r}"
    assert "\n" not in line, text
    assert "Traceback" not in line, text
    assert line.startswith(starts), (starts, line)
    for name in names:
        assert str(name) in line, (str(name), line)
    return line


def assert_error_line(err: str, *names: object) -> str:
    """What a command printed to stderr: one line ``error: ...`` naming ``names``
    (:func:`assert_one_line_error`). Returns the line."""
    return assert_one_line_error(err, *names, starts="error: ")


# A training run of seconds: 2 levels, W 32, one hidden layer, 16x16 tiles. Values are
# TOML text; tiny_config's "section.key=value" settings change or add to them.
TINY_RUN: dict[str, dict[str, str]] = {
    "model": {"levels": "2", "width": "32", "n_hidden": "1"},
    "data": {
        "tile": "16",
        "batch": "2",
        "workers": "0",
        "validation_count": "2",
        "validation_tile": "16",
    },
    "train": {
        "steps": "4",
        "lr": "0.003",
        "beta1": "0.9",
        "log_every": "2",
        "val_every": "2",
        "checkpoint_every": "3",
        "image_every": "4",
    },
}


def tiny_run_toml(*settings: str) -> str:
    """TINY_RUN as a config file, each ``"section.key=value"`` of ``settings`` (the value
    TOML text, as train.py's ``--set``) replacing or adding to it."""
    tables = {section: dict(table) for section, table in TINY_RUN.items()}
    for setting in settings:
        key, equals, value = setting.partition("=")
        section, dot, name = key.partition(".")
        if not (equals and dot and name):
            raise ValueError(f"{setting!r}: expected section.key=value")
        tables.setdefault(section, {})[name] = value
    return "\n".join(
        f"[{section}]\n" + "".join(f"{name} = {value}\n" for name, value in table.items())
        for section, table in tables.items()
    )


@pytest.fixture
def tiny_config(tmp_path: Path) -> Callable[..., Path]:
    """``tiny_config("train.steps=10", ...)`` writes ``tmp_path/tiny.toml``
    (:func:`tiny_run_toml`) and returns its path."""

    def write(*settings: str) -> Path:
        path = tmp_path / "tiny.toml"
        path.write_text(tiny_run_toml(*settings), encoding="utf-8")
        return path

    return write


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Small images: a second thread only adds barriers (slow on a shared machine).
    A module takes it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def error_line(capsys: pytest.CaptureFixture[str]) -> Callable[[], str]:
    """``error_line()``: what the command printed to stderr since the last read, checked
    to be one line ``error: ...`` without a traceback, and that line."""

    def read() -> str:
        return assert_error_line(capsys.readouterr().err)

    return read


@pytest.fixture
def same_weights() -> Callable[[Path, Path], None]:
    """``same_weights(a, b)``: assert that checkpoints ``a`` and ``b`` hold the same model
    weights, bit for bit."""

    def check(a: Path, b: Path) -> None:
        first, second = load_checkpoint(a).model, load_checkpoint(b).model
        assert first.keys() == second.keys()
        for name in first:
            assert torch.equal(first[name], second[name]), name

    return check
