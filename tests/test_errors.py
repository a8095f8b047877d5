"""kpn.errors: parameters named as keywords or as flags, and the words for file problems."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from kpn.errors import (
    KpnError,
    ParameterError,
    make_folder,
    mention,
    reading,
    require_folder,
    writing,
)

from conftest import assert_one_line_error

FLAGS = {"tile": "--tile", "precision": "--precision", "path": "--weights"}


def test_parameter_error_as_keyword_and_as_flag() -> None:
    error = ParameterError(
        "tile", 5, f"must be >= 8 (or add {mention('precision', 'bf16')}; {mention('sure')})"
    )
    assert str(error) == "tile=5: must be >= 8 (or add precision='bf16'; sure)"
    assert error.worded(FLAGS) == "--tile 5: must be >= 8 (or add --precision bf16; sure)"
    assert (error.parameter, error.value) == ("tile", 5)


def test_paths_are_named_by_their_text() -> None:
    error = ParameterError("path", Path("runs/x"), "no such weights file or run directory")
    assert str(error) == "path='runs/x': no such weights file or run directory"
    assert error.worded(FLAGS) == "--weights runs/x: no such weights file or run directory"


def test_plain_errors_and_unmapped_parameters_are_unchanged() -> None:
    assert KpnError("a.pfm: truncated").worded(FLAGS) == "a.pfm: truncated"
    assert ParameterError("device", "gpu", "x").worded(FLAGS) == "device='gpu': x"
    # a user's text that merely looks like a mention stays as it is
    assert str(KpnError("x.toml: key {tile} and {tile=5}")) == "x.toml: key {tile} and {tile=5}"


def test_parameter_error_pickles_whole() -> None:
    error = pickle.loads(pickle.dumps(ParameterError("tile", 5, "too small")))
    assert isinstance(error, ParameterError) and str(error) == "tile=5: too small"


def test_reading_words(tmp_path: Path) -> None:
    for path, words in [
        (tmp_path / "absent.txt", "no such file"),
        (tmp_path, "is a directory, not a file"),
    ]:
        with pytest.raises(KpnError) as err, reading(path):
            Path(path).read_bytes()
        assert_one_line_error(err, words, starts=f"{path}: ")
    binary = tmp_path / "b.txt"
    binary.write_bytes(b"ok\xff")
    with pytest.raises(KpnError) as err, reading(binary):
        binary.read_text(encoding="utf-8")
    assert_one_line_error(err, "not a text file (byte 2 is not UTF-8)", starts=f"{binary}: ")


def test_writing_and_folder_words(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    target = tmp_path / "file" / "a.bin"
    with pytest.raises(KpnError) as err, writing(target):
        target.write_bytes(b"data")
    assert_one_line_error(err, "cannot write (Not a directory)", starts=f"{target}: ")
    with pytest.raises(KpnError) as err:
        make_folder(tmp_path / "file" / "sub")
    assert_one_line_error(err, "cannot create (", starts=f"{tmp_path / 'file' / 'sub'}: ")
    with pytest.raises(KpnError) as err:
        make_folder(tmp_path / "file")
    assert_one_line_error(err, "is a file, not a folder")
    assert make_folder(tmp_path / "new" / "deep").is_dir()
    with pytest.raises(KpnError) as err:
        require_folder(tmp_path / "absent", "data.nprof_dir", "make one")
    assert_one_line_error(
        err, starts=f"{tmp_path / 'absent'}: no such folder (data.nprof_dir); make one"
    )
    assert require_folder(tmp_path) == tmp_path
