"""What the command lines share: help in plain words, no abbreviated options, and a hint
for a mistyped option, subcommand or choice.

The module docstrings double as ``--help`` texts; their reST markup (double backticks,
``:func:`` roles) is for the API documentation and reads as noise in a terminal.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

from kpn.hints import closest

_ROLE = re.compile(r":(?:func|meth|class|mod|attr|data|exc|obj):`~?([^`]+)`")
_LITERAL = re.compile(r"``(.+?)``", re.DOTALL)
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")  # a value, not an option


def plain(text: str) -> str:
    """Docstring markup as plain words: ``x`` and :func:`x` become x."""
    return _LITERAL.sub(r"\1", _ROLE.sub(r"\1", text))


def _chain(parser: argparse.ArgumentParser, argv: Sequence[str]) -> Iterator[Any]:
    """``parser`` and the subcommand parsers ``argv`` chose, outermost first."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for index, token in enumerate(argv):
                if token in action.choices:
                    yield from _chain(action.choices[token], argv[index + 1 :])
                    break


def suggestions(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """``--typo: did you mean --option?`` for each option in ``argv`` that none of the
    chosen parsers knows and that is close to one they have (an abbreviation too:
    ``--weight: did you mean --weights?``)."""
    known = [option for p in _chain(parser, argv) for option in p._option_string_actions]
    short = {option for option in known if len(option) == 2}  # -o, also as -oFILE
    hints = []
    for token in argv:
        if token == "--":
            break  # the rest are values
        name = token.partition("=")[0]
        if not name.startswith("-") or name == "-" or _NEGATIVE_NUMBER.match(name):
            continue
        if name in known or (not name.startswith("--") and name[:2] in short):
            continue
        meant = closest(name, known)
        if meant is not None:
            hints.append(f"{name}: did you mean {meant}?")
    return hints


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose description and epilog read as plain words, that takes
    no abbreviated options (``--weight`` for ``--weights`` is an error, so that a typo or
    an option added later cannot change what a command line means), and whose errors name
    the option, subcommand or choice closest to a mistyped one (Python 3.11's argparse has
    no ``suggest_on_error``). Subcommand parsers are of this class too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        for key in ("description", "epilog"):
            if kwargs.get(key):
                kwargs[key] = plain(kwargs[key])
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)
        self._argv: list[str] = []

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        # remembered for error(), which argparse calls without the arguments
        self._argv = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        """argparse's check of a value against its choices (a subcommand's name too), its
        ``invalid choice: 'sumary' (choose from ...)`` ending ``; did you mean summary?``
        where one choice is close."""
        try:
            super()._check_value(action, value)
        except argparse.ArgumentError as error:
            meant = closest(str(value), (str(choice) for choice in action.choices or ()))
            if meant is None:
                raise
            message = f"{error.message}; did you mean {meant}?"
            raise argparse.ArgumentError(action, message) from None

    def error(self, message: str) -> NoReturn:
        """Usage, then one line ``prog: error: message; --typo: did you mean --x?``;
        exit code 2."""
        hints = suggestions(self, self._argv)
        super().error("; ".join([message, *hints]))


BROKEN_PIPE_STATUS = 128 + 13  # the shell's status of a program that SIGPIPE ended
INTERRUPTED_STATUS = 128 + 2  # and of one that Ctrl-C (SIGINT) ended


def exit_with(main: Callable[[], int]) -> NoReturn:
    """Exit with ``main()``'s status: a console script's whole body.

    A reader that stops reading (``kpn-infer ... | head -1``) ends the command as SIGPIPE
    ends a C program, quietly with status 141, not with a BrokenPipeError traceback; what
    was being written is not (every write is atomic), what was written stays. A Ctrl-C
    that no command caught (kpn-infer and training say what they kept; this is one while
    they start, torch loading) ends it with the line ``interrupted`` and status 130.
    """
    try:
        status = main()
        sys.stdout.flush()  # a pipe closed after the last line breaks here
    except BrokenPipeError:
        # Python's own flush at exit would fail on the closed pipe again: point it away
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = BROKEN_PIPE_STATUS
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        status = INTERRUPTED_STATUS
    sys.exit(status)


def launch(module: str) -> NoReturn:
    """Run ``module``'s ``main()`` as a console script, the module imported inside
    :func:`exit_with`: the commands import torch, which takes a second or more, and a
    Ctrl-C then is a Ctrl-C like any other."""
    exit_with(lambda: importlib.import_module(module).main())


def kpn_infer() -> NoReturn:
    """``kpn-infer`` and ``python infer.py``: :mod:`kpn.infer.cli`."""
    launch("kpn.infer.cli")


def kpn_train() -> NoReturn:
    """``kpn-train`` and ``python train.py``: :mod:`kpn.train.cli`."""
    launch("kpn.train.cli")


def kpn_tools() -> NoReturn:
    """``kpn`` and ``python -m kpn``: :mod:`kpn.__main__`."""
    launch("kpn.__main__")
