"""The text after a ``.lut`` file's weights: kpn-t's trailer, kpn's section (docs/design.md §9).

vkdt's ``kpn-t`` writes a few lines describing the configuration it trained with
(:class:`LutTrailer`, :func:`format_trailer`, :func:`parse_trailer`).

kpn appends one more part after kpn-t's text: its own section, a line ``kpn config:`` and
then the model's fully resolved ``[model]`` and ``[infer]`` tables as TOML. kpn-t's few
items leave most of the model open (pyramid, blend, input features, vkdt's defects,
precision); the section says all of it, so a file kpn wrote runs as the model that wrote
it. vkdt reads only the header and the block, and kpn-t's text comes first, byte for byte
as kpn-t writes it, so neither notices the section. A file in the ``"head"`` layout says
so there, in one more table: ``[lut]`` with ``layout = "head"``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass

from kpn.config import Config, InferConfig, ModelConfig, config_from_dict, config_to_toml
from kpn.errors import KpnError
from kpn.vkdt.lut_layout import LAYOUTS, check_layout_name

# --- trailer ---------------------------------------------------------------------------
# vkdt's words -> ours, one table per line of kpn-t's text. The reverse direction of each
# table rebuilds vkdt's text from a parsed trailer, so both directions share one source.
_KERNEL_FROM_VKDT = {"plain": "plain", "softmax": "softmax", "sigmoid": "sigmoid"}
# vkdt prints "sigmoid" for both ALPHA_SIGMOID and ALPHA_CLAMPED.
_ALPHA_FROM_VKDT = {"const": "const", "plain": "plain", "sigmoid": "sigmoid_or_clamped"}
_ACTIVATION_FROM_VKDT = {"none": "none", "relu": "relu", "leaky relu": "leaky_relu"}
_LOSS_FROM_VKDT = {"L2": "l2", "SMAPE": "smape", "cosh": "cosh"}

# Our config names -> vkdt's words, for the trailer we write.
_KERNEL_TO_VKDT = {"softmax": "softmax", "plain": "plain"}
_ALPHA_TO_VKDT = {"const": "const", "plain": "plain", "clamped": "sigmoid", "sigmoid": "sigmoid"}
_ACTIVATION_TO_VKDT = {"leaky_relu": "leaky relu", "relu": "relu", "none": "none"}
_LOSS_TO_VKDT = {"l2": "L2", "smape": "SMAPE", "cosh": "cosh"}
VKDT_LOSSES = tuple(_LOSS_TO_VKDT)  # kpn's psnr loss is its own

_TRAILER_HEAD = ("lut contains weights for", "multi-level kernel predicting mlp with:")
_INT_LINE = re.compile(r"(-?[0-9]+) (hidden layers|network width)")
_WORD_LINES = (
    ("kernel weight activation", _KERNEL_FROM_VKDT),
    ("alpha blending activation", _ALPHA_FROM_VKDT),
    ("mlp activation", _ACTIVATION_FROM_VKDT),
    ("loss", _LOSS_FROM_VKDT),
)
# kpn-t added "mlp activation" on 2024-01-18 and "loss" on 2024-01-30: files from the
# weeks before carry 6 or 7 lines, which we read with the missing items as None.
_MIN_TRAILER_LINES = 6

# kpn's section after kpn-t's text: this line, then TOML with these tables (module docstring).
KPN_SECTION_HEAD = "kpn config:"
KPN_SECTION_TABLES = ("model", "infer")
LAYOUT_TABLE = "lut"  # [lut] layout = "head", only in files of that layout


@dataclass(frozen=True)
class LutTrailer:
    """The configuration kpn-t's text trailer records, in our config vocabulary.

    ``kernel_activation`` may be ``"sigmoid"`` (an apply mode vkdt once had and we do
    not). ``alpha_activation`` is ``"sigmoid_or_clamped"`` when vkdt wrote "sigmoid",
    because it writes that for both. ``activation`` and ``loss`` are None in files from
    vkdt versions that did not record them yet (before 2024-01-18 resp. 2024-01-30).
    """

    n_hidden: int
    width: int
    kernel_activation: str
    alpha_activation: str
    activation: str | None
    loss: str | None

    def __post_init__(self) -> None:
        # A trailer built by hand must still be one that to_text can write and parse reads.
        chosen = (
            ("kernel_activation", self.kernel_activation, _KERNEL_FROM_VKDT, False),
            ("alpha_activation", self.alpha_activation, _ALPHA_FROM_VKDT, False),
            ("activation", self.activation, _ACTIVATION_FROM_VKDT, True),
            ("loss", self.loss, _LOSS_FROM_VKDT, True),
        )
        for name, value, table, optional in chosen:
            if not (value is None and optional) and value not in table.values():
                raise KpnError(
                    f"trailer: unknown {name} {value!r} (expected one of {list(table.values())})"
                )
        if self.activation is None and self.loss is not None:
            raise KpnError("trailer: vkdt never recorded the loss without the mlp activation")
        if min(self.n_hidden, self.width) < 1:
            raise KpnError(f"trailer: {self.n_hidden} hidden layers of width {self.width}")

    def to_text(self) -> str:
        """vkdt's text for this trailer, without the final newline (inverse of parse)."""
        words = [
            _invert(_KERNEL_FROM_VKDT)[self.kernel_activation],
            _invert(_ALPHA_FROM_VKDT)[self.alpha_activation],
        ]
        if self.activation is not None:
            words.append(_invert(_ACTIVATION_FROM_VKDT)[self.activation])
            if self.loss is not None:
                words.append(_invert(_LOSS_FROM_VKDT)[self.loss])
        return _render_trailer(self.n_hidden, self.width, words)


