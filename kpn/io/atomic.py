"""Atomic file output: a reader sees the old file or the whole new one, never half of one.

Everything kpn writes goes through :func:`atomic_output`: the data goes to a hidden
temporary file in the target's folder (a rename is only atomic within one file system),
is flushed to disk, and then replaces the target with ``os.replace``. Any failure removes
the temporary file and leaves an existing target untouched; the temporary files of a
writer that was killed (nothing could remove them) are removed by the next write of the
same target.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from kpn.errors import file_error, os_problem

TOKEN_BYTES = 4  # random bytes in a temporary file's name, written as hex


def _temp_path_for(target: Path) -> Path:
    """A fresh hidden name beside ``target`` that keeps its extension.

    Writers that pick the file format from the extension (image libraries) then write the
    temporary file in the target's format.
    """
    return target.with_name(f".{target.name}.{secrets.token_hex(TOKEN_BYTES)}.tmp{target.suffix}")


def stale_temp_paths(target: Path) -> list[Path]:
    """The temporary files of ``target`` (names from :func:`_temp_path_for`) in its folder.

    Only an exact match of the pattern counts, so other hidden files stay.
    """
    pattern = re.compile(
        rf"\.{re.escape(target.name)}\.[0-9a-f]{{{2 * TOKEN_BYTES}}}\.tmp{re.escape(target.suffix)}"
    )
    try:
        names = os.listdir(target.parent)
    except OSError:  # a missing or unreadable folder: the write itself says what is wrong
        return []
    return [target.parent / name for name in names if pattern.fullmatch(name)]


def _remove_stale_temps(target: Path) -> None:
    # A write that was killed (SIGKILL, power loss) had no chance to remove its temporary
    # file; they would pile up beside a checkpoint written every few minutes. Two writers
    # of one target at once already race for the rename: whichever wins (or fails with a
    # one-line error when its temporary file went), the target stays whole.
    for stale in stale_temp_paths(target):
        try:
            stale.unlink(missing_ok=True)
        except OSError:
            pass


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``.

    The temporary file exists (empty) when the body starts, so that an unwritable folder
    fails before any work is done. When the body returns, the file is flushed to disk and
    renamed over ``path``; when the body raises, or the flush or the rename fails, it is
    removed and ``path`` stays as it was. ``OSError`` (the body's included) comes out as
    a one-line :class:`KpnError` naming ``path``; other exceptions pass through unchanged.
    """
    target = Path(path)
    _remove_stale_temps(target)
    temp = _temp_path_for(target)
    # one try from the file's creation on: a Ctrl-C (KeyboardInterrupt, raised between any
    # two bytecodes) just after os.open returned must remove it too
    try:
        try:
            # os.open with mode 0o666 lets the umask decide permissions, like a plain open().
            os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except OSError as err:
            raise file_error(path, os_problem(err, "write")) from None
        yield temp
        _fsync_file(temp)
        os.replace(temp, target)
    except OSError as err:
        _remove_quietly(temp)
        raise file_error(path, os_problem(err, "write")) from None
    except BaseException:
        _remove_quietly(temp)
        raise
    _fsync_directory(target.parent)


def _remove_quietly(temp: Path) -> None:
    """Remove a temporary file that may not exist (its creation failed or was interrupted)."""
    with suppress(OSError):
        temp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path) as temp, open(temp, "wb") as file:
        file.write(data)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; some platforms cannot open directories, and the
    # file is already complete and in place, so failing here is not an error.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
