"""The command lines' ``--help`` is plain words, and a mistyped option gets a suggestion."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator

import pytest

import kpn.__main__
import kpn.infer.cli
import kpn.train.cli
from kpn.cli import plain

PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "train.py": kpn.train.cli.build_parser,
    "kpn-infer": kpn.infer.cli.build_parser,
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
    text = "``python infer.py`` / ``kpn-infer``: see :func:`kpn.vkdt.lut_model.config_for_lut`."
    assert plain(text) == "python infer.py / kpn-infer: see kpn.vkdt.lut_model.config_for_lut."


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_help_is_plain_words(name: str) -> None:
    for parser in every_parser(PARSERS[name]()):
        text = parser.format_help()
        for markup in MARKUP:
            assert markup not in text, (parser.prog, markup, text)


def test_infer_help_names_the_program_plainly() -> None:
    text = kpn.infer.cli.build_parser().format_help()
    assert "python infer.py / kpn-infer: denoise photos with trained weights." in text


def last_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


def test_train_suggests_the_option_meant(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        kpn.train.cli.main(["--confg", "x.toml"])
    assert exit_info.value.code == 2
    line = last_error_line(capsys)
    assert line.startswith("train.py: error: unrecognized arguments: --confg")
    assert line.endswith("--confg: did you mean --config?")


def test_infer_suggests_the_option_meant(capsys: pytest.CaptureFixture[str]) -> None:
    assert kpn.infer.cli.main(["photo.pfm", "--wieghts", "run"]) == 2
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


def test_no_suggestion_for_values(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        kpn.train.cli.main(["--seed", "-3", "--device", "cpu", "stray"])
    line = last_error_line(capsys)
    assert line == "train.py: error: unrecognized arguments: stray"


def test_short_option_with_its_value_attached_is_no_typo(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """-oFILE is -o FILE; the error here is the missing weights file, not a hint."""
    assert kpn.infer.cli.main(["photo.pfm", "-ox.pfm", "--weights", "/nowhere"]) == 2
    assert "did you mean" not in last_error_line(capsys)


@pytest.mark.parametrize(
    ("name", "main", "argv", "meant"),
    [
        ("kpn-infer", kpn.infer.cli.main, ["photo.pfm", "--weight", "run"], "--weights"),
        ("kpn-infer", kpn.infer.cli.main, ["photo.pfm", "--out=x"], "--output"),
        ("train.py", kpn.train.cli.main, ["--dev", "cpu"], "--device"),
        ("train.py", kpn.train.cli.main, ["--conf=x.toml"], "--config"),
        ("python -m kpn", kpn.__main__.main, ["summary", "--conf", "x.toml"], "--config"),
        ("python -m kpn", kpn.__main__.main, ["export", "run", "--out", "x.lut"], "--output"),
    ],
)
def test_abbreviations_are_refused_with_the_option_meant(
    name: str,
    main: Callable[[list[str]], int],
    argv: list[str],
    meant: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """argparse's prefix matching would take --weight for --weights; here it is a usage
    error (exit 2) that names the option, so that no option added later changes what an
    old command line means."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    line = last_error_line(capsys)
    assert line.startswith(name) and ": error: " in line, line  # argparse's, with usage
    abbreviation = next(token for token in argv if token.startswith("--")).partition("=")[0]
    assert line.endswith(f"{abbreviation}: did you mean {meant}?"), line


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_no_parser_takes_abbreviations(name: str) -> None:
    for parser in every_parser(PARSERS[name]()):
        assert parser.allow_abbrev is False, parser.prog
