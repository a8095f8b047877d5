"""Read and write MLP weights in vkdt's ``.lut`` format (docs/design.md §9).

A weights file is one 16-byte header, one block of ``(n_hidden+1)*W x W`` floats that
holds every matrix of the MLP (where each lies: :mod:`kpn.vkdt.lut_layout`), and, from
vkdt's ``kpn-t``, a text trailer describing the configuration it was trained with,
which kpn follows with its own section, the whole model (:mod:`kpn.vkdt.lut_text`).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kpn.config import InferConfig, ModelConfig
from kpn.errors import KpnError, reading
from kpn.io.atomic import atomic_write_bytes
from kpn.vkdt.lut_layout import (
    TILE,
    Offsets,
    check_layout_fits,
    check_layout_name,
    head_layout_conflict,
    layout_in_width,
    matrix_name,
    matrix_offsets,
    named_layout,
)
from kpn.vkdt.lut_text import (
    LutTrailer,
    format_kpn_section,
    parse_kpn_section,
    parse_trailer,
    split_text,
    trailer_contradiction,
)

LUT_MAGIC = 1234
LUT_VERSION = 2
DATATYPE_F16 = 16  # vkdt's dt_lut_header_ssbo_f16: a flat buffer, not an image
DATATYPE_F32 = 17  # dt_lut_header_ssbo_f32

_HEADER = struct.Struct("<IHBBII")  # magic, version, channels, datatype, wd, ht
_DTYPES = {"f16": (DATATYPE_F16, np.dtype("<f2")), "f32": (DATATYPE_F32, np.dtype("<f4"))}
_DATATYPE_NAMES = {code: name for name, (code, _) in _DTYPES.items()}


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
        check_layout_name(chosen, self.path)
        in_width = layout_in_width(self.width, chosen)
        check_layout_fits(self.width, self.n_hidden, in_width, self.path, first_cols=self.width)
        return self._read(named_layout(self.width, self.n_hidden, chosen), in_features)

    def matrices(self, in_width: int, in_features: int) -> list[np.ndarray]:
        """The MLP's matrices, read with layout ``in_width``.

        Returns float32 copies ``[W0 [W, in_features], hidden [W, W] * (n_hidden-1),
        W_out [16, W]]``. Columns of W0 past ``in_features`` are dropped unread: kpn-t
        trains them on inputs that are always zero for a narrower feature set.
        """
        check_layout_fits(self.width, self.n_hidden, in_width, self.path)
        return self._read(matrix_offsets(self.width, self.n_hidden, in_width), in_features)

    def _read(self, layout: Offsets, in_features: int) -> list[np.ndarray]:
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
    with reading(path):
        raw = Path(path).read_bytes()
    width, n_hidden, dtype = _parse_header(raw, path)
    data, end = _parse_block(raw, width, n_hidden, dtype, path)
    try:
        text = raw[end:].decode("utf-8")
    except UnicodeDecodeError as err:
        raise KpnError(f"{path}: trailer is not UTF-8 text (byte {err.start})") from None
    vkdt_text, kpn_text = split_text(text)
    trailer = parse_trailer(vkdt_text, path) if vkdt_text.strip() else None
    _check_trailer_shape(trailer, width, n_hidden, str(path), "header says")
    model = infer = None
    layout = "kpn-t"
    if kpn_text is not None:
        model, infer, layout = parse_kpn_section(kpn_text, path)
        _check_section(model, width, n_hidden, trailer, str(path))
        if layout != "kpn-t":
            in_width = layout_in_width(width, layout)
            check_layout_fits(width, n_hidden, in_width, str(path), first_cols=width)
    return LutFile(width, n_hidden, dtype, data, trailer, str(path), model, infer, layout)


def _parse_header(raw: bytes, path: str | os.PathLike[str]) -> tuple[int, int, str]:
    """(W, n_hidden, dtype name) of the file's header; KpnError unless it is a weights
    block's: one channel of ssbo floats, W x (n_hidden+1)W, W a multiple of 16."""
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
    if wd % TILE:
        raise KpnError(f"{path}: width {wd} is not a multiple of {TILE}")
    n_hidden = ht // wd - 1
    if n_hidden < 1:
        raise KpnError(f"{path}: size {wd} x {ht} leaves {n_hidden} hidden layers (need >= 1)")
    return wd, n_hidden, _DATATYPE_NAMES[datatype]


def _parse_block(
    raw: bytes, width: int, n_hidden: int, dtype: str, path: str | os.PathLike[str]
) -> tuple[np.ndarray, int]:
    """The float block after the header as read-only float32 ``[(n_hidden+1)*W, W]``, and
    the byte offset where the text after it starts."""
    np_dtype = _DTYPES[dtype][1]
    height = (n_hidden + 1) * width
    n_bytes = width * height * np_dtype.itemsize
    end = _HEADER.size + n_bytes
    if len(raw) < end:
        raise KpnError(
            f"{path}: truncated: {width} x {height} {dtype} needs {n_bytes} bytes of weights, "
            f"found {len(raw) - _HEADER.size}"
        )
    data = np.frombuffer(raw, dtype=np_dtype, count=width * height, offset=_HEADER.size)
    data = data.astype(np.float32).reshape(height, width)
    data.flags.writeable = False
    return data, end