def _invert(table: dict[str, str]) -> dict[str, str]:
    return {ours: theirs for theirs, ours in table.items()}


def _render_trailer(n_hidden: int, width: int, words: Sequence[str]) -> str:
    lines = [*_TRAILER_HEAD, f"{n_hidden} hidden layers", f"{width} network width"]
    lines += [f"{word} {label}" for word, (label, _) in zip(words, _WORD_LINES, strict=False)]
    return "\n".join(lines)


def format_trailer(
    *,
    n_hidden: int,
    width: int,
    kernel_activation: str,
    alpha_activation: str,
    activation: str,
    loss: str | None,
) -> str:
    """The text vkdt's kpn-t stores after the weights, for a configuration in our names.

    Returns the text without its final newline: the writer adds it, as vkdt's o-lut does.
    ``alpha_activation`` "clamped" comes out as "sigmoid", as vkdt writes it. ``loss``
    None leaves the loss line out, as kpn-t did before 2024-01-30 (for a loss vkdt lacks).
    """
    if isinstance(n_hidden, bool) or not isinstance(n_hidden, int) or n_hidden < 1:
        raise KpnError(f"trailer: n_hidden must be an integer >= 1, got {n_hidden!r}")
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise KpnError(f"trailer: width must be an integer >= 1, got {width!r}")
    chosen = (
        ("kernel_activation", kernel_activation, _KERNEL_TO_VKDT),
        ("alpha_activation", alpha_activation, _ALPHA_TO_VKDT),
        ("activation", activation, _ACTIVATION_TO_VKDT),
        ("loss", loss, _LOSS_TO_VKDT),
    )
    if loss is None:
        chosen = chosen[:-1]
    words = []
    for name, value, table in chosen:
        if value not in table:
            raise KpnError(f"trailer: unknown {name} {value!r} (expected one of {list(table)})")
        words.append(table[value])
    return _render_trailer(n_hidden, width, words)


def parse_trailer(text: str, path: str | os.PathLike[str]) -> LutTrailer:
    """Parse the text kpn-t writes after the weights (with or without its final newline).

    Raises KpnError naming ``path`` when the text is not what any kpn-t version wrote.
    """
    lines = text.rstrip("\n").split("\n")
    if len(lines) < _MIN_TRAILER_LINES or len(lines) > len(_TRAILER_HEAD) + 2 + len(_WORD_LINES):
        raise KpnError(f"{path}: trailer has {len(lines)} lines, not kpn-t's 6 to 8")
    for i, expected in enumerate(_TRAILER_HEAD):
        if lines[i] != expected:
            raise KpnError(f"{path}: trailer line {i + 1} is {lines[i]!r}, expected {expected!r}")
    numbers = []
    for i, label in ((2, "hidden layers"), (3, "network width")):
        match = _INT_LINE.fullmatch(lines[i])
        if match is None or match.group(2) != label or int(match.group(1)) < 1:
            raise KpnError(f"{path}: trailer line {i + 1} is {lines[i]!r}, expected '<n> {label}'")
        numbers.append(int(match.group(1)))
    values: list[str | None] = [None] * len(_WORD_LINES)
    for j, line in enumerate(lines[4:]):
        label, table = _WORD_LINES[j]
        word = line.removesuffix(" " + label)
        if word == line or word not in table:
            raise KpnError(
                f"{path}: trailer line {j + 5} is {line!r}, expected one of "
                f"{[w + ' ' + label for w in table]}"
            )
        values[j] = table[word]
    kernel, alpha, activation, loss = values
    assert kernel is not None and alpha is not None  # at least 6 lines were checked above
    return LutTrailer(numbers[0], numbers[1], kernel, alpha, activation, loss)


