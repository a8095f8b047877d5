"""kpn.io.atomic: writes that a reader sees whole or not at all; stale temporary files go
with the next write; a failed write is one line naming the file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kpn.errors import KpnError
from kpn.io.atomic import _temp_path_for, atomic_output, atomic_write_bytes, stale_temp_paths

from conftest import assert_one_line_error


def test_temp_names_match_the_stale_pattern(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint.pt"
    temp = _temp_path_for(target)
    temp.write_bytes(b"half a checkpoint")
    assert stale_temp_paths(target) == [temp]


def test_next_write_removes_the_targets_stale_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint.pt"
    stale = [tmp_path / f".checkpoint.pt.{token}.tmp.pt" for token in ("0123abcd", "deadbeef")]
    others = [
        tmp_path / ".checkpoint.prev.pt.0123abcd.tmp.pt",  # another target's
        tmp_path / ".weights.lut.0123abcd.tmp.lut",
        tmp_path / ".checkpoint.pt.0123abcd.tmp.lut",  # not this target's extension
        tmp_path / ".checkpoint.pt.notahex!.tmp.pt",  # not a name kpn makes
        tmp_path / ".checkpoint.pt.swp",
        tmp_path / "checkpoint.pt.0123abcd.tmp.pt",  # not hidden
    ]
    for path in stale + others:
        path.write_bytes(b"x")

    atomic_write_bytes(target, b"new")

    assert target.read_bytes() == b"new"
    assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in others)
    assert stale_temp_paths(target) == []


def test_names_with_pattern_characters_are_taken_literally(tmp_path: Path) -> None:
    target = tmp_path / "a+b [1].pfm"
    stale = tmp_path / ".a+b [1].pfm.00ff00ff.tmp.pfm"
    lookalike = tmp_path / ".aab [1].pfm.00ff00ff.tmp.pfm"
    stale.write_bytes(b"x")
    lookalike.write_bytes(b"x")
    atomic_write_bytes(target, b"new")
    assert not stale.exists() and lookalike.exists()


def test_atomic_output_success_and_names(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    with atomic_output(path) as temp:
        assert temp.parent == tmp_path and temp.name.startswith(".x.png.")
        assert temp.suffix == ".png" and temp.exists() and not path.exists()
        temp.write_bytes(b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_atomic_output_body_failure(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    atomic_write_bytes(path, b"old")
    with pytest.raises(ZeroDivisionError), atomic_output(path) as temp:
        temp.write_bytes(b"half")
        _ = 1 / 0
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_atomic_output_os_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    path = tmp_path / "x.bin"
    atomic_write_bytes(path, b"old")

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, failing, fail)
    with pytest.raises(KpnError, match=r"cannot write \(Input/output error\)") as err:
        atomic_write_bytes(path, b"new")
    monkeypatch.undo()
    assert_one_line_error(err, starts=f"{path}: ")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_atomic_output_unwritable_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    for path in (tmp_path / "nope" / "a.bin", tmp_path / "file" / "a.bin"):
        with pytest.raises(KpnError, match="cannot write") as err:
            atomic_write_bytes(path, b"data")
        assert_one_line_error(err, starts=f"{path}: ")
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_an_interrupt_just_after_the_temp_file_is_made_removes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C raises KeyboardInterrupt between any two bytecodes: also right after os.open
    made the temporary file, before the body runs (the race test_interrupt.py met once)."""
    path = tmp_path / "x.bin"
    atomic_write_bytes(path, b"old")
    close = os.close

    def interrupted(fd: int) -> None:
        close(fd)
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "close", interrupted)
    with pytest.raises(KeyboardInterrupt), atomic_output(path):
        pytest.fail("the body must not run")
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]
