"""Tests for weights that carry their model and the Python API (issue 14, items 4 and 5).

One tiny design run (3 steps of 16 x 16 tiles) is trained once; its ``weights.lut`` must
run as that run's model, and ``kpn.load`` / ``kpn.denoise`` must give what
:class:`kpn.infer.denoiser.Denoiser` gives, in the input's type and shape.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import kpn
import kpn.infer.weights as weights_module
from kpn.__main__ import main as kpn_main
from kpn.config import MIN_TILE, load_config
from kpn.errors import KpnError, ParameterError
from kpn.infer.cli import main as infer_main
from kpn.infer.denoiser import Denoiser, native_bf16
from kpn.infer.weights import load_weights
from kpn.io.images import read_any
from kpn.io.pfm import write_pfm
from kpn.train.cli import main as train_main
from kpn.vkdt.export import lut_trailer
from kpn.vkdt.lut import read_lut, write_lut

from conftest import assert_one_line_error

ROOT = Path(__file__).resolve().parent.parent
DESIGN = ROOT / "tests" / "fixtures" / "design-vkdt.toml"  # the design as vkdt runs it
TINY = [
    "train.steps=3",
    "data.batch=1",
    "data.tile=16",
    "data.validation_count=1",
    "data.validation_tile=16",
    "data.workers=0",
]
A, B = 20000.0, 4.0


pytestmark = pytest.mark.usefixtures("one_thread")  # small images


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A tiny design run in ``folder/run``: checkpoint.pt, config.toml, weights.lut."""
    folder = tmp_path_factory.mktemp("api")
    settings = [item for override in TINY for item in ("--set", override)]
    # the design (kpn's star15_snr input, psnr loss) at W 32, to stay quick
    design = ROOT / "configs" / "design.toml"
    settings += ["--set", "model.width=32"]
    assert train_main(["--config", str(design), "--out", str(folder / "run"), *settings]) == 0
    return SimpleNamespace(folder=folder, run=folder / "run", lut=folder / "run" / "weights.lut")


def noisy_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth gradient with Gaussian noise: linear RGB ``[H,W,3]`` float32."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    clean = np.stack((0.2 + 0.6 * x, 0.1 + 0.7 * y, 0.5 - 0.3 * x * y), axis=-1)
    noise = 0.03 * np.random.default_rng(seed).standard_normal((height, width, 3))
    return (clean + noise).astype(np.float32)


def reference(
    run: Path, image: np.ndarray, a: float = A, b: float = B, **build: object
) -> np.ndarray:
    """What kpn.infer.denoiser's Denoiser gives for ``image`` with the run's weights."""
    loaded = load_weights(run)
    return Denoiser.build(loaded.model, loaded.config.infer, **build)(image, a, b)  # type: ignore[arg-type]


def infer_cli(capsys: pytest.CaptureFixture[str], *argv: object) -> str:
    code = infer_main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    assert (code, captured.err) == (0, ""), captured.err
    return captured.out


# --- item 4: a run's weights.lut runs as the run's model ------------------------------
def assert_image_close(path: Path, want: np.ndarray) -> None:
    """The PFM at ``path`` equals ``want`` to float32 round-off (torch's fp32 defaults)."""
    torch.testing.assert_close(torch.from_numpy(read_any(path)), torch.from_numpy(want))


