"""The network switched for inference: :class:`Denoiser`, ``denoiser(image, a, b)``,
untiled or in tiles, with the SURE blend (its divergence from the network's own pass, or
from a second); the precision it runs in; the mean over orientations of the image."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from kpn.config import ENSEMBLES, MIN_TILE, InferConfig, ModelConfig
from kpn.errors import KpnError, ParameterError, mention
from kpn.infer.sure import ROWS, probe_step, sure_blend, sure_blend_one_pass
from kpn.model.linearised import probe_applies
from kpn.model.network import KPN, kpn_forward
from kpn.model.precision import VKDT_MATMULS
from kpn.model.tiling import plan_tiles, tiled_forward

F16_MAX = float(torch.finfo(torch.float16).max)  # 65504: vkdt-f16 stores its input in it

Orient = Callable[[np.ndarray], np.ndarray]


def _transposed(image: np.ndarray) -> np.ndarray:
    return image.transpose(1, 0, 2)


# The square's 8 symmetries as (forward, inverse) on [H,W,C] views. The network is trained
# on tiles flipped in x and y but never transposed: the transposes disagree with the
# identity most, so they come first (design §19). The first 4 are a group of involutions.
ORIENTATIONS: tuple[tuple[Orient, Orient], ...] = (
    (lambda x: x, lambda x: x),
    (_transposed, _transposed),
    (lambda x: x[::-1, ::-1], lambda x: x[::-1, ::-1]),
    (lambda x: _transposed(x)[::-1, ::-1], lambda x: _transposed(x)[::-1, ::-1]),
    (lambda x: x[:, ::-1], lambda x: x[:, ::-1]),
    (lambda x: x[::-1], lambda x: x[::-1]),
    (lambda x: _transposed(x[:, ::-1]), lambda x: _transposed(x)[:, ::-1]),
    (lambda x: _transposed(x[::-1]), lambda x: _transposed(x)[::-1]),
)


@dataclass
class Denoiser:
    """The network, switched for inference: ``denoiser(image, a, b) -> image``.

    ``precision`` (:func:`inference_precision`) sets the model's precision switch:
    ``fp32``, ``bf16`` (the hidden layers' products in bfloat16) or ``vkdt-f16``. ``tile``
    0 runs :func:`kpn.model.network.kpn_forward` on the whole image; otherwise
    :func:`kpn.model.tiling.tiled_forward` (the same result, in bounded memory). ``sure``: the
    output blended towards the input by SURE, in windows of side ``sure_window``, its
    divergence by ``sure_divergence``: ``one_pass`` (:func:`kpn.infer.sure.sure_blend_one_pass`,
    where the model allows it: :func:`kpn.model.linearised.probe_applies`) or ``two_pass``
    (:func:`kpn.infer.sure.sure_blend`, the network runs twice), its weights by
    ``sure_split``: one for all of the network's change, or one for its luma and one for its
    chroma. ``ensemble`` (kpn only): the mean of the outputs of the first 1, 2, 4 or
    8 :data:`ORIENTATIONS` of the image, each denoised as above, for as many times the time.
    """

    weights: tuple[Tensor, ...]
    config: ModelConfig
    levels: int
    tile: int
    device: torch.device
    sure: bool = True
    sure_window: int = 33
    sure_divergence: str = "one_pass"
    ensemble: int = 1
    sure_split: str = "none"

    @classmethod
    def build(
        cls,
        model: KPN,
        infer: InferConfig,
        *,
        precision: str | None = None,
        tile: int | None = None,
        device: str = "cpu",
        vkdt_matmul: str | None = None,
        sure: bool | None = None,
        ensemble: int | None = None,
    ) -> Denoiser:
        """A denoiser of ``model`` with ``infer``'s settings; arguments override them.

        ``vkdt_matmul`` (``--vkdt-matmul``): vkdt's matrix path under the ``vkdt-f16``
        precision, by default the model's (``coopmat`` when the model is not vkdt-f16).
        A bad argument is a :class:`~kpn.errors.ParameterError` naming it.
        """
        chosen = infer.precision if precision is None else precision
        tile = infer.tile if tile is None else tile
        whole = isinstance(tile, int) and not isinstance(tile, bool)
        if not whole or (tile != 0 and tile < MIN_TILE):
            raise ParameterError("tile", tile, f"must be 0 (untiled) or >= {MIN_TILE}")
        if sure is not None and not isinstance(sure, bool):
            raise ParameterError("sure", sure, "must be True or False (None: infer.sure's)")
        ensemble = infer.ensemble if ensemble is None else ensemble
        if isinstance(ensemble, bool) or ensemble not in ENSEMBLES:
            raise ParameterError(
                "ensemble", ensemble, f"must be one of {', '.join(map(str, ENSEMBLES))}"
            )
        torch_device = _device(device)
        model_precision = inference_precision(chosen, model.config.precision, torch_device)
        if vkdt_matmul is not None and vkdt_matmul not in VKDT_MATMULS:
            raise ParameterError(
                "vkdt_matmul", vkdt_matmul, f"expected one of {list(VKDT_MATMULS)}"
            )
        if vkdt_matmul is not None and model_precision != "vkdt-f16":
            raise ParameterError(
                "vkdt_matmul",
                vkdt_matmul,
                "vkdt's matrix paths are float16 arithmetic, this run computes in "
                f"{model_precision} (add {mention('precision', 'vkdt-f16')})",
            )
        if vkdt_matmul is None:
            own = model.config.vkdt_matmul
            vkdt_matmul = own if model_precision == "vkdt-f16" else "coopmat"
        config = dataclasses.replace(
            model.config, precision=model_precision, vkdt_matmul=vkdt_matmul
        )
        levels = infer.levels or model.config.levels
        weights = tuple(w.detach().to(torch_device) for w in model.mlp.weights)
        sure = infer.sure if sure is None else sure
        # float16's stores overflow the kernels' sampled response, divided by a step that a
        # faint noise profile makes tiny: the finite difference of two float16 passes does not
        one_pass = probe_applies(config) and model_precision != "vkdt-f16"
        divergence = infer.sure_divergence if one_pass else "two_pass"
        return cls(
            weights, config, levels, tile, torch_device, sure, infer.sure_window, divergence,
            ensemble, infer.sure_split,
        )  # fmt: skip

    def tiles(self, height: int, width: int) -> int:
        """Tiles an image of this size takes, each pass of the network and orientation
        (untiled: one a pass)."""
        one_pass = self.sure and self.sure_divergence == "one_pass"
        passes = 1 if one_pass or not self.sure else 2
        if self.tile == 0:
            return passes * self.ensemble
        tile = self.probe_tile if one_pass else self.tile
        empty = np.empty((height, width, 0), dtype=np.float32)  # an image's shape, turned
        shapes = [forward(empty).shape[:2] for forward, _ in ORIENTATIONS[: self.ensemble]]
        return passes * sum(
            plan_tiles(rows, columns, self.config, self.levels, tile).tiles
            for rows, columns in shapes
        )

    @property
    def probe_tile(self) -> int:
        """The tile side of the pass that carries SURE's probe: its images have twice the
        channels, so its tiles half the area, and its working set a plain pass's."""
        return max(MIN_TILE, round(self.tile / math.sqrt(2))) if self.tile else 0

    def __call__(
        self,
        image: np.ndarray,
        a: float,
        b: float,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Denoise a linear ``[H,W,3]`` float32 image with profile (a, b): a new array.

        Finite in, finite out: values the precision cannot hold (float16's range under
        ``vkdt-f16``) are a :class:`~kpn.errors.KpnError` up front, and a NaN or Inf in
        the output of a finite image, a bug, is one rather than a result.
        """
        self._check_range(image, a, b)
        if self.ensemble == 1:
            out = self._denoised(image, a, b, progress)
        else:
            out = np.zeros(image.shape, dtype=np.float32)
            for forward, inverse in ORIENTATIONS[: self.ensemble]:
                oriented = np.ascontiguousarray(forward(image))
                out += inverse(self._denoised(oriented, a, b, progress))
            out /= self.ensemble
        if not _all_finite(out) and _all_finite(image):
            raise KpnError(
                f"denoising gave NaN or Inf pixels from finite ones (noise profile (a, b) = "
                f"({a:.6g}, {b:.6g}), {self.config.precision}): a kpn bug, please report it"
            )
        return out

    def _denoised(
        self,
        image: np.ndarray,
        a: float,
        b: float,
        progress: Callable[[int], None] | None,
    ) -> np.ndarray:
        """One orientation's output: the network, with the SURE blend where it is on."""
        if not self.sure:
            out = self.network(image, a, b, progress)
        elif self.sure_divergence == "one_pass":
            out = sure_blend_one_pass(
                lambda noisy, signs, step: self.network_along(noisy, signs, step, a, b, progress),
                image,
                a,
                b,
                self.sure_window,
                self.sure_split,
            )
        else:
            out = sure_blend(
                lambda noisy: self.network(noisy, a, b, progress),
                image,
                a,
                b,
                self.sure_window,
                self.sure_split,
            )
        return out

    def _check_range(self, image: np.ndarray, a: float, b: float) -> None:
        """KpnError unless the network's input, and SURE's perturbed input, fit the
        precision: float16's 65504 under ``vkdt-f16`` (float32 and bfloat16 hold any
        float32 image)."""
        if self.config.precision != "vkdt-f16":
            return
        peak = float(np.abs(image).max(initial=0.0))
        reach = peak + (probe_step(image, a, b) if self.sure else 0.0)
        if reach > F16_MAX:
            probe = f" (with SURE's probe {reach:.6g})" if self.sure else ""
            raise KpnError(
                f"pixel values up to {peak:.6g}{probe} exceed float16's largest value, "
                f"{F16_MAX:.0f}: {mention('precision', 'vkdt-f16')} cannot hold them, "
                f"{mention('precision', 'fp32')} can"
            )

    def network(
        self,
        image: np.ndarray,
        a: float,
        b: float,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """The network alone on a linear ``[H,W,3]`` float32 image: a new array."""
        noisy = _planar(image).to(self.device)
        noise_ab = torch.tensor([[a, b]], dtype=torch.float32, device=self.device)
        out = np.empty_like(image, dtype=np.float32)
        on_cpu = self.device.type == "cpu"
        target = _planar(out) if on_cpu else None
        with torch.no_grad():
            if self.tile == 0:
                result = kpn_forward(
                    noisy.contiguous(), noise_ab, self.weights, self.config, self.levels
                ).output
                if progress is not None:
                    progress(1)
            else:
                result = tiled_forward(
                    noisy,
                    noise_ab,
                    self.weights,
                    self.config,
                    self.levels,
                    self.tile,
                    out=target,
                    progress=progress,
                )
        if result is not target:
            out[...] = result[0].permute(1, 2, 0).float().cpu().numpy()
        return out

    def network_along(
        self,
        image: np.ndarray,
        signs: np.ndarray,
        step: float,
        a: float,
        b: float,
        progress: Callable[[int], None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The network on a linear ``[H,W,3]`` float32 image and its derivative along the
        probe ``signs`` (int8 ``[H,W,3]``), the kernels' response sampled at ``step``, in
        one pass (:mod:`kpn.model.linearised`): two new float32 arrays."""
        noisy, probe = (_planar(array).to(self.device) for array in (image, signs))
        noise_ab = torch.tensor([[a, b]], dtype=torch.float32, device=self.device)
        outs = np.empty_like(image, dtype=np.float32), np.empty_like(image, dtype=np.float32)
        with torch.no_grad():
            if self.tile == 0:
                result = kpn_forward(
                    noisy.contiguous(), noise_ab, self.weights, self.config, self.levels,
                    keep_kernels=False, probe=probe, probe_step=step,
                ).output  # fmt: skip
                results = result[:, :3], result[:, 3:]
                if progress is not None:
                    progress(1)
            else:  # on the CPU straight into the arrays
                on_cpu = self.device.type == "cpu"
                results = tuple(_planar(out) if on_cpu else torch.empty_like(noisy) for out in outs)
                tiled_forward(
                    noisy, noise_ab, self.weights, self.config, self.levels, self.probe_tile,
                    out=results[0], progress=progress, probe=probe, probe_out=results[1],
                    probe_step=step,
                )  # fmt: skip
        if self.tile == 0 or self.device.type != "cpu":  # else written in place
            for out, result in zip(outs, results, strict=True):
                out[...] = result[0].permute(1, 2, 0).float().cpu().numpy()
        return outs


def _planar(array: np.ndarray) -> Tensor:
    """``[H,W,C] -> [1,C,H,W]``, a view."""
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)


def _all_finite(array: np.ndarray) -> bool:
    """Whether every value of ``[H,...]`` is finite, a band of rows at a time (a bool
    temporary of a band, not of a whole photo)."""
    return all(np.isfinite(array[top : top + ROWS]).all() for top in range(0, len(array), ROWS))


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices in hardware (AVX-512 BF16 or AMX on
    a CPU, compute capability 8 on CUDA): elsewhere bfloat16 is emulated, and slower."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if not torch.backends.mkldnn.is_available():
        return False
    try:  # oneDNN's own check (a private op): absent from some torch builds
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def inference_precision(chosen: str, model_precision: str, device: torch.device) -> str:
    """The model precision to denoise with for ``--precision`` / ``infer.precision``.

    ``model``: the model's own. ``auto`` (the default): the model's own, but a float32
    model runs ``bf16`` where the device has native bfloat16 (:func:`native_bf16`): the
    output changes by at most 0.002 dB PSNR on the benchmark photos at every noise
    level, for 1.2 to 1.4 times the speed at 1 Mpx (``benchmarks/speed.py``; README, Speed).
    ``fp32``, ``bf16`` and ``vkdt-f16`` as named.
    """
    if chosen not in ("auto", "model", "fp32", "bf16", "vkdt-f16"):
        raise ParameterError("precision", chosen, "expected auto, model, fp32, bf16 or vkdt-f16")
    if chosen == "model":
        return model_precision
    if chosen == "auto":
        return "bf16" if model_precision == "fp32" and native_bf16(device) else model_precision
    return chosen


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ParameterError("device", name, "CUDA is not available here (torch sees no GPU)")
    if name not in ("cpu", "cuda"):
        raise ParameterError("device", name, "expected cpu or cuda")
    return torch.device(name)
