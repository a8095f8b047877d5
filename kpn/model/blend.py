"""Reconstruction, coarse to fine (docs/design.md §5, vkdt's ``up.comp``).

Each level's output O_i combines the expanded coarser output up(O_{i+1}) with the level's
filtered image I_i and its alpha a_i:

- ``mix``: O_i = (1 - a_i) * up(O_{i+1}) + a_i * I_i  (the original design, X = mip)
- ``add``: O_i = up(O_{i+1}) + a_i * I_i  (``PRE_MLP_DIFF``, X = detail)
- ``post_diff``: O_i = up(O_{i+1}) + a_i * (I_i - up(down(I_i)))  (``POST_MLP_DIFF``),
  up(down(.)) the pyramid's 2x2 mean and B-spline (``vkdt_border``: vkdt's, which on odd
  sizes takes the coarse texels past the edge from the fine image mirrored)
"""

from __future__ import annotations

from torch import Tensor

from kpn.model.apply import luma_chroma
from kpn.model.pyramid import smooth_box2_bspline, smooth_post_diff


def blend_level(
    coarse_up: Tensor,
    filtered: Tensor,
    alpha: Tensor | float,
    blend: str,
    vkdt_border: bool = False,
) -> Tensor:
    """One level's output from the expanded coarser output.

    Args:
        coarse_up: ``[B,3,H,W]``, up(O_{i+1}) at this level's size.
        filtered: ``[B,3,H,W]``, I_i.
        alpha: ``[B,1,H,W]``, a_i, or ``[B,2,H,W]``: luma's and chroma's.
        blend: ``"mix"`` | ``"add"`` | ``"post_diff"``.
        vkdt_border: post_diff's smoothing as vkdt's ``up.comp`` computes it
            (``model.vkdt_post_diff_border``).

    Returns:
        ``[B,3,H,W]``, O_i.

    An ``alpha`` of two channels (``model.chroma_kernel``) blends the luma with the first
    and the chroma with the second (design §18): each blend is up(O_{i+1}) at a_i = 0 and
    affine in a_i (:func:`alpha_slope`), and the luma/chroma split commutes with it.
    """
    if isinstance(alpha, Tensor) and alpha.shape[1] == 2:
        slope = alpha_slope(coarse_up, filtered, blend, vkdt_border)
        return coarse_up + alpha_times_slope(alpha, slope)
    if blend == "mix":
        return (1.0 - alpha) * coarse_up + alpha * filtered
    if blend == "add":
        return coarse_up + alpha * filtered
    if blend == "post_diff":
        smooth = smooth_post_diff if vkdt_border else smooth_box2_bspline
        return coarse_up + alpha * (filtered - smooth(filtered))
    raise ValueError(f"unknown blend {blend!r}")


def alpha_times_slope(alpha: Tensor, slope: Tensor) -> Tensor:
    """``alpha`` times :func:`alpha_slope`'s ``slope``; a two-channel alpha (luma's and
    chroma's, ``model.chroma_kernel``) times the slope's luma and chroma each.

    ``[B,1,H,W] or [B,2,H,W], [B,3,H,W] -> [B,3,H,W]``
    """
    if alpha.shape[1] == 2:
        return luma_chroma(alpha[:, :1] * slope, alpha[:, 1:] * slope)
    return alpha * slope


def alpha_slope(coarse_up: Tensor, filtered: Tensor, blend: str, vkdt_border: bool) -> Tensor:
    """dO_i/da_i of :func:`blend_level`, which is affine in a_i: ``I_i - up(O_{i+1})``
    (mix), ``I_i`` (add), ``I_i - up(down(I_i))`` (post_diff).

    ``[B,3,H,W] x 2 -> [B,3,H,W]``
    """
    if blend == "mix":
        return filtered - coarse_up
    if blend == "add":
        return filtered
    if blend == "post_diff":
        smooth = smooth_post_diff if vkdt_border else smooth_box2_bspline
        return filtered - smooth(filtered)
    raise ValueError(f"unknown blend {blend!r}")
