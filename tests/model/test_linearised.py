"""kpn.model.linearised: a probe carried through the network's own pass is the network
with its kernels and alphas held (against autograd and a brute-force Jacobian diagonal),
plus the response of level 0's kernels and alpha on a quarter of its pixels (against
autograd); the image's channels unchanged; tiles as the whole; bad probes refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import Tensor
from torch.testing import assert_close

import kpn.model.level_filter as level_filter
import kpn.model.network as network
from kpn.config import ModelConfig, load_config
from kpn.errors import KpnError
from kpn.model.linearised import SAMPLE_STRIDE, Response, _mirror_padded
from kpn.model.network import KPNOutput, kpn_forward
from kpn.model.pyramid import smooth_box2_bspline, smooth_post_diff
from kpn.model.sampling import pad_symmetric
from kpn.model.tiling import tiled_forward

from model_shared import F64, model_config, vkdt_init_weights

pytestmark = pytest.mark.usefixtures("one_thread")  # small images

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DESIGN = ModelConfig()  # box2, bspline, mip, mix, star15_snr, sigmoid alpha
VKDT_2024 = load_config(CONFIGS / "vkdt-2024-02.toml").model
# every blend and expansion, a guide, and alphas that respond and that do not
CASES = {
    "design": DESIGN,
    "add_detail_bilinear_const": dataclasses.replace(
        DESIGN,
        down="binomial5",
        up="bilinear",
        mlp_input="detail",
        blend="add",
        features="star15",
        alpha_activation="const",
    ),
    "post_diff_lowpass": dataclasses.replace(DESIGN, blend="post_diff", noise_luminance="lowpass"),
    "guide": dataclasses.replace(DESIGN, guide="centre"),
    "mix_chroma": dataclasses.replace(DESIGN, chroma_kernel=True),  # two alphas respond
    "post_diff_chroma": dataclasses.replace(
        DESIGN, blend="post_diff", chroma_kernel=True, chroma_input=True
    ),
    "post_diff_chroma_star21": dataclasses.replace(
        DESIGN, blend="post_diff", chroma_kernel=True, chroma_input=True, kernel_taps="star21"
    ),
}
NOISE = torch.tensor([[2e5, 40.0]])


def image_and_probe(height: int, width: int, dtype: torch.dtype = F64) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(5)
    image = 0.3 + 0.4 * torch.rand(1, 3, height, width, generator=generator, dtype=dtype)
    signs = torch.randint(0, 2, (1, 3, height, width), generator=generator, dtype=torch.int8)
    return image, 2 * signs - 1


def weights_of(config: ModelConfig, dtype: torch.dtype = F64) -> list[Tensor]:
    """vkdt's initialisation with an output layer 20 times its scale: kernels and alphas
    that vary from pixel to pixel, as a trained network's do."""
    weights = [w.to(dtype) for w in vkdt_init_weights(config, seed=3)]
    return [*weights[:-1], 20 * weights[-1]]


@pytest.fixture
def live_levels(monkeypatch: pytest.MonkeyPatch) -> set[int]:
    """The levels whose network output autograd differentiates; every other level's
    kernels and alpha are held (detached). Empty: the network with every kernel held."""
    live: set[int] = set()
    current = {"level": -1}
    filter_level, mlp = network.filter_level, level_filter.mlp_forward_planar

    def tracked_filter(*args: object, **kwargs: object) -> object:
        current["level"] = args[2]
        return filter_level(*args, **kwargs)

    def held_mlp(*args: object, **kwargs: object) -> Tensor:
        out = mlp(*args, **kwargs)
        return out if current["level"] in live else out.detach()

    monkeypatch.setattr(network, "filter_level", tracked_filter)
    monkeypatch.setattr(level_filter, "mlp_forward_planar", held_mlp)
    return live


def part_of(out: KPNOutput, part: str) -> Tensor:
    """O_0 (``output``) or level 0's I (``filtered``)."""
    return out.output if part == "output" else out.levels[0].filtered


def derivative(
    config: ModelConfig, image: Tensor, probe: Tensor, levels: int, part: str = "output"
) -> Tensor:
    """d/dt of the network's ``part`` at ``image + t probe`` by autograd: ``[1,3,h,w]``."""
    weights = weights_of(config)

    def network_of(noisy: Tensor) -> Tensor:
        return part_of(kpn_forward(noisy, NOISE, weights, config, levels), part)

    return torch.autograd.functional.jvp(network_of, image, probe.to(image.dtype))[1]


