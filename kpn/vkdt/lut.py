"""Read and write MLP weights in vkdt's ``.lut`` format (SPEC section 9).

A weights file is one 16-byte header, one block of ``(n_hidden+1)*W x W`` floats that
holds every matrix of the MLP, and, from vkdt's ``kpn-t``, a text trailer describing the
configuration it was trained with. The matrices lie in the block back to back::

    W0      [W, in_width]   at 0
    hidden k [W, W]         at W*in_width + k*W*W            (k = 0 .. n_hidden-2)
    W_out   [16, W]         at W*in_width + (n_hidden-1)*W*W
    rest of the block       zeros when we write, ignored when we read

``in_width`` is not stored in the file: it is a convention of the program that reads it
(kpn-t uses W, vkdt's ``kpn`` inference module always 32), so every function that needs
the layout takes it as an argument. Two layouts have names (:data:`LAYOUTS`):

- ``"kpn-t"``: what vkdt's kpn-t writes and reads, in_width = W. kpn writes this.
- ``"head"``: what vkdt HEAD's ``kpn`` inference module reads (``kpn/main.c`` passes
  in_width 32; ``inf-impl.glsl`` starts hidden layer k at ``WIDTH*in_width + k*W*W``):
  the first matrix W x W at 0 (``threadblock_layer`` always multiplies W x W, row k of
  W0 at float k*W), every later matrix from float 32*W on. For W = 32 it is the kpn-t
  layout; for W > 32 the first hidden matrix begins inside W0, on its row 32, so only
  a network whose first layer's units 32.. feed nothing can be written this way
  (:func:`head_layout_conflict`; ``model.vkdt_head_layout`` trains one).

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
import struct
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kpn.config import (
    VKDT_INFERENCE_IN_WIDTH,
    Config,
    InferConfig,
    ModelConfig,
    config_from_dict,
    config_to_toml,
)
from kpn.errors import KpnError
from kpn.io.atomic import atomic_write_bytes

LUT_MAGIC = 1234
LUT_VERSION = 2
DATATYPE_F16 = 16  # vkdt's dt_lut_header_ssbo_f16: a flat buffer, not an image
DATATYPE_F32 = 17  # dt_lut_header_ssbo_f32

_HEADER = struct.Struct("<IHBBII")  # magic, version, channels, datatype, wd, ht
_DTYPES = {"f16": (DATATYPE_F16, np.dtype("<f2")), "f32": (DATATYPE_F32, np.dtype("<f4"))}
_DATATYPE_NAMES = {code: name for name, (code, _) in _DTYPES.items()}
# vkdt's matrix loads work on 16x16 tiles, and W_out has 16 rows.
_TILE = 16
_N_OUT = 16

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
# Named layouts (module docstring): kpn-t's (in_width W) and vkdt HEAD's kpn module's (32).
LAYOUTS = ("kpn-t", "head")


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
    _check_layout_name(layout, "kpn section")
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


def _split_text(text: str) -> tuple[str, str | None]:
    """(kpn-t's text, kpn's TOML or None): the text after the blocks, at kpn's head line."""
    lines = text.split("\n")
    if KPN_SECTION_HEAD not in lines:
        return text, None
    head = lines.index(KPN_SECTION_HEAD)
    return "\n".join(lines[:head]), "\n".join(lines[head + 1 :])


# --- layout ----------------------------------------------------------------------------
def _layout(
    width: int, n_hidden: int, in_width: int, first_cols: int | None = None
) -> list[tuple[int, int, int]]:
    """(offset, rows, cols) in floats of W0, every hidden matrix and W_out (SPEC 9).

    W0 has ``first_cols`` columns (default ``in_width``); the later matrices start at
    ``W*in_width``. vkdt's shaders read W0 W wide whatever in_width is (``first_cols = W``).
    """
    first = width * in_width
    hidden = [(first + k * width * width, width, width) for k in range(n_hidden - 1)]
    w_out = (first + (n_hidden - 1) * width * width, _N_OUT, width)
    return [(0, width, in_width if first_cols is None else first_cols), *hidden, w_out]


