"""Hints for a mistyped name: the known name closest to it, for a command line's options,
subcommands and choices (:mod:`kpn.cli`) and a config's ``--set`` settings
(:func:`kpn.config.apply_overrides`)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

CUTOFF = 0.6  # difflib's similarity below which no name is offered: a guess would mislead


def closest(name: str, names: Iterable[str]) -> str | None:
    """The one of ``names`` most like ``name``, or None when none is close."""
    close = difflib.get_close_matches(name, list(names), n=1, cutoff=CUTOFF)
    return close[0] if close else None


def either(names: list[str]) -> str:
    """``a``, ``a or b``, ``a, b or c``."""
    return " or ".join(filter(None, (", ".join(names[:-1]), names[-1])))


def settings_meant(path: list[str], table: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The ``section.key`` settings of ``table`` a mistyped ``path`` most likely means: its
    section and its key each the known one closest to it (``trian.stpes``: train.steps; a
    path too long is read by its first two parts), a bare key every section's closest key
    (``stpes``: train.steps). Empty when nothing is close."""
    if len(path) == 1:
        key = closest(path[0], {key for values in table.values() for key in values})
        return [f"{section}.{key}" for section, values in table.items() if key in values]
    section = path[0] if path[0] in table else closest(path[0], table)
    if section is None:
        return []
    key = path[1] if path[1] in table[section] else closest(path[1], table[section])
    return [] if key is None else [f"{section}.{key}"]


def setting_problem(path: list[str], table: Mapping[str, Mapping[str, Any]]) -> str | None:
    """What is wrong with ``path`` as the name of one of ``table``'s ``section.key``
    settings, with the settings it most likely means; None when it names one."""
    if len(path) == 2 and path[1] in table.get(path[0], {}):
        return None
    if len(path) == 1 and path[0] in table:
        return "a section, not a setting (expected section.key=value)"
    meant = settings_meant(path, table)
    return "no such setting" + (f"; did you mean {either(meant)}?" if meant else "")
