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
the layout takes it as an argument.

kpn appends one more part after kpn-t's text: its own section, a line ``kpn config:`` and
then the model's fully resolved ``[model]`` and ``[infer]`` tables as TOML. kpn-t's few
items leave most of the model open (pyramid, blend, input features, vkdt's defects,
precision); the section says all of it, so a file kpn wrote runs as the model that wrote
it. vkdt reads only the header and the block, and kpn-t's text comes first, byte for byte
as kpn-t writes it, so neither notices the section.
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

from kpn.config import Config, InferConfig, ModelConfig, config_from_dict, config_to_toml
from kpn.errors import KpnError
from kpn.fileio import atomic_write_bytes

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
def format_kpn_section(model: ModelConfig, infer: InferConfig) -> str:
    """kpn's section: ``KPN_SECTION_HEAD``, then ``[model]`` and ``[infer]`` as TOML.

    Every key is written, defaults included, so a later kpn whose defaults differ still
    reads the same model. Returns the text with its final newline.
    """
    lines, keep = [KPN_SECTION_HEAD], False
    # config_to_toml is the one TOML writer of configs; take its two tables from it.
    for line in config_to_toml(Config(model=model, infer=infer)).splitlines():
        if line.startswith("["):
            keep = line.strip("[]") in KPN_SECTION_TABLES
        if keep and line:
            lines.append(line)
    return "\n".join(lines) + "\n"


def parse_kpn_section(text: str, path: str | os.PathLike[str]) -> tuple[ModelConfig, InferConfig]:
    """The model and infer configs of kpn's section (the TOML after ``KPN_SECTION_HEAD``).

    Raises KpnError naming ``path`` for text that is not TOML, tables other than
    ``[model]`` and ``[infer]``, no ``[model]``, or a model this kpn cannot build.
    """
    where = f"{path} ({KPN_SECTION_HEAD!r} section)"
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise KpnError(f"{where}: invalid TOML: {err}") from None
    unknown = sorted(set(table) - set(KPN_SECTION_TABLES))
    if unknown:
        raise KpnError(f"{where}: unknown table {unknown[0]!r} (expected [model] and [infer])")
    if "model" not in table:
        raise KpnError(f"{where}: no [model] table")
    config = config_from_dict(table, where)
    return config.model, config.infer


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
def _layout(width: int, n_hidden: int, in_width: int) -> list[tuple[int, int, int]]:
    """(offset, rows, cols) in floats of W0, every hidden matrix and W_out (SPEC 9)."""
    first = width * in_width
    hidden = [(first + k * width * width, width, width) for k in range(n_hidden - 1)]
    w_out = (first + (n_hidden - 1) * width * width, _N_OUT, width)
    return [(0, width, in_width), *hidden, w_out]