def _layout_in_width(width: int, layout: str) -> int:
    """The in_width a named layout starts the later matrices with: W (kpn-t) or 32 (head)."""
    return width if layout == "kpn-t" else VKDT_INFERENCE_IN_WIDTH


def named_layout(width: int, n_hidden: int, layout: str) -> list[tuple[int, int, int]]:
    """(offset, rows, cols) of every matrix in a named layout (:data:`LAYOUTS`): W0 W x W
    at 0, the later matrices from ``W * in_width`` (in_width W for kpn-t, 32 for head).

    Hand-checked for W 64, 6 hidden layers: kpn-t 0, 4096, 8192, ..., W_out at 24576;
    head 0, 2048, 6144, ..., W_out at 22528 (hidden 0 begins at W0's row 32).
    """
    _check_layout_name(layout, "layout")
    return _layout(width, n_hidden, _layout_in_width(width, layout), first_cols=width)


def _check_layout_name(layout: str, where: str) -> None:
    if layout not in LAYOUTS:
        raise KpnError(f"{where}: unknown layout {layout!r} (expected one of {list(LAYOUTS)})")


def _check_layout(
    width: int, n_hidden: int, in_width: int, where: str, first_cols: int | None = None
) -> None:
    """KpnError unless ``in_width`` is a usable layout for a W x (n_hidden+1)W block."""
    if isinstance(in_width, bool) or not isinstance(in_width, int):
        raise KpnError(f"{where}: in_width must be an integer, got {in_width!r}")
    if in_width < _TILE or in_width % _TILE:
        raise KpnError(f"{where}: in_width {in_width} is not a positive multiple of {_TILE}")
    block = (n_hidden + 1) * width * width
    ends = [o + r * c for o, r, c in _layout(width, n_hidden, in_width, first_cols)]
    if max(ends) > block:
        raise KpnError(
            f"{where}: in_width {in_width} does not fit W={width}, n_hidden={n_hidden}: "
            f"the matrices need {max(ends)} floats, the block holds {block}"
        )


def head_layout_conflict(matrices: Sequence[np.ndarray]) -> str | None:
    """Why ``matrices`` (``[W0, next, ..., W_out]`` as stored, W0 W x W) are not the
    network that vkdt HEAD's kpn module reads from a ``"head"`` layout file: one line, or
    None when they are.

    There the matrix after W0 starts at float 32*W, which is W0's row 32, so W0's rows
    32.. are read as the floats of the later matrices. The network is the same when a row
    is read back unchanged, or when the first layer's unit of that row feeds nothing
    (its column of the next matrix is 0).
    """
    first = matrices[0]
    width = first.shape[0]
    if width <= VKDT_INFERENCE_IN_WIDTH:
        return None
    region = first.reshape(-1).copy()  # what the head layout reads as W0
    offsets = named_layout(width, len(matrices) - 1, "head")
    for matrix, (offset, _, _) in zip(matrices[1:], offsets[1:], strict=True):
        flat = matrix.reshape(-1)
        end = min(offset + flat.size, region.size)
        if offset < end:
            region[offset:end] = flat[: end - offset]
    read = region.reshape(width, width)
    following = matrices[1]
    for row in range(VKDT_INFERENCE_IN_WIDTH, width):
        if np.array_equal(first[row], read[row]) or not following[:, row].any():
            continue
        return (
            f"vkdt HEAD's kpn module reads the W = {width} file's later matrices from float "
            f"{offsets[1][0]}, W0's row {VKDT_INFERENCE_IN_WIDTH} (in_width 32, kpn/main.c): "
            f"unit {row} of the first layer feeds the next layer (column {row} of "
            f"{_matrix_name(1, len(matrices))} is not 0), so no file in that layout holds "
            "this network; train it with model.vkdt_head_layout = true (docs/vkdt.md, "
            "defect 6)"
        )
    return None


