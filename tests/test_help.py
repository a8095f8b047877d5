"""The command lines' ``--help`` is plain words, and a mistyped option gets a suggestion."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator

import pytest

import kpn.__main__
import kpn.infer
import kpn.train
from kpn.cli import plain

PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "train.py": kpn.train.build_parser,
    "kpn-infer": kpn.infer.build_parser,
    "python -m kpn": kpn.__main__.build_parser,
}
MARKUP = ("``", ":func:", ":mod:", ":class:", ":meth:")


def every_parser(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and its subcommands' parsers, at every depth."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from every_parser(sub)


def test_plain_turns_markup_into_words() -> None:
    text = "``python infer.py`` / ``kpn-infer``: see :func:`kpn.export.config_for_lut`."
    assert plain(text) == "python infer.py / kpn-infer: see kpn.export.config_for_lut."


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_help_is_plain_words(name: str) -> None:
    for parser in every_parser(PARSERS[name]()):
        text = parser.format_help()
        for markup in MARKUP:
            assert markup not in text, (parser.prog, markup, text)


def test_infer_help_names_the_program_plainly() -> None:
    text = kpn.infer.build_parser().format_help()
    assert "python infer.py / kpn-infer: denoise photos with trained weights." in text


def last_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


def test_train_suggests_the_option_meant(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        kpn.train.main(["--confg", "x.toml"])
    assert exit_info.value.code == 2
    line = last_error_line(capsys)
    assert line.startswith("train.py: error: unrecognized arguments: --confg")
    assert line.endswith("--confg: did you mean --config?")


def test_infer_suggests_the_option_meant(capsys: pytest.CaptureFixture[str]) -> None:
    assert kpn.infer.main(["photo.pfm", "--wieghts", "run"]) == 2
    assert last_error_line(capsys).endswith("--wieghts: did you mean --weights?")


def test_kpn_suggests_the_subcommand_option_meant(capsys: pytest.CaptureFixture[str]) -> None:
    """The option belongs to the subcommand; the subcommand's required -o is missing too."""
    with pytest.raises(SystemExit) as exit_info:
        kpn.__main__.main(["export", "run", "--outptu", "x.lut"])
    assert exit_info.value.code == 2
    line = last_error_line(capsys)
    assert "required: -o/--output" in line and line.endswith("did you mean --output?")
    with pytest.raises(SystemExit):
        kpn.__main__.main(["summary", "--config", "x.toml", "--szie", "8x8"])
    assert last_error_line(capsys).endswith("--szie: did you mean --size?")


def test_no_suggestion_for_values_or_accepted_abbreviations(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        kpn.train.main(["--seed", "-3", "--dev", "cpu", "stray"])  # --dev: --device
    line = last_error_line(capsys)
    assert line == "train.py: error: unrecognized arguments: stray"