# --- kpn's section ---------------------------------------------------------------------
def format_kpn_section(model: ModelConfig, infer: InferConfig, layout: str = "kpn-t") -> str:
    """kpn's section: ``KPN_SECTION_HEAD``, then ``[model]`` and ``[infer]`` as TOML, and
    for the ``"head"`` layout a ``[lut]`` table saying so.

    Every key is written, defaults included, so a later kpn whose defaults differ still
    reads the same model. Returns the text with its final newline.
    """
    check_layout_name(layout, "kpn section")
    lines, keep = [KPN_SECTION_HEAD], False
    # config_to_toml is the one TOML writer of configs; take its two tables from it.
    for line in config_to_toml(Config(model=model, infer=infer)).splitlines():
        if line.startswith("["):
            keep = line.strip("[]") in KPN_SECTION_TABLES
        if keep and line:
            lines.append(line)
    if layout != "kpn-t":
        lines += [f"[{LAYOUT_TABLE}]", f'layout = "{layout}"']
    return "\n".join(lines) + "\n"


def parse_kpn_section(
    text: str, path: str | os.PathLike[str]
) -> tuple[ModelConfig, InferConfig, str]:
    """The model and infer configs of kpn's section (the TOML after ``KPN_SECTION_HEAD``)
    and the file's layout (``"kpn-t"`` unless a ``[lut]`` table says ``"head"``).

    Raises KpnError naming ``path`` for text that is not TOML, tables other than
    ``[model]``, ``[infer]`` and ``[lut]``, no ``[model]``, a model this kpn cannot build,
    or a ``[lut]`` table that is not one layout of :data:`LAYOUTS`.
    """
    where = f"{path} ({KPN_SECTION_HEAD!r} section)"
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise KpnError(f"{where}: invalid TOML: {err}") from None
    unknown = sorted(set(table) - {*KPN_SECTION_TABLES, LAYOUT_TABLE})
    if unknown:
        raise KpnError(
            f"{where}: unknown table {unknown[0]!r} (expected [model], [infer] and [lut])"
        )
    if "model" not in table:
        raise KpnError(f"{where}: no [model] table")
    layout_table = table.pop(LAYOUT_TABLE, {"layout": "kpn-t"})
    layout = layout_table.get("layout") if isinstance(layout_table, dict) else None
    if (
        not isinstance(layout_table, dict)
        or set(layout_table) != {"layout"}
        or (layout not in LAYOUTS)
    ):
        raise KpnError(f"{where}: [{LAYOUT_TABLE}] must be layout = one of {list(LAYOUTS)}")
    config = config_from_dict(table, where)
    return config.model, config.infer, layout


def trailer_contradiction(trailer: LutTrailer, model: ModelConfig) -> str | None:
    """The first item where kpn-t's text and a model config disagree, as words, or None.

    vkdt's "sigmoid" alpha (``sigmoid_or_clamped``) agrees with sigmoid and clamped; items
    the text does not record agree with anything.
    """
    pairs = (
        ("n_hidden", trailer.n_hidden, model.n_hidden),
        ("width", trailer.width, model.width),
        ("kernel_activation", trailer.kernel_activation, model.kernel_activation),
        ("alpha_activation", trailer.alpha_activation, model.alpha_activation),
        ("activation", trailer.activation, model.activation),
    )
    for name, recorded, wanted in pairs:
        if recorded is None or recorded == wanted:
            continue
        if recorded == "sigmoid_or_clamped" and wanted in ("sigmoid", "clamped"):
            continue
        return f"trailer says model.{name} = {recorded!r}, the kpn section {wanted!r}"
    return None


def split_text(text: str) -> tuple[str, str | None]:
    """(kpn-t's text, kpn's TOML or None): the text after the blocks, at kpn's head line."""
    lines = text.split("\n")
    if KPN_SECTION_HEAD not in lines:
        return text, None
    head = lines.index(KPN_SECTION_HEAD)
    return "\n".join(lines[:head]), "\n".join(lines[head + 1 :])
