"""Ctrl-C and SIGTERM in ``kpn-infer``: the run stops where it is with one line, the file
it was writing removed and the files written before it kept.

:func:`stops_raise` makes both signals raise :class:`Stopped` (a KeyboardInterrupt, as
Ctrl-C's own) wherever the run is, so that :func:`kpn.io.atomic.atomic_output` removes the
output it was writing; :class:`Progress` notes the files written, for the line the command
prints (:meth:`Progress.interrupted_line`).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from kpn.infer.files import Job

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """A stop signal (``signum``) arrived: raised where the run was, so that what it was
    writing is removed (:func:`kpn.io.atomic.atomic_output`) and the rest stays."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stopped(signum: int, frame: object) -> None:
    raise Stopped(signum)


@contextmanager
def stops_raise() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Stopped` in the body; the handlers before are
    restored after. A signal ignored on entry (a background job's SIGINT) stays ignored;
    off the main thread, where Python cannot set handlers, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for number in STOP_SIGNALS:
        handler = signal.getsignal(number)
        if handler is not signal.SIG_IGN:
            previous[number] = signal.SIG_DFL if handler is None else handler
            signal.signal(number, _raise_stopped)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _identity(path: Path) -> tuple[int, int] | None:
    """``path``'s inode and modification time (None when absent): an atomic write
    replaces the file, so they change when it is written."""
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_ino, status.st_mtime_ns


@dataclass
class Progress:
    """The files a run has written, and the one it is on: what an interruption reports."""

    total: int = 0
    written: list[Path] = field(default_factory=list)
    current: Job | None = None
    before: tuple[int, int] | None = None  # the current output's _identity before

    def start(self, job: Job) -> None:
        self.current, self.before = job, _identity(job.output)

    def finish(self, written: bool) -> None:
        if written and self.current is not None:
            self.written.append(self.current.output)
        self.current = None

    def interrupted_line(self, stop: KeyboardInterrupt) -> str:
        """``interrupted: IN -> OUT not written; 2 of 5 written (A, B)``; a signal other
        than SIGINT is named after ``interrupted``."""
        unfinished = self.current
        if unfinished is not None:  # the signal may have landed after the rename: look
            replaced = _identity(unfinished.output) != self.before
            self.finish(written=replaced)
            unfinished = None if replaced else unfinished
        signum = getattr(stop, "signum", signal.SIGINT)
        name = "" if signum == signal.SIGINT else f" ({signal.Signals(signum).name})"
        if not self.total:
            return f"interrupted{name}: nothing written"
        where = "" if unfinished is None else f"{unfinished.source} -> {unfinished.output} "
        where = f"{where}not written; " if where else ""
        paths = [str(path) for path in self.written]
        listed = ", ".join(paths) if len(paths) <= 4 else f"{paths[0]}, ..., {paths[-1]}"
        listed = f" ({listed})" if paths else ""
        return f"interrupted{name}: {where}{len(paths)} of {self.total} written{listed}"