def _matrix_name(index: int, count: int) -> str:
    if index == 0:
        return "W0"
    return "W_out" if index == count - 1 else f"hidden {index - 1}"


# --- reading ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LutFile:
    """A weights file as stored: the raw block plus what its header and trailer say.

    ``data`` is the whole float32 ``[(n_hidden+1)*W, W]`` block, read-only, including
    the unused rest (vkdt-trained files hold random initial values there). ``path`` is
    where it was read from and only serves error messages. ``model`` and ``infer`` are
    kpn's section (the configs of the model that wrote the file), None in files without
    one (vkdt's, and kpn's before the section existed).
    """

    width: int
    n_hidden: int
    dtype: str
    data: np.ndarray
    trailer: LutTrailer | None
    path: str = "<lut>"
    model: ModelConfig | None = None
    infer: InferConfig | None = None
    layout: str = "kpn-t"  # what kpn's section says ("head"), else kpn-t's

    def network(self, in_features: int, layout: str | None = None) -> list[np.ndarray]:
        """The MLP's matrices as the program of a named layout reads them (:data:`LAYOUTS`;
        default: the file's own, :attr:`layout`): W0 W x W at 0 (its first
        ``in_features`` columns returned), the later matrices from ``W * in_width``.

        Returns float32 copies ``[W0 [W, in_features], hidden [W, W] * (n_hidden-1),
        W_out [16, W]]``. In the ``"head"`` layout with W > 32, W0's rows 32.. are the
        floats the next matrix starts with, as vkdt HEAD's kpn module reads them.
        """
        chosen = self.layout if layout is None else layout
        _check_layout_name(chosen, self.path)
        in_width = _layout_in_width(self.width, chosen)
        _check_layout(self.width, self.n_hidden, in_width, self.path, first_cols=self.width)
        return self._read(named_layout(self.width, self.n_hidden, chosen), in_features)

    def matrices(self, in_width: int, in_features: int) -> list[np.ndarray]:
        """The MLP's matrices, read with layout ``in_width``.

        Returns float32 copies ``[W0 [W, in_features], hidden [W, W] * (n_hidden-1),
        W_out [16, W]]``. Columns of W0 past ``in_features`` are dropped unread: kpn-t
        trains them on inputs that are always zero for a narrower feature set.
        """
        _check_layout(self.width, self.n_hidden, in_width, self.path)
        return self._read(_layout(self.width, self.n_hidden, in_width), in_features)

    def _read(self, layout: list[tuple[int, int, int]], in_features: int) -> list[np.ndarray]:
        if isinstance(in_features, bool) or not isinstance(in_features, int):
            raise KpnError(f"{self.path}: in_features must be an integer, got {in_features!r}")
        columns = layout[0][2]
        if not 1 <= in_features <= columns:
            raise KpnError(f"{self.path}: in_features {in_features} not in 1..in_width {columns}")
        flat = self.data.reshape(-1)
        out = [
            flat[offset : offset + rows * cols].reshape(rows, cols).copy()
            for offset, rows, cols in layout
        ]
        out[0] = np.ascontiguousarray(out[0][:, :in_features])
        return out