def probed(
    config: ModelConfig,
    image: Tensor,
    probe: Tensor,
    levels: int,
    step: float = 0.0,
    part: str = "output",
) -> Tensor:
    """The network's ``part`` in the pass with the probe: ``[1,6,h,w]``."""
    weights = weights_of(config, image.dtype)
    with torch.no_grad():
        out = kpn_forward(image, NOISE, weights, config, levels, probe=probe, probe_step=step)
    return part_of(out, part)


@pytest.mark.parametrize("config", CASES.values(), ids=CASES.keys())
def test_the_probe_is_the_network_with_its_kernels_held(config, live_levels) -> None:
    image, probe = image_and_probe(13, 18)
    held = derivative(config, image.requires_grad_(), probe, levels=3)
    assert_close(probed(config, image.detach(), probe, levels=3)[:, 3:], held)


def test_unit_probes_give_the_diagonal_of_the_held_networks_jacobian(live_levels) -> None:
    """The divergence SURE reads, brute force: probe e_j gives column j, whose entry j
    is the diagonal entry autograd's Jacobian has."""
    image, _ = image_and_probe(5, 6)
    weights = weights_of(DESIGN)

    def network_of(noisy: Tensor) -> Tensor:
        return kpn_forward(noisy, NOISE, weights, DESIGN, 2, keep_kernels=False).output

    jacobian = torch.autograd.functional.jacobian(network_of, image).reshape(image.numel(), -1)
    units = torch.eye(image.numel(), dtype=F64).reshape(-1, *image.shape[1:])
    diagonal = torch.stack(
        [(probed(DESIGN, image, unit[None], 2)[:, 3:] * unit).sum() for unit in units]
    )
    assert_close(diagonal, jacobian.diagonal())
    assert diagonal.min() > 0.01  # a real check: every pixel keeps some of itself


POINTWISE = {name: config for name, config in CASES.items() if config.blend != "post_diff"}


@pytest.mark.parametrize(
    ("config", "part"),
    [(config, "output") for config in POINTWISE.values()]
    + [(config, "filtered") for config in CASES.values()],
    ids=[f"{name}-output" for name in POINTWISE] + [f"{name}-filtered" for name in CASES],
)
def test_level_zeros_response_is_added_on_every_second_row_and_column(
    config: ModelConfig, part: str, live_levels: set[int]
) -> None:
    """With level 0's kernels and alpha live in autograd, the sampled response is
    SAMPLE_STRIDE**2 times their derivative at the sampled pixels, nothing elsewhere: in
    I (the kernels'), and in O where the blend is pixel by pixel (the alpha's too;
    post_diff's smoothing spreads O's)."""
    image, probe = image_and_probe(12, 15)
    held = derivative(config, image.clone().requires_grad_(), probe, 2, part)
    live_levels.add(0)
    response = derivative(config, image.clone().requires_grad_(), probe, 2, part) - held
    step = 1e-8  # float64: the finite difference of a network with leaky relu kinks
    moved, still = (probed(config, image, probe, 2, at, part) for at in (step, 0.0))
    added = (moved - still)[:, 3:]
    sampled = torch.zeros_like(added, dtype=torch.bool)
    sampled[..., ::SAMPLE_STRIDE, ::SAMPLE_STRIDE] = True
    assert_close(added[sampled], SAMPLE_STRIDE**2 * response[sampled], rtol=1e-4, atol=1e-6)
    assert not added[~sampled].any()
    assert response[sampled].abs().max() > 0.01  # the kernels do respond to the probe


