"""The command lines' ``--help`` is plain words, and a mistyped option gets a suggestion."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import kpn.__main__
import kpn.infer.cli
import kpn.train.cli
from kpn.cli import plain

from conftest import assert_error_line

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


@pytest.mark.parametrize(
    ("argv", "typo", "meant"),
    [
        (["sumary", "--config", "quick"], "sumary", "summary"),
        (["nprof", "import-darktabel", "-o", "out"], "import-darktabel", "import-darktable"),
        (["export", "run", "-o", "x.lut", "--vkdt-layout", "haed"], "haed", "head"),
    ],
)
def test_kpn_suggests_the_subcommand_or_choice_meant(
    argv: list[str], typo: str, meant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped subcommand (of python -m kpn, or nprof's own) or value of an option with
    choices: argparse's one-line usage error, with the name closest to the typo."""
    with pytest.raises(SystemExit) as exit_info:
        kpn.__main__.main(argv)
    assert exit_info.value.code == 2
    line = last_error_line(capsys)
    assert line.startswith("python -m kpn") and ": error: " in line, line
    assert f"invalid choice: '{typo}'" in line, line
    assert line.endswith(f"; did you mean {meant}?"), line


def test_no_subcommand_is_guessed_from_far_off_words(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        kpn.__main__.main(["qqqqqq"])
    assert exit_info.value.code == 2
    line = last_error_line(capsys)
    assert "invalid choice: 'qqqqqq'" in line and "did you mean" not in line, line


@pytest.mark.parametrize(
    ("main", "argv"),
    [
        (kpn.train.cli.main, ["--config", "quick", "--set", "train.stpes=5"]),
        (kpn.__main__.main, ["summary", "--config", "quick", "--set", "train.stpes=5"]),
    ],
)
def test_set_suggests_the_setting_meant(
    main: Callable[[list[str]], int],
    argv: list[str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """train.py and python -m kpn: a mistyped --set key is one line naming the setting
    meant, exit 2, before any write."""
    out = tmp_path / "run"
    extra = ["--out", str(out)] if main is kpn.train.cli.main else []
    assert main([*argv, *extra]) == 2
    line = assert_error_line(capsys.readouterr().err)
    assert line == "error: --set train.stpes: no such setting; did you mean train.steps?"
    assert not out.exists()


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