def read_lut(path: str | os.PathLike[str]) -> LutFile:
    """Read a vkdt ``.lut`` weights file (header, float block, optional text trailer,
    optional kpn section).

    Raises KpnError, naming ``path``, for anything that is not a single-channel ssbo
    weights block of a W x (n_hidden+1)W MLP, whose trailer is not kpn-t's text or
    contradicts the header, or whose kpn section is not a model of this shape that agrees
    with the trailer. An absent or blank trailer gives ``trailer=None``; no kpn section
    gives ``model=infer=None``.
    """
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise KpnError(f"{path}: no such file") from None
    except OSError as err:
        raise KpnError(f"{path}: cannot read ({err.strerror or err})") from None
    if len(raw) < _HEADER.size:
        raise KpnError(f"{path}: {len(raw)} bytes, shorter than the {_HEADER.size}-byte header")
    magic, version, channels, datatype, wd, ht = _HEADER.unpack_from(raw)
    if magic != LUT_MAGIC:
        raise KpnError(f"{path}: wrong magic {magic} (expected {LUT_MAGIC})")
    if version != LUT_VERSION:
        raise KpnError(f"{path}: wrong version {version} (expected {LUT_VERSION})")
    if channels != 1:
        raise KpnError(f"{path}: {channels} channels (expected 1 for weights)")
    if datatype not in _DATATYPE_NAMES:
        raise KpnError(
            f"{path}: datatype {datatype} (expected {DATATYPE_F16} = ssbo f16 "
            f"or {DATATYPE_F32} = ssbo f32)"
        )
    if wd == 0 or ht == 0 or ht % wd:
        raise KpnError(f"{path}: size {wd} x {ht} is not W x (n_hidden+1)*W for any W")
    if wd % _TILE:
        raise KpnError(f"{path}: width {wd} is not a multiple of {_TILE}")
    n_hidden = ht // wd - 1
    if n_hidden < 1:
        raise KpnError(f"{path}: size {wd} x {ht} leaves {n_hidden} hidden layers (need >= 1)")
    dtype = _DATATYPE_NAMES[datatype]
    np_dtype = _DTYPES[dtype][1]
    n_bytes = wd * ht * np_dtype.itemsize
    end = _HEADER.size + n_bytes
    if len(raw) < end:
        raise KpnError(
            f"{path}: truncated: {wd} x {ht} {dtype} needs {n_bytes} bytes of weights, "
            f"found {len(raw) - _HEADER.size}"
        )
    data = np.frombuffer(raw, dtype=np_dtype, count=wd * ht, offset=_HEADER.size)
    data = data.astype(np.float32).reshape(ht, wd)
    data.flags.writeable = False
    try:
        text = raw[end:].decode("utf-8")
    except UnicodeDecodeError as err:
        raise KpnError(f"{path}: trailer is not UTF-8 text (byte {err.start})") from None
    vkdt_text, kpn_text = _split_text(text)
    trailer = parse_trailer(vkdt_text, path) if vkdt_text.strip() else None
    if trailer is not None and (trailer.n_hidden, trailer.width) != (n_hidden, wd):
        raise KpnError(
            f"{path}: trailer says {trailer.n_hidden} hidden layers of width {trailer.width}, "
            f"header says {n_hidden} of width {wd}"
        )
    model = infer = None
    layout = "kpn-t"
    if kpn_text is not None:
        model, infer, layout = parse_kpn_section(kpn_text, path)
        _check_section(model, wd, n_hidden, trailer, str(path))
        if layout != "kpn-t":
            _check_layout(wd, n_hidden, _layout_in_width(wd, layout), str(path), first_cols=wd)
    return LutFile(wd, n_hidden, dtype, data, trailer, str(path), model, infer, layout)


def _check_section(
    model: ModelConfig, width: int, n_hidden: int, trailer: LutTrailer | None, where: str
) -> None:
    """KpnError unless kpn's section fits the block's shape and agrees with the trailer."""
    if (model.width, model.n_hidden) != (width, n_hidden):
        raise KpnError(
            f"{where}: the kpn section says {model.n_hidden} hidden layers of width "
            f"{model.width}, the weights are {n_hidden} of width {width}"
        )
    contradiction = None if trailer is None else trailer_contradiction(trailer, model)
    if contradiction is not None:
        raise KpnError(f"{where}: {contradiction}")