@pytest.mark.parametrize(
    ("blend", "vkdt_border"),
    [("mix", False), ("add", False), ("post_diff", False), ("post_diff", True)],
)
def test_alphas_response_is_its_change_times_the_blends_slope(
    blend: str, vkdt_border: bool
) -> None:
    generator = torch.Generator().manual_seed(2)
    coarse_up, filtered, output = (
        torch.rand(1, 6, 6, 7, generator=generator, dtype=F64) for _ in range(3)
    )
    alpha = torch.rand(1, 1, 6, 7, generator=generator, dtype=F64)
    moved = alpha[..., ::2, ::2] + 1e-3
    response = Response(step=1e-3, filtered=filtered[:, :3, ::2, ::2], alpha=moved)
    config = model_config(
        blend=blend,
        mlp_input="detail" if blend == "add" else "mip",
        vkdt_post_diff_border=vkdt_border,
    )
    got = response.add_to_output(output.clone(), coarse_up, filtered, alpha, config)
    smooth = smooth_post_diff if vkdt_border else smooth_box2_bspline
    slope = {  # dO/dalpha, written out (design §5)
        "mix": filtered[:, :3] - coarse_up[:, :3],
        "add": filtered[:, :3],
        "post_diff": filtered[:, :3] - smooth(filtered[:, :3]),
    }[blend]
    want = output.clone()
    want[:, 3:, ::2, ::2] += SAMPLE_STRIDE**2 * slope[..., ::2, ::2]
    assert_close(got, want)


@pytest.mark.parametrize(
    "config",
    [DESIGN, VKDT_2024, CASES["guide"], CASES["post_diff_chroma"]],
    ids=["design", "vkdt_2024", "guide", "post_diff_chroma"],
)
def test_the_image_is_the_same_with_a_probe(config: ModelConfig) -> None:
    image, probe = image_and_probe(21, 26, torch.float32)
    weights = weights_of(config, torch.float32)
    with torch.no_grad():
        alone = kpn_forward(image, NOISE, weights, config, 3).output
        both = kpn_forward(image, NOISE, weights, config, 3, probe=probe, probe_step=1e-2).output
    assert torch.equal(both[:, :3], alone)


@pytest.mark.parametrize(
    "config",
    [DESIGN, VKDT_2024, CASES["guide"], CASES["post_diff_chroma"]],
    ids=["design", "vkdt_2024", "guide", "post_diff_chroma"],
)
def test_tiles_compute_what_the_whole_image_does(config: ModelConfig) -> None:
    image, probe = image_and_probe(45, 38, torch.float32)
    weights = weights_of(config, torch.float32)
    out, derivative_out = torch.empty_like(image), torch.empty_like(image)
    with torch.no_grad():
        whole = kpn_forward(image, NOISE, weights, config, 3, probe=probe, probe_step=1e-2).output
        tiled_forward(
            image, NOISE, weights, config, 3, 10, out=out, probe=probe,
            probe_out=derivative_out, probe_step=1e-2,
        )  # fmt: skip
    assert torch.equal(out, whole[:, :3])
    assert_close(derivative_out, whole[:, 3:], rtol=1e-3, atol=1e-3)


def test_the_mirror_padding_is_pad_symmetrics() -> None:
    image = torch.arange(2 * 3 * 5 * 4, dtype=torch.float32).reshape(2, 3, 5, 4)
    for padding in [(2, 2, 2, 2), (4, 3, 4, 3), (0, 1, 3, 0), (5, 5, 6, 6)]:
        assert torch.equal(_mirror_padded(image, *padding), pad_symmetric(image, *padding))


BAD = {
    "shape": (lambda image: image[..., :-1], 0.1, "the image's shape"),
    "not_a_tensor": (lambda image: image.numpy(), 0.1, "the image's shape"),
    "nan_step": (lambda image: image, float("nan"), "finite and >= 0"),
    "negative_step": (lambda image: image, -1.0, "finite and >= 0"),
}


@pytest.mark.parametrize(("make", "step", "words"), BAD.values(), ids=BAD.keys())
def test_a_bad_probe_is_refused(make, step: float, words: str) -> None:
    image, probe = image_and_probe(8, 8, torch.float32)
    with pytest.raises(KpnError, match=words):
        kpn_forward(image, NOISE, weights_of(DESIGN, torch.float32), DESIGN, 2,
                    probe=make(probe), probe_step=step)  # fmt: skip


def test_a_probe_is_refused_under_the_block_transpose_and_without_an_output() -> None:
    image, probe = image_and_probe(8, 8, torch.float32)
    head = load_config(CONFIGS / "vkdt-head-w32.toml").model
    with pytest.raises(KpnError, match="block transpose"):
        kpn_forward(image, NOISE, weights_of(head, torch.float32), head, 2, probe=probe)
    with pytest.raises(KpnError, match="probe_out"):
        tiled_forward(image, NOISE, weights_of(DESIGN, torch.float32), DESIGN, 2, 8, probe=probe)
