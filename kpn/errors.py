"""The exceptions every user-facing failure is raised as, and the words they use.

- :class:`KpnError`: a user mistake or bad input, one line naming what is wrong.
- :class:`ParameterError`: a bad value of a named parameter. The library names it as
  the keyword (``tile=5: must be 0 (untiled) or >= 64``); a command line rewords it as
  its flag (``--tile 5: ...``) with :meth:`KpnError.worded` and its own mapping of
  parameters to flags. A message may name other parameters too, through :func:`mention`.
- File problems: :func:`reading`, :func:`writing`, :func:`make_folder` and
  :func:`require_folder` own the words for a file that cannot be read, written or
  found, so that one problem reads the same everywhere: ``PATH: no such file``,
  ``PATH: cannot read (Permission denied)``, ``PATH: cannot write (No space left on
  device)``, ``PATH: no such folder``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

# A parameter named inside a message: control characters no message text holds, so that
# rewording finds exactly the mentions (parameter, its value as Python and as a flag's).
_START, _SEPARATOR, _END = "\x1d", "\x1f", "\x1e"
_MENTION = re.compile(f"{_START}([^{_SEPARATOR}]*){_SEPARATOR}([^{_END}]*){_END}")
_NO_VALUE = object()


class KpnError(Exception):
    """A user mistake or bad input: the message is one line that names what is wrong.

    Command-line entry points print it as ``error: <message>`` (parameters reworded as
    their flags, :meth:`worded`) and exit with status 2; anything else that escapes is a
    bug in kpn.
    """

    def __str__(self) -> str:
        return self.worded({})

    def worded(self, flags: Mapping[str, str]) -> str:
        """The message with each parameter that ``flags`` maps (parameter -> flag) named
        as that flag (``--tile 5``), the others as Python keywords (``tile=5``)."""
        text = super().__str__()
        return _MENTION.sub(lambda match: _name(match[1], match[2], flags), text)


class ParameterError(KpnError):
    """``parameter`` has a ``value`` it cannot have: ``parameter=value: problem``."""

    def __init__(self, parameter: str, value: object, problem: str) -> None:
        super().__init__(f"{mention(parameter, value)}: {problem}")
        self.parameter = parameter
        self.value = value
        self.problem = problem

    def __reduce__(self) -> tuple[type, tuple[str, object, str]]:
        # pickled (a loader worker's error) by its three parts, not by its message
        return type(self), (self.parameter, self.value, self.problem)


def mention(parameter: str, value: object = _NO_VALUE) -> str:
    """``parameter`` (with ``value``) as a message names it: ``tile=64`` from the library,
    ``--tile 64`` from a command line that has that flag (:meth:`KpnError.worded`)."""
    if value is _NO_VALUE:
        return f"{_START}{parameter}{_SEPARATOR}{_END}"
    text = os.fspath(value) if isinstance(value, os.PathLike) else value
    return f"{_START}{parameter}={text!r}{_SEPARATOR} {text}{_END}"


def _name(keyword: str, flag_value: str, flags: Mapping[str, str]) -> str:
    """One mention as ``flags`` words it. ``keyword``: ``tile=5`` or ``tile``;
    ``flag_value``: `` 5`` or empty."""
    parameter = keyword.partition("=")[0]
    flag = flags.get(parameter)
    return keyword if flag is None else flag + flag_value


# --- files -------------------------------------------------------------------------------
PathLike = str | os.PathLike[str]


def file_error(path: PathLike, problem: str) -> KpnError:
    """The one-line error of a file: ``PATH: problem``."""
    return KpnError(f"{os.fspath(path)}: {problem}")


def os_problem(error: OSError, doing: str = "read") -> str:
    """What an ``OSError`` while ``doing`` (read, write, create) a file says, in words."""
    if isinstance(error, FileNotFoundError) and doing == "read":
        return "no such file"
    if isinstance(error, IsADirectoryError) and doing == "read":
        return "is a directory, not a file"
    return f"cannot {doing} ({error.strerror or error})"


@contextmanager
def reading(path: PathLike) -> Iterator[None]:
    """Turn the ``OSError`` (and ``UnicodeDecodeError``) of reading ``path`` in the body
    into a one-line :class:`KpnError`: ``PATH: no such file``, ``PATH: is a directory,
    not a file``, ``PATH: not a text file``, ``PATH: cannot read (Permission denied)``."""
    try:
        yield
    except UnicodeDecodeError as err:
        raise file_error(path, f"not a text file (byte {err.start} is not UTF-8)") from None
    except OSError as err:
        raise file_error(path, os_problem(err, "read")) from None


@contextmanager
def writing(path: PathLike) -> Iterator[None]:
    """Turn the ``OSError`` of writing ``path`` in the body into ``PATH: cannot write
    (No space left on device)``."""
    try:
        yield
    except OSError as err:
        raise file_error(path, os_problem(err, "write")) from None


def make_folder(path: PathLike) -> Path:
    """Create folder ``path`` and its parents unless they exist; ``PATH: cannot create
    (Permission denied)`` when that fails, ``PATH: is a file, not a folder`` for a file."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise file_error(path, "is a file, not a folder") from None
    except OSError as err:
        raise file_error(path, os_problem(err, "create")) from None
    return folder


def require_folder(path: PathLike, context: str = "", hint: str = "") -> Path:
    """``path`` if it is a folder, else ``PATH: no such folder (context); hint`` (or ``is
    a file, not a folder``). ``context``: what gave the path, e.g. ``data.nprof_dir``;
    ``hint``: how to get one."""
    folder = Path(path)
    if folder.is_dir():
        return folder
    problem = "is a file, not a folder" if folder.exists() else "no such folder"
    problem += f" ({context})" if context else ""
    raise file_error(path, f"{problem}; {hint}" if hint else problem)


def one_line(error: BaseException) -> str:
    """The first line of a library's exception message (LibRaw's come as bytes), to put
    in parentheses after what failed."""
    first = error.args[0] if len(error.args) == 1 else error
    text = first.decode("utf-8", "replace") if isinstance(first, bytes) else str(first)
    lines = text.strip().splitlines()
    return lines[0] if lines else type(error).__name__