# --- writing ---------------------------------------------------------------------------
def lut_bytes(
    matrices: Sequence[np.ndarray | torch.Tensor],
    *,
    in_width: int | None = None,
    layout: str | None = None,
    dtype: str = "f16",
    trailer: str | None,
    model: ModelConfig | None = None,
    infer: InferConfig | None = None,
    where: str = "lut",
) -> bytes:
    """The bytes of a ``.lut`` holding ``matrices`` in layout ``in_width`` (SPEC 9) or in
    a named ``layout`` (:data:`LAYOUTS`, W0 W wide): give one of the two.

    ``matrices`` is ``[W0 [W, c], hidden [W, W] * (n_hidden-1), W_out [16, W]]`` with
    ``c <= in_width`` (W0 is zero-padded to ``in_width`` columns, W for a named layout),
    as torch ``Linear.weight`` tensors or arrays. ``dtype`` is "f16" (vkdt's) or "f32".
    ``trailer`` is kpn-t's text (see ``format_trailer``), written with a final newline.
    ``model`` (with ``infer``, default ``InferConfig()``) adds kpn's section after it,
    which records a ``"head"`` layout. Raises KpnError for shapes that do not form such an
    MLP, a layout that does not fit the block, a network the ``"head"`` layout cannot
    hold (:func:`head_layout_conflict`), non-finite values, values the dtype cannot hold,
    or a model or trailer that does not describe the matrices; its messages start with
    ``where`` (the destination).
    """
    section = None if model is None else (model, infer or InferConfig())
    return _encode(
        matrices,
        in_width=in_width,
        layout=layout,
        dtype=dtype,
        trailer=trailer,
        section=section,
        where=where,
    )


def _encode(
    matrices: Sequence[np.ndarray | torch.Tensor],
    *,
    in_width: int | None,
    layout: str | None,
    dtype: str,
    trailer: str | None,
    section: tuple[ModelConfig, InferConfig] | None,
    where: str,
) -> bytes:
    if dtype not in _DTYPES:
        raise KpnError(f"{where}: dtype {dtype!r} (expected one of {list(_DTYPES)})")
    if (in_width is None) == (layout is None):
        raise KpnError(f"{where}: give in_width or a named layout, one of them")
    if layout is not None:
        _check_layout_name(layout, where)
    datatype, np_dtype = _DTYPES[dtype]
    arrays = [_as_array(m, i, len(matrices), where) for i, m in enumerate(matrices)]
    if len(arrays) < 2:
        raise KpnError(f"{where}: {len(arrays)} matrices, need at least W0 and W_out")
    width, n_hidden = arrays[0].shape[0], len(arrays) - 1
    if width < _TILE or width % _TILE:
        raise KpnError(f"{where}: width W={width} (rows of W0) is not a positive multiple of 16")
    first_cols = None
    if layout is not None:
        in_width, first_cols = _layout_in_width(width, layout), width
    assert in_width is not None
    _check_layout(width, n_hidden, in_width, where, first_cols)
    offsets = _layout(width, n_hidden, in_width, first_cols)
    for i, (array, (_, rows, cols)) in enumerate(zip(arrays, offsets, strict=True)):
        fits = array.shape[1] <= cols if i == 0 else array.shape[1] == cols
        if array.shape[0] != rows or not fits or array.shape[1] == 0:
            wanted = f"[{rows}, <= {cols}]" if i == 0 else f"[{rows}, {cols}]"
            name = f"in_width={in_width}" if layout is None else f"the {layout} layout"
            raise KpnError(
                f"{where}: {_matrix_name(i, len(arrays))} has shape {list(array.shape)}, "
                f"expected {wanted} for W={width}, {name}"
            )
    block = np.zeros((n_hidden + 1) * width * width, dtype=np_dtype)
    stored = []
    for i, (array, (offset, rows, cols)) in enumerate(zip(arrays, offsets, strict=True)):
        with np.errstate(over="ignore"):  # overflow to inf is reported just below
            converted = array.astype(np_dtype)
        if not np.isfinite(converted).all():
            big = float(np.abs(array).max())
            raise KpnError(
                f"{where}: {_matrix_name(i, len(arrays))} has values beyond the {dtype} range "
                f"(max |w| = {big:.6g})"
            )
        # W0 may be narrower than in_width: the missing columns stay zero. A later matrix
        # of the head layout overwrites W0's rows past 32 (checked below).
        padded = np.zeros((rows, cols), dtype=np_dtype)
        padded[:, : array.shape[1]] = converted
        block[offset : offset + rows * cols] = padded.reshape(-1)
        stored.append(padded)
    if layout == "head":
        conflict = head_layout_conflict(stored)
        if conflict is not None:
            raise KpnError(f"{where}: {conflict}")
    header = _HEADER.pack(LUT_MAGIC, LUT_VERSION, 1, datatype, width, (n_hidden + 1) * width)
    tail, parsed = b"", None
    if trailer is not None:
        parsed = parse_trailer(trailer, where)
        if (parsed.n_hidden, parsed.width) != (n_hidden, width):
            raise KpnError(
                f"{where}: trailer says {parsed.n_hidden} hidden layers of width "
                f"{parsed.width}, the matrices are {n_hidden} of width {width}"
            )
        tail = (trailer + "\n").encode("utf-8")
    if section is not None:
        model, infer = section
        _check_section(model, width, n_hidden, parsed, where)
        if model.in_features != arrays[0].shape[1]:
            raise KpnError(
                f"{where}: W0 has {arrays[0].shape[1]} columns, the kpn section's "
                f"model.features = {model.features!r} has {model.in_features} inputs"
            )
        if layout is None and in_width != width:
            raise KpnError(
                f"{where}: a file with kpn's section is in a named layout (kpn-t's or "
                f"head), not in_width {in_width} for W = {width}"
            )
        # After kpn-t's text, which stays byte for byte what kpn-t writes (module docstring).
        tail += format_kpn_section(model, infer, layout or "kpn-t").encode("utf-8")
    return header + block.tobytes() + tail


