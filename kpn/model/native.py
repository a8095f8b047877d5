"""kpn's fused CPU loops (``kpn/model/csrc/kpn_native.c``): the star15_snr features, the softmax
star filter and its backward pass, each one pass over a band where eager torch makes some
seventy, twenty and forty passes.

The C file is compiled on first use with the machine's C compiler (``$CC``, else ``cc``)
into a cache folder (``$KPN_CACHE``, else ``~/.cache/kpn``), keyed by the source, the flags
and the CPU, and loaded with ctypes; ``scripts/setup.sh`` builds it once. Where there is no
compiler, the build fails or ``KPN_NATIVE=0`` is set, :func:`library` is None and kpn runs
its eager code, which is the definition: the loops compute the same float32 operations in
the same order (``-ffp-contract=off``), except log1p, log2 and exp, which are Cephes'
float polynomials (results within 3e-7 of torch's, tests/model/test_native.py). They run on
float32 CPU tensors that need no gradient, outside torch.compile; every other case takes
the eager path.

Measured per stage in ``benchmarks/speed.py`` (README, Speed).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
from torch import Tensor

from kpn.config import CHROMA_INPUT_CHANNELS, KERNEL_TAP_COUNTS

SOURCE = Path(__file__).parent / "csrc" / "kpn_native.c"
FLAGS = (
    "-O3",
    "-march=native",  # the cache key holds the CPU's flags
    "-ffp-contract=off",  # no fused multiply-adds: torch's operations round one by one
    "-fno-math-errno",
    "-fno-trapping-math",  # lets the compiler vectorise the branch-free selects
    "-fPIC",
    "-shared",
)
BUILD_SECONDS = 120
STAR15_SNR_CHANNELS = 32
TAPS = 15  # star15's: the features' and the backward pass's

_F32P = ctypes.POINTER(ctypes.c_float)
_I64 = ctypes.c_int64


def cache_folder() -> Path:
    """Where the compiled library is kept: ``$KPN_CACHE``, else the user's cache folder."""
    if os.environ.get("KPN_CACHE"):
        return Path(os.environ["KPN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kpn"


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            return next((line for line in info if line.startswith("flags")), "")
    except OSError:
        return platform.processor()


def library_path(compiler: str) -> Path:
    """The cached library's path for this source, compiler, flags and CPU."""
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), compiler.encode(), " ".join(FLAGS).encode()):
        key.update(part)
    key.update(f"{platform.machine()} {_cpu_flags()}".encode())
    return cache_folder() / f"kpn_native-{key.hexdigest()[:16]}.so"


def build() -> Path | None:
    """Compile the C file into the cache (atomically) unless it is there; its path, or None
    where there is no compiler or the build fails."""
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None or platform.system() == "Windows":
        return None
    target = library_path(compiler)
    if target.exists():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
            built = Path(scratch) / target.name
            command = [compiler, *FLAGS, "-o", str(built), str(SOURCE), "-lm"]
            subprocess.run(command, check=True, capture_output=True, timeout=BUILD_SECONDS)
            os.replace(built, target)
    except (OSError, subprocess.SubprocessError):
        return None
    return target


@functools.cache
def library() -> ctypes.CDLL | None:
    """The loaded library, or None (eager path): ``KPN_NATIVE=0``, no compiler, a failed
    build or load."""
    if os.environ.get("KPN_NATIVE", "1") == "0":
        return None
    path = build()
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(str(path))
        features, forward, backward = (
            lib.kpn_star15_snr_rows, lib.kpn_softmax_apply, lib.kpn_softmax_apply_backward
        )  # fmt: skip
    except (OSError, AttributeError):  # not loadable, or not this source's library
        return None
    features.argtypes = [_F32P, _I64, _I64, _I64, _F32P, _I64, _I64, _F32P]
    features.argtypes += [_I64, _I64, _I64, ctypes.c_float, ctypes.c_int, _F32P]
    forward.argtypes = [_F32P, _I64, _I64, _I64, _F32P, _I64, _I64, _I64]
    forward.argtypes += [_I64, _I64, _I64, _I64, _I64, _F32P, _F32P]
    backward.argtypes = [_F32P, _F32P, _I64, _I64, _I64, _F32P, _F32P]
    backward.argtypes += [_I64, _I64, _I64, _I64, _F32P]
    for function in (features, forward, backward):
        function.restype = ctypes.c_int
    return lib


def _applies(*tensors: Tensor) -> bool:
    """float32 CPU tensors, rows of unit stride, no gradient wanted, not being compiled
    (torch.compile traces the eager code)."""
    if torch.compiler.is_compiling():
        return False
    return all(
        t.device.type == "cpu"
        and t.dtype == torch.float32
        and t.stride(-1) == 1
        and not (t.requires_grad and torch.is_grad_enabled())
        for t in tensors
    )


