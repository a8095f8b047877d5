"""Atomic writes: the temporary files a killed writer leaves go with the next write."""

from __future__ import annotations

from pathlib import Path

from kpn.io.atomic import _temp_path_for, atomic_write_bytes, stale_temp_paths


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