def _as_array(matrix: np.ndarray | torch.Tensor, index: int, count: int, where: str) -> np.ndarray:
    """float64 copy of one matrix; float64 so range checks see values before rounding."""
    name = _matrix_name(index, count)
    if isinstance(matrix, torch.Tensor):
        if matrix.is_complex():
            raise KpnError(f"{where}: {name} is complex")
        array = matrix.detach().to("cpu", torch.float64).numpy()
    else:
        array = np.asarray(matrix)
        if array.dtype.kind not in "fiu":
            raise KpnError(f"{where}: {name} has dtype {array.dtype}, expected real numbers")
        array = array.astype(np.float64)
    if array.ndim != 2:
        raise KpnError(f"{where}: {name} has {array.ndim} dimensions, expected 2")
    if not np.isfinite(array).all():
        raise KpnError(f"{where}: {name} contains NaN or Inf")
    return array


def write_lut(
    path: str | os.PathLike[str],
    matrices: Sequence[np.ndarray | torch.Tensor],
    *,
    in_width: int | None = None,
    layout: str | None = None,
    dtype: str = "f16",
    trailer: str | None = None,
    model: ModelConfig | None = None,
    infer: InferConfig | None = None,
) -> None:
    """Write ``matrices`` as a ``.lut`` file (arguments as in ``lut_bytes``), atomically.

    The bytes go to a temporary file beside ``path`` that replaces it only once fully on
    disk, so a reader never sees half a file and a failure leaves ``path`` as it was
    and no temporary behind. Raises KpnError naming ``path``.
    """
    payload = lut_bytes(
        matrices,
        in_width=in_width,
        layout=layout,
        dtype=dtype,
        trailer=trailer,
        model=model,
        infer=infer,
        where=str(path),
    )
    atomic_write_bytes(path, payload)