def _check_layout(width: int, n_hidden: int, in_width: int, where: str) -> None:
    """KpnError unless ``in_width`` is a usable layout for a W x (n_hidden+1)W block."""
    if isinstance(in_width, bool) or not isinstance(in_width, int):
        raise KpnError(f"{where}: in_width must be an integer, got {in_width!r}")
    if in_width < _TILE or in_width % _TILE:
        raise KpnError(f"{where}: in_width {in_width} is not a positive multiple of {_TILE}")
    offset, rows, cols = _layout(width, n_hidden, in_width)[-1]
    end, block = offset + rows * cols, (n_hidden + 1) * width * width
    if end > block:
        raise KpnError(
            f"{where}: in_width {in_width} does not fit W={width}, n_hidden={n_hidden}: "
            f"the matrices need {end} floats, the block holds {block}"
        )


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

    def matrices(self, in_width: int, in_features: int) -> list[np.ndarray]:
        """The MLP's matrices, read with layout ``in_width``.

        Returns float32 copies ``[W0 [W, in_features], hidden [W, W] * (n_hidden-1),
        W_out [16, W]]``. Columns of W0 past ``in_features`` are dropped unread: kpn-t
        trains them on inputs that are always zero for a narrower feature set.
        """
        _check_layout(self.width, self.n_hidden, in_width, self.path)
        if isinstance(in_features, bool) or not isinstance(in_features, int):
            raise KpnError(f"{self.path}: in_features must be an integer, got {in_features!r}")
        if not 1 <= in_features <= in_width:
            raise KpnError(f"{self.path}: in_features {in_features} not in 1..in_width {in_width}")
        flat = self.data.reshape(-1)
        out = [
            flat[offset : offset + rows * cols].reshape(rows, cols).copy()
            for offset, rows, cols in _layout(self.width, self.n_hidden, in_width)
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
    if kpn_text is not None:
        model, infer = parse_kpn_section(kpn_text, path)
        _check_section(model, wd, n_hidden, trailer, str(path))
    return LutFile(wd, n_hidden, dtype, data, trailer, str(path), model, infer)


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
    in_width: int,
    dtype: str = "f16",
    trailer: str | None,
    model: ModelConfig | None = None,
    infer: InferConfig | None = None,
) -> bytes:
    """The bytes of a ``.lut`` holding ``matrices`` in layout ``in_width``.

    ``matrices`` is ``[W0 [W, c], hidden [W, W] * (n_hidden-1), W_out [16, W]]`` with
    ``c <= in_width`` (W0 is zero-padded to ``in_width`` columns), as torch
    ``Linear.weight`` tensors or arrays. ``dtype`` is "f16" (vkdt's) or "f32".
    ``trailer`` is kpn-t's text (see ``format_trailer``), written with a final newline.
    ``model`` (with ``infer``, default ``InferConfig()``) adds kpn's section after it.
    Raises KpnError for shapes that do not form such an MLP, a layout that does not fit
    the block, non-finite values, values the dtype cannot hold, or a model or trailer
    that does not describe the matrices.
    """
    section = None if model is None else (model, infer or InferConfig())
    return _encode(
        matrices, in_width=in_width, dtype=dtype, trailer=trailer, section=section, where="lut"
    )


def _encode(
    matrices: Sequence[np.ndarray | torch.Tensor],
    *,
    in_width: int,
    dtype: str,
    trailer: str | None,
    section: tuple[ModelConfig, InferConfig] | None,
    where: str,
) -> bytes:
    if dtype not in _DTYPES:
        raise KpnError(f"{where}: dtype {dtype!r} (expected one of {list(_DTYPES)})")
    datatype, np_dtype = _DTYPES[dtype]
    arrays = [_as_array(m, i, len(matrices), where) for i, m in enumerate(matrices)]
    if len(arrays) < 2:
        raise KpnError(f"{where}: {len(arrays)} matrices, need at least W0 and W_out")
    width, n_hidden = arrays[0].shape[0], len(arrays) - 1
    if width < _TILE or width % _TILE:
        raise KpnError(f"{where}: width W={width} (rows of W0) is not a positive multiple of 16")
    _check_layout(width, n_hidden, in_width, where)
    layout = _layout(width, n_hidden, in_width)
    for i, (array, (_, rows, cols)) in enumerate(zip(arrays, layout, strict=True)):
        fits = array.shape[1] <= cols if i == 0 else array.shape[1] == cols
        if array.shape[0] != rows or not fits or array.shape[1] == 0:
            wanted = f"[{rows}, <= {cols}]" if i == 0 else f"[{rows}, {cols}]"
            raise KpnError(
                f"{where}: {_matrix_name(i, len(arrays))} has shape {list(array.shape)}, "
                f"expected {wanted} for W={width}, in_width={in_width}"
            )
    block = np.zeros((n_hidden + 1) * width * width, dtype=np_dtype)
    for i, (array, (offset, rows, cols)) in enumerate(zip(arrays, layout, strict=True)):
        with np.errstate(over="ignore"):  # overflow to inf is reported just below
            converted = array.astype(np_dtype)
        if not np.isfinite(converted).all():
            big = float(np.abs(array).max())
            raise KpnError(
                f"{where}: {_matrix_name(i, len(arrays))} has values beyond the {dtype} range "
                f"(max |w| = {big:.6g})"
            )
        # W0 may be narrower than in_width: the missing columns stay zero.
        target = block[offset : offset + rows * cols].reshape(rows, cols)
        target[:, : array.shape[1]] = converted
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
        # After kpn-t's text, which stays byte for byte what kpn-t writes (module docstring).
        tail += format_kpn_section(model, infer).encode("utf-8")
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
    in_width: int,
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
    section = None if model is None else (model, infer or InferConfig())
    payload = _encode(
        matrices, in_width=in_width, dtype=dtype, trailer=trailer, section=section, where=str(path)
    )
    atomic_write_bytes(path, payload)