def test_run_lut_infers_as_the_run(
    trained: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """infer --weights RUN/weights.lut equals infer --weights RUN with the weights rounded
    to float16 (what the file stores); an f32 export equals the run itself."""
    image = noisy_image(37, 29)
    write_pfm(tmp_path / "x.pfm", image)
    noise = ["--noise-a", A, "--noise-b", B]

    def infer(weights: Path, output: str) -> str:
        return infer_cli(
            capsys, tmp_path / "x.pfm", "--weights", weights, *noise, "-o", tmp_path / output
        )

    out_run, out_lut = infer(trained.run, "run.pfm"), infer(trained.lut, "lut.pfm")
    assert "kpn section" in out_lut
    # the design's 4 levels in float32 (bfloat16 products where native), not
    # vkdt-head-w32's 6 levels in float16
    precision = "bf16" if native_bf16(torch.device("cpu")) else "fp32"
    assert f"4 levels, {precision}," in out_run and f"4 levels, {precision}," in out_lut
    assert_image_close(tmp_path / "run.pfm", reference(trained.run, image))
    loaded = load_weights(trained.run)
    with torch.no_grad():
        for weight in loaded.model.mlp.weights:
            weight.copy_(weight.half().float())
    assert_image_close(
        tmp_path / "lut.pfm", Denoiser.build(loaded.model, loaded.config.infer)(image, A, B)
    )

    # python -m kpn export writes the run's file again (for vkdt as it is, warning that it
    # cannot run it), and with --dtype f32 one that infers as the run itself
    for dtype in ("f16", "f32"):
        argv = ["export", str(trained.run), "-o", str(tmp_path / f"{dtype}.lut"), "--dtype", dtype]
        assert kpn_main([*argv, "--vkdt-target", "head"]) == 0
        assert_one_line_error(capsys.readouterr().err, "star15_snr", starts="warning: ")
    assert (tmp_path / "f16.lut").read_bytes() == trained.lut.read_bytes()
    infer(tmp_path / "f32.lut", "f32.pfm")
    assert_image_close(tmp_path / "f32.pfm", read_any(tmp_path / "run.pfm"))


def test_run_lut_trailer_is_vkdts(trained: SimpleNamespace) -> None:
    """The run's file starts its text with kpn-t's lines as they were, then kpn's section."""
    raw = trained.lut.read_bytes()
    config = load_config(trained.run / "config.toml")
    block = 16 + (config.model.n_hidden + 1) * config.model.width**2 * 2
    vkdt_text = (lut_trailer(config) + "\n").encode()
    assert raw[block : block + len(vkdt_text)] == vkdt_text
    assert raw[block + len(vkdt_text) :].startswith(b"kpn config:\n[model]\n")
    lut = read_lut(trained.lut)
    assert (lut.model, lut.infer) == (config.model, config.infer)


# --- item 5: kpn.load and kpn.denoise --------------------------------------------------
def test_load_and_denoise_numpy_from_another_directory(
    trained: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(trained.folder)  # a relative run path, nothing read from the repo's cwd
    image = noisy_image(40, 44)
    want = reference(trained.run, image)
    model = kpn.load("run")
    assert isinstance(model, kpn.Model) and model.config == load_config("run/config.toml")
    got = model(image, (A, B))
    assert got.shape == image.shape and got.dtype == np.float32
    torch.testing.assert_close(torch.from_numpy(got), torch.from_numpy(want), rtol=0, atol=0)
    torch.testing.assert_close(
        torch.from_numpy(kpn.denoise(image, (A, B), weights="run")),
        torch.from_numpy(want),
        rtol=0,
        atol=0,
    )
    torch.testing.assert_close(
        torch.from_numpy(kpn.denoise(image, [A, B], weights=model)),
        torch.from_numpy(want),
        rtol=0,
        atol=0,
    )
    # float64 in, float64 out: computed in float32
    double = kpn.denoise(image.astype(np.float64), np.array([A, B]), weights=model)
    assert double.dtype == np.float64
    np.testing.assert_array_equal(double, want.astype(np.float64))
    # the .lut: the same model from its kpn section (its float16 weights)
    from_lut = kpn.load("run/weights.lut")
    assert from_lut.config.model == model.config.model and "kpn section" in from_lut.description


def test_denoise_tiles_for_bounded_memory(trained: SimpleNamespace) -> None:
    image = noisy_image(45, 38, seed=3)
    tiled = kpn.load(trained.run, tile=16)
    assert tiled.denoiser.tiles(45, 38) > 4
    untiled = kpn.load(trained.run, tile=0)
    torch.testing.assert_close(
        torch.from_numpy(tiled(image, (A, B))),
        torch.from_numpy(untiled(image, (A, B))),
        rtol=0,
        atol=1e-5,
    )


def test_denoise_torch_tensors(trained: SimpleNamespace) -> None:
    model = kpn.load(trained.run)
    images = [noisy_image(24, 30, seed=s) for s in (1, 2)]
    profiles = [(A, B), (3000.0, 1.5)]
    wants = [reference(trained.run, i, *p) for i, p in zip(images, profiles, strict=True)]
    batch = torch.stack([torch.from_numpy(i).permute(2, 0, 1) for i in images])  # [2,3,H,W]
    got = model(batch, torch.tensor(profiles))
    assert got.shape == batch.shape and got.dtype == torch.float32
    for index, want in enumerate(wants):
        torch.testing.assert_close(
            got[index], torch.from_numpy(want).permute(2, 0, 1), rtol=0, atol=0
        )
    one = kpn.denoise(batch[1].double(), profiles[1], weights=model)  # [3,H,W] float64
    assert one.shape == batch[1].shape and one.dtype == torch.float64
    torch.testing.assert_close(one, got[1].double(), rtol=0, atol=0)
    same = model(batch, (A, B))  # one profile for the whole batch
    torch.testing.assert_close(same[0], got[0], rtol=0, atol=0)


def test_denoise_is_finite_for_every_profile_it_accepts(trained: SimpleNamespace) -> None:
    """A batch's per-image profiles from none to float32's largest (issue 22: b = 1e34
    gave NaN through the SURE blend); tests/infer/test_extreme_profiles.py sweeps them."""
    model = kpn.load(trained.run, sure=True)
    batch = torch.stack([torch.from_numpy(noisy_image(24, 24, seed=s)) for s in range(4)])
    profiles = torch.tensor([[0.0, 1e34], [1e-30, 0.0], [3e38, 3e38], [0.0, 0.0]])
    got = model(batch.permute(0, 3, 1, 2), profiles)
    assert bool(got.isfinite().all())


def test_load_default_is_the_first_shipped_model(
    trained: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = tmp_path / weights_module.SHIPPED[0]
    shutil.copytree(trained.run, default)
    monkeypatch.setattr(weights_module, "SHIPPED_DIR", tmp_path)
    image = noisy_image(20, 22)
    model = kpn.load()
    assert str(default) in model.description
    want = reference(trained.run, image)
    np.testing.assert_array_equal(model(image, (A, B)), want)
    np.testing.assert_array_equal(kpn.denoise(image, (A, B)), want)
    monkeypatch.setattr(weights_module, "SHIPPED_DIR", tmp_path / "none")
    with pytest.raises(KpnError, match="no shipped weights"):
        kpn.load()


def test_load_vkdt_lut_needs_config_or_preset(trained: SimpleNamespace, tmp_path: Path) -> None:
    """A file without kpn's section (vkdt's): refused unless told; a preset tells it."""
    loaded = load_weights(trained.run)
    vkdt = tmp_path / "vkdt.lut"
    matrices = [w.detach() for w in loaded.model.mlp.weights]
    write_lut(vkdt, matrices, in_width=32, trailer=lut_trailer(loaded.config))
    with pytest.raises(KpnError) as error:
        kpn.load(vkdt)
    line = assert_one_line_error(error, "config='FILE'", "preset='vkdt-head-w32'")
    assert "--" not in line  # the library names its parameters, not kpn-infer's flags
    model = kpn.load(vkdt, preset="vkdt-head-w32")
    assert model.config.model.block_transpose and model.denoiser.levels == 6
    assert kpn.load(vkdt, config=DESIGN).config.model == load_config(DESIGN).model


def bad(image: object = None, profile: object = (A, B)) -> tuple[object, object]:
    return (noisy_image(8, 9) if image is None else image), profile


def nan_image() -> np.ndarray:
    image = noisy_image(8, 9)
    image[3, 4, 1] = np.nan
    return image


def inf_batch() -> torch.Tensor:
    batch = torch.zeros(2, 3, 8, 9)
    batch[1, 0, 2, 2] = torch.inf
    return batch


BAD_INPUTS = {
    "2d": (bad(np.zeros((8, 9), np.float32)), ["[H,W,3]", "[8, 9]"]),
    "4_channels": (bad(np.zeros((8, 9, 4), np.float32)), ["shape [8, 9, 4]"]),
    "channels_first_numpy": (bad(np.zeros((3, 8, 9), np.float32)), ["shape [3, 8, 9]"]),
    "integers": (bad(np.zeros((8, 9, 3), np.uint16)), ["dtype uint16"]),
    "tensor_2_channels": (bad(torch.zeros(2, 8, 9)), ["torch tensor of shape [2, 8, 9]"]),
    "tensor_5d": (bad(torch.zeros(1, 1, 3, 8, 9)), ["[1, 1, 3, 8, 9]"]),
    "tensor_int": (bad(torch.zeros(3, 8, 9, dtype=torch.int32)), ["dtype int32"]),
    "list": (bad([[0.5, 0.5, 0.5]]), ["got list"]),
    "empty": (bad(np.zeros((0, 9, 3), np.float32)), ["no pixels"]),
    "nan": (bad(nan_image()), ["NaN or Inf"]),
    "inf_in_batch": (bad(inf_batch()), ["image 1", "NaN or Inf"]),
    "negative_a": (bad(profile=(-1.0, B)), ["profile=[-1.0, 4.0]", ">= 0"]),
    "negative_b": (bad(profile=(A, -0.5)), [">= 0"]),
    "nan_profile": (bad(profile=(float("nan"), B)), ["finite"]),
    "one_number": (bad(profile=A), ["profile of shape []", "(a, b)"]),
    "three_numbers": (bad(profile=(A, B, 1.0)), ["shape [3]"]),
    "per_image_for_one": (bad(profile=[[A, B]]), ["shape [1, 2]"]),
    "batch_rows": (bad(torch.zeros(2, 3, 8, 9), [[A, B]] * 3), ["[2, 2], one (a, b) per image"]),
    "text": (bad(profile="loud"), ["profile='loud'"]),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_inputs_are_one_line(trained: SimpleNamespace, case: str) -> None:
    (image, profile), words = BAD_INPUTS[case]
    model = kpn.load(trained.run)
    with pytest.raises(KpnError) as error:
        model(image, profile)  # type: ignore[arg-type]
    assert_one_line_error(error, *words)


def test_load_bad_paths(trained: SimpleNamespace, tmp_path: Path) -> None:
    with pytest.raises(KpnError) as error:
        kpn.load(tmp_path / "absent")
    assert_one_line_error(error, f"path={str(tmp_path / 'absent')!r}: no such weights file")
    with pytest.raises(KpnError) as error:
        kpn.load(trained.run, preset="vkdt-head-w32")
    assert_one_line_error(error, "preset='vkdt-head-w32': ", "run or checkpoint", "(preset is")
    with pytest.raises(KpnError, match="leave preset out"):
        kpn.load(trained.lut, preset="vkdt-head-w32")
    with pytest.raises(KpnError, match="bf16 or vkdt-f16"):
        kpn.load(trained.run, precision="fp16")


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        ({"tile": 5}, [f"tile=5: must be 0 (untiled) or >= {MIN_TILE}"]),
        ({"tile": "64"}, ["tile='64': must be 0"]),
        ({"precision": "fp16"}, ["precision='fp16': expected auto, model, fp32"]),
        ({"device": "gpu"}, ["device='gpu': expected cpu or cuda"]),
        ({"sure": "yes"}, ["sure='yes': must be True or False"]),
    ],
)
def test_load_errors_name_the_keyword(
    trained: SimpleNamespace, arguments: dict[str, object], words: list[str]
) -> None:
    """The library names its parameters as keywords; no command-line flag appears."""
    with pytest.raises(ParameterError) as error:
        kpn.load(trained.run, **arguments)  # type: ignore[arg-type]
    assert_one_line_error(error, *words)
    assert "--" not in str(error.value)
