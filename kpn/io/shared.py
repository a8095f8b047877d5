"""What the image formats share: the path type, the checks on image arrays, and opening
a file that a library will read, with the one-line errors of :mod:`kpn.errors`."""

from __future__ import annotations

import numpy as np

from kpn.errors import KpnError, PathLike, reading


def check_readable(path: PathLike) -> None:
    """KpnError now (``PATH: no such file`` and the like, :func:`kpn.errors.reading`) for
    a file a library will open, whose own errors would not name it."""
    with reading(path), open(path, "rb"):
        pass


def check_finite(image: np.ndarray, path: PathLike) -> None:
    """KpnError naming ``path`` and the first bad pixel if ``image`` holds NaN or Inf.

    ``image``: ``[H,W,3]`` or ``[H,W]``.
    """
    bad = ~np.isfinite(image)
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0][:2])
        count = int(bad.sum())
        raise KpnError(
            f"{path}: {count} NaN or Inf values (the first at row {row}, column {column})"
        )


def as_image(image: np.ndarray, path: PathLike) -> np.ndarray:
    """A real-valued ``[H,W,3]`` or ``[H,W]`` array with H, W >= 1, else KpnError."""
    array = np.asarray(image)
    if array.dtype.kind not in "fiu":
        raise KpnError(f"{path}: image has dtype {array.dtype}, expected real numbers")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)) or 0 in array.shape:
        raise KpnError(f"{path}: image has shape {list(array.shape)}, expected [H,W,3] or [H,W]")
    return array
