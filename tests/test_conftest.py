"""The shared checks of conftest.py refuse what they are there to refuse."""

from __future__ import annotations

from pathlib import Path

import pytest

from kpn.errors import KpnError

from conftest import assert_error_line, assert_one_line_error


def test_one_line_error_accepts_a_message_naming_its_path() -> None:
    path = Path("/tmp/x.pfm")
    with pytest.raises(KpnError) as caught:
        raise KpnError(f"{path}: not a PFM file")
    line = assert_one_line_error(caught, path, "not a PFM", starts=f"{path}: ")
    assert line == "/tmp/x.pfm: not a PFM file"
    assert assert_one_line_error(KpnError("a: b"), "a") == "a: b"
    assert assert_error_line("error: x.toml: bad\n", "x.toml") == "error: x.toml: bad"


@pytest.mark.parametrize(
    ("message", "names", "starts"),
    [
        ("x.pfm: bad\nsecond line", ("x.pfm",), ""),
        ("", (), ""),
        ("x.pfm: bad", ("y.pfm",), ""),
        ("Traceback (most recent call last): x.pfm", (), ""),
        ("bad: x.pfm", (), "x.pfm: "),
    ],
    ids=["two-lines", "empty", "path-missing", "traceback", "path-not-first"],
)
def test_one_line_error_refuses(message: str, names: tuple[str, ...], starts: str) -> None:
    with pytest.raises(AssertionError):
        assert_one_line_error(KpnError(message), *names, starts=starts)


@pytest.mark.parametrize(
    "err",
    ["x.toml: bad\n", "error: a\nerror: b\n", "error: a\n\n"],
    ids=["no-error-prefix", "two-errors", "blank-line-after"],
)
def test_error_line_refuses_other_output(err: str) -> None:
    with pytest.raises(AssertionError):
        assert_error_line(err)