def _check_trailer_shape(
    trailer: LutTrailer | None, width: int, n_hidden: int, where: str, shape_source: str
) -> None:
    """KpnError unless kpn-t's text (if any) names the block's width and hidden layers;
    ``shape_source`` says what gave the block's (the header, the matrices)."""
    if trailer is not None and (trailer.n_hidden, trailer.width) != (n_hidden, width):
        raise KpnError(
            f"{where}: trailer says {trailer.n_hidden} hidden layers of width {trailer.width}, "
            f"{shape_source} {n_hidden} of width {width}"
        )


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
    """The bytes of a ``.lut`` holding ``matrices`` in layout ``in_width`` (design §9) or in
    a named ``layout`` (:data:`~kpn.vkdt.lut_layout.LAYOUTS`, W0 W wide): give one of the two.

    ``matrices`` is ``[W0 [W, c], hidden [W, W] * (n_hidden-1), W_out [16, W]]`` with
    ``c <= in_width`` (W0 is zero-padded to ``in_width`` columns, W for a named layout),
    as torch ``Linear.weight`` tensors or arrays. ``dtype`` is "f16" (vkdt's) or "f32".
    ``trailer`` is kpn-t's text (see ``format_trailer``), written with a final newline.
    ``model`` (with ``infer``, default ``InferConfig()``) adds kpn's section after it,
    which records a ``"head"`` layout. Raises KpnError for shapes that do not form such an
    MLP, a layout that does not fit the block, a network the ``"head"`` layout cannot
    hold (:func:`~kpn.vkdt.lut_layout.head_layout_conflict`), non-finite values, values the
    dtype cannot hold, or a model or trailer that does not describe the matrices; its
    messages start with ``where`` (the destination).
    """
    if dtype not in _DTYPES:
        raise KpnError(f"{where}: dtype {dtype!r} (expected one of {list(_DTYPES)})")
    if (in_width is None) == (layout is None):
        raise KpnError(f"{where}: give in_width or a named layout, one of them")
    if layout is not None:
        check_layout_name(layout, where)
    arrays = [_as_array(m, i, len(matrices), where) for i, m in enumerate(matrices)]
    offsets = _placement(arrays, in_width, layout, where)
    width, n_hidden = arrays[0].shape[0], len(arrays) - 1
    block = _block(arrays, offsets, dtype, layout, where)
    header = _HEADER.pack(
        LUT_MAGIC, LUT_VERSION, 1, _DTYPES[dtype][0], width, (n_hidden + 1) * width
    )
    section = None if model is None else (model, infer or InferConfig())
    return header + block + _text_after_block(arrays, trailer, section, in_width, layout, where)


def _placement(
    arrays: Sequence[np.ndarray], in_width: int | None, layout: str | None, where: str
) -> Offsets:
    """(offset, rows, cols) of each matrix in layout ``in_width`` or the named ``layout``;
    KpnError unless the shapes form an MLP that such a block holds."""
    if len(arrays) < 2:
        raise KpnError(f"{where}: {len(arrays)} matrices, need at least W0 and W_out")
    width, n_hidden = arrays[0].shape[0], len(arrays) - 1
    if width < TILE or width % TILE:
        raise KpnError(f"{where}: width W={width} (rows of W0) is not a positive multiple of 16")
    first_cols = None
    if layout is not None:
        in_width, first_cols = layout_in_width(width, layout), width
    assert in_width is not None
    check_layout_fits(width, n_hidden, in_width, where, first_cols)
    offsets = matrix_offsets(width, n_hidden, in_width, first_cols)
    for i, (array, (_, rows, cols)) in enumerate(zip(arrays, offsets, strict=True)):
        fits = array.shape[1] <= cols if i == 0 else array.shape[1] == cols
        if array.shape[0] != rows or not fits or array.shape[1] == 0:
            wanted = f"[{rows}, <= {cols}]" if i == 0 else f"[{rows}, {cols}]"
            name = f"in_width={in_width}" if layout is None else f"the {layout} layout"
            raise KpnError(
                f"{where}: {matrix_name(i, len(arrays))} has shape {list(array.shape)}, "
                f"expected {wanted} for W={width}, {name}"
            )
    return offsets


def _block(
    arrays: Sequence[np.ndarray], offsets: Offsets, dtype: str, layout: str | None, where: str
) -> bytes:
    """The float block: each matrix in ``dtype`` at its offset, zeros elsewhere; KpnError
    for values beyond the dtype's range or a network the head layout cannot hold."""
    np_dtype = _DTYPES[dtype][1]
    width = arrays[0].shape[0]
    block = np.zeros(len(arrays) * width * width, dtype=np_dtype)
    stored = []
    for i, (array, (offset, rows, cols)) in enumerate(zip(arrays, offsets, strict=True)):
        with np.errstate(over="ignore"):  # overflow to inf is reported just below
            converted = array.astype(np_dtype)
        if not np.isfinite(converted).all():
            big = float(np.abs(array).max())
            raise KpnError(
                f"{where}: {matrix_name(i, len(arrays))} has values beyond the {dtype} range "
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
    return block.tobytes()


def _text_after_block(
    arrays: Sequence[np.ndarray],
    trailer: str | None,
    section: tuple[ModelConfig, InferConfig] | None,
    in_width: int | None,
    layout: str | None,
    where: str,
) -> bytes:
    """kpn-t's ``trailer`` with its newline, then kpn's section of ``section``; KpnError
    unless both describe ``arrays``."""
    width, n_hidden = arrays[0].shape[0], len(arrays) - 1
    tail, parsed = b"", None
    if trailer is not None:
        parsed = parse_trailer(trailer, where)
        _check_trailer_shape(parsed, width, n_hidden, where, "the matrices are")
        tail = (trailer + "\n").encode("utf-8")
    if section is None:
        return tail
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
    return tail + format_kpn_section(model, infer, layout or "kpn-t").encode("utf-8")


def _as_array(matrix: np.ndarray | torch.Tensor, index: int, count: int, where: str) -> np.ndarray:
    """float64 copy of one matrix; float64 so range checks see values before rounding."""
    name = matrix_name(index, count)
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