def _check_shape(tensor: Tensor, shape: tuple[int, ...], name: str) -> None:
    """The C loops read and write by these shapes: anything else is refused before them."""
    if tuple(tensor.shape) != shape:
        raise ValueError(
            f"kpn.model.native: {name} has shape {list(tensor.shape)}, not {list(shape)}"
        )


def _pointer(tensor: Tensor) -> ctypes._Pointer:
    return ctypes.cast(tensor.data_ptr(), _F32P)


def star15_snr_features(
    padded: Tensor, noise_ab: Tensor, level: int, noise_lum: Tensor, chroma: bool = False
) -> Tensor | None:
    """:func:`kpn.model.features.star15_snr_features_padded` in one pass, or None where the
    loops do not apply (then the caller computes it); with ``chroma``,
    :func:`kpn.model.features.chroma_features_padded`'s 30 channels after its 32.

    ``[B,3,h+4,w+4], [B,2], level, [B,h,w] -> [B,32,h,w]`` (``[B,62,h,w]``), stored
    channels last (each pixel's inputs together: the MLP's rows, without a transposing
    copy).
    """
    if not _applies(padded, noise_ab, noise_lum) or (lib := library()) is None:
        return None
    batch, (height, width) = noise_lum.shape[0], noise_lum.shape[-2:]
    _check_shape(padded, (batch, 3, height + 4, width + 4), "padded")
    _check_shape(noise_ab, (batch, 2), "noise_ab")
    noise_ab = noise_ab.contiguous()
    channels = STAR15_SNR_CHANNELS + (CHROMA_INPUT_CHANNELS if chroma else 0)
    out = torch.empty(batch, height, width, channels)
    status = lib.kpn_star15_snr_rows(
        _pointer(padded), *padded.stride()[:3], _pointer(noise_lum), *noise_lum.stride()[:2],
        _pointer(noise_ab), batch, height, width, 0.5**level, int(chroma), _pointer(out),
    )  # fmt: skip
    if status:
        raise MemoryError("kpn_native: star15_snr features")
    return out.permute(0, 3, 1, 2)


def softmax_apply(
    padded: Tensor, logits: Tensor, tap_weights: Tensor | None = None
) -> Tensor | None:
    """``apply_kernel_padded(padded, kernel_weights(logits, "softmax"), None)`` in one
    pass, or None where the loops do not apply.

    ``[B,C,h+4,w+4], [B,T,h,w] -> [B,C,h,w]``, T 15 or 21 taps
    (:func:`kpn.model.features.kernel_taps`); ``tap_weights``: None, or a contiguous
    ``[B,T,h,w]`` float32 tensor that receives the normalised weights.
    """
    if not _applies(padded, logits) or (lib := library()) is None:
        return None
    batch, channels = padded.shape[:2]
    taps, height, width = logits.shape[-3:]
    if taps not in KERNEL_TAP_COUNTS.values():  # the kernels kpn_native.c's table holds
        raise ValueError(f"logits: {taps} taps, not one of {tuple(KERNEL_TAP_COUNTS.values())}")
    _check_shape(padded, (batch, channels, height + 4, width + 4), "padded")
    _check_shape(logits, (batch, taps, height, width), "logits")
    if tap_weights is not None:
        _check_shape(tap_weights, (batch, taps, height, width), "tap_weights")
        if not (tap_weights.is_contiguous() and _applies(tap_weights)):
            raise ValueError("tap_weights must be a contiguous float32 CPU tensor")
    out = torch.empty(batch, channels, height, width)
    status = lib.kpn_softmax_apply(
        _pointer(padded), *padded.stride()[:3], _pointer(logits), *logits.stride()[:3],
        batch, channels, height, width, taps, _pointer(out),
        None if tap_weights is None else _pointer(tap_weights),
    )  # fmt: skip
    if status:
        raise MemoryError("kpn_native: softmax apply")
    return out


def softmax_apply_backward(
    grad: Tensor, padded: Tensor, tap_weights: Tensor, filtered: Tensor
) -> Tensor | None:
    """:func:`kpn.model.band.softmax_apply_backward` in one pass, or None where the loops do not
    apply. ``[B,C,h,w], [B,C,h+4,w+4], [B,15,h,w], [B,C,h,w] -> [B,15,h,w]``"""
    if not _applies(grad, padded, tap_weights, filtered) or (lib := library()) is None:
        return None
    grad, tap_weights, filtered = grad.contiguous(), tap_weights.contiguous(), filtered.contiguous()
    batch, channels, height, width = filtered.shape
    _check_shape(grad, (batch, channels, height, width), "grad")
    _check_shape(padded, (batch, channels, height + 4, width + 4), "padded")
    _check_shape(tap_weights, (batch, TAPS, height, width), "tap_weights")
    out = torch.empty_like(tap_weights)
    status = lib.kpn_softmax_apply_backward(
        _pointer(grad), _pointer(padded), *padded.stride()[:3], _pointer(tap_weights),
        _pointer(filtered), batch, channels, height, width, _pointer(out),
    )  # fmt: skip
    if status:
        raise MemoryError("kpn_native: softmax apply backward")
    return out
