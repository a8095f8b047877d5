"""kpn.data.loader, kpn.data.sources, kpn.data.folders: datasets, the seeded stream, the
loader, the validation set, the images of folders and their errors."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from torch.testing import assert_close

from kpn.config import DataConfig, config_from_dict
from kpn.data.loader import (
    TRAINING,
    VALIDATION,
    StreamBatches,
    TrainingBatch,
    collate,
    make_dataset,
    make_loader,
    sample_generator,
    training_batches,
    validation_set,
)
from kpn.data.sources import ImagePair, texture, textured_crop
from kpn.data.synthesis import bayer_mosaic
from kpn.errors import KpnError
from kpn.io.pfm import write_pfm

from conftest import assert_one_line_error

SMALL = {"tile": 16, "batch": 4, "validation_tile": 16, "validation_count": 3}


def small(**changes) -> DataConfig:
    return DataConfig(**{**SMALL, **changes})


def ramp(height: int, width: int, offset: float = 0.0) -> np.ndarray:
    """``[H,W,3]`` float32, value (100c + 10y + x) / 1000 + offset."""
    c = np.arange(3)[None, None, :]
    y = np.arange(height)[:, None, None]
    x = np.arange(width)[None, :, None]
    return ((100 * c + 10 * y + x) / 1000 + offset).astype(np.float32)


def chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image.transpose(2, 0, 1).copy())


def write_camera_tiff(path: Path, image: np.ndarray, maker: str, model: str, iso: int) -> None:
    """A float TIFF with the Make, Model and ISO tags a camera writes."""
    tags = [(271, "s", 0, maker, True), (272, "s", 0, model, True), (34855, "H", 1, iso, True)]
    tifffile.imwrite(path, image, photometric="rgb", extratags=tags)


def same_batch(first: TrainingBatch, second: TrainingBatch) -> bool:
    return all(
        torch.equal(getattr(first, f.name), getattr(second, f.name))
        for f in dataclasses.fields(TrainingBatch)
    )


# ---------------------------------------------------------------- the stream


def test_deadleaves_samples_shapes_and_profiles():
    dataset = make_dataset(small(), seed=3)
    samples = dataset.__getitems__(range(5))
    batch = collate(samples)
    assert batch.noisy.shape == (5, 3, 16, 16) and batch.reference.shape == (5, 3, 16, 16)
    assert batch.noise_ab.shape == (5, 2)
    for tensor in (batch.noisy, batch.reference, batch.noise_ab):
        assert tensor.dtype == torch.float32 and torch.isfinite(tensor).all()
    # vkdt's (a, b) law by default, and the noisy input really is noisier
    assert (batch.noise_ab[:, 0] < 1000 * 65535).all() and (batch.noise_ab[:, 1] < 1000).all()
    assert not torch.equal(batch.noisy, batch.reference)


def test_sample_is_a_pure_function_of_seed_and_index():
    dataset = make_dataset(small(), seed=3)
    alone = dataset[7]
    in_batch = dataset.__getitems__([5, 6, 7, 8])[2]
    again = make_dataset(small(), seed=3)[7]
    for field in ("noisy", "reference", "noise_ab"):
        assert torch.equal(getattr(alone, field), getattr(in_batch, field))
        assert torch.equal(getattr(alone, field), getattr(again, field))
    assert not torch.equal(alone.reference, dataset[8].reference)
    assert not torch.equal(alone.reference, make_dataset(small(), seed=4)[7].reference)
    other_stream = make_dataset(small(), seed=3, stream=VALIDATION)[7]
    assert not torch.equal(alone.reference, other_stream.reference)


def test_told_jitter_scales_the_told_profile_only_in_training():
    """data.noise_told_jitter: the tiles are the exact ones, their profile a and b both
    times f^2 with f within [1/2, 2] and spread over it; validation is told exactly."""
    exact = make_dataset(small(), seed=3).__getitems__(range(64))
    jittered = make_dataset(small(noise_told_jitter=2.0), seed=3).__getitems__(range(64))
    factors = []
    for plain, moved in zip(exact, jittered, strict=True):
        assert torch.equal(plain.noisy, moved.noisy) and torch.equal(
            plain.reference, moved.reference
        )
        squared = moved.noise_ab / plain.noise_ab
        assert_close(squared[0], squared[1])
        factors.append(float(squared[0]) ** 0.5)
    assert 0.5 <= min(factors) < 0.6 and 1.7 < max(factors) <= 2.0
    assert min(abs(np.log2(factors))) < 0.1  # near 1 too: log-uniform
    validation = make_dataset(small(noise_told_jitter=2.0), seed=3, stream=VALIDATION)[5]
    assert torch.equal(
        validation.noise_ab, make_dataset(small(), seed=3, stream=VALIDATION)[5].noise_ab
    )


def test_stream_batches_indices():
    assert list(itertools.islice(StreamBatches(10, 3), 2)) == [[10, 11, 12], [13, 14, 15]]
    rank1 = StreamBatches(10, 3, rank=1, world=2)
    assert list(itertools.islice(rank1, 2)) == [[13, 14, 15], [19, 20, 21]]


def test_loader_batches_do_not_depend_on_worker_count():
    dataset = make_dataset(small(), seed=11)
    serial = list(itertools.islice(make_loader(dataset, 4, workers=0, start=8), 3))
    parallel = list(itertools.islice(make_loader(dataset, 4, workers=2, start=8), 3))
    assert all(same_batch(a, b) for a, b in zip(serial, parallel, strict=True))
    assert isinstance(serial[0], TrainingBatch)
    assert serial[0].noisy.shape == (4, 3, 16, 16)


def test_resume_is_starting_at_the_samples_seen():
    config = small(workers=0)
    from_zero = list(itertools.islice(training_batches(config, seed=5), 3))
    resumed = next(training_batches(config, seed=5, start=2 * config.batch))
    assert same_batch(from_zero[2], resumed)
    assert not same_batch(from_zero[1], resumed)


def test_data_parallel_ranks_split_the_single_process_stream():
    config = small(workers=0)
    whole = next(training_batches(dataclasses.replace(config, batch=8), seed=5, start=16))
    rank0 = next(training_batches(config, seed=5, start=16, rank=0, world=2))
    rank1 = next(training_batches(config, seed=5, start=16, rank=1, world=2))
    assert torch.equal(torch.cat([rank0.noisy, rank1.noisy]), whole.noisy)
    assert torch.equal(torch.cat([rank0.noise_ab, rank1.noise_ab]), whole.noise_ab)


def test_training_batch_to():
    batch = collate(make_dataset(small(), seed=1).__getitems__([0, 1]))
    moved = batch.to("cpu")
    assert same_batch(batch, moved)
    if torch.cuda.is_available():
        assert batch.pin_memory().noisy.is_pinned()


# ---------------------------------------------------------------- validation set


def test_validation_set_identical_across_calls():
    config = small(validation_count=5, validation_tile=24)
    first = validation_set(config)
    second = validation_set(config)
    assert same_batch(first, second)
    assert first.noisy.shape == (5, 3, 24, 24) and first.noise_ab.shape == (5, 2)
    assert not torch.equal(first.noisy[0], first.noisy[1])
    # not the training stream's tiles, even with the same seed and tile size
    same_size = dataclasses.replace(config, validation_tile=16, validation_seed=0)
    training = make_dataset(same_size, seed=0)[0].reference
    assert not torch.equal(validation_set(same_size).reference[0], training)
    moved_seed = validation_set(dataclasses.replace(config, validation_seed=1))
    assert not torch.equal(first.reference, moved_seed.reference)
    # data.transpose augments training's tiles only: runs with and without it compare
    transposing = dataclasses.replace(config, transpose=True)
    assert same_batch(validation_set(transposing), first)
    plain, transposed = make_dataset(config, seed=0), make_dataset(transposing, seed=0)
    assert any(not torch.equal(plain[i].reference, transposed[i].reference) for i in range(8))
    # so does data.grain
    graining = dataclasses.replace(config, grain=0.05)
    assert same_batch(validation_set(graining), first)
    grainy = make_dataset(graining, seed=0)
    assert any(not torch.equal(plain[i].reference, grainy[i].reference) for i in range(8))


def test_validation_uses_held_out_folder(tmp_path: Path):
    train, held_out = tmp_path / "train", tmp_path / "held"
    train.mkdir(), held_out.mkdir()
    write_pfm(train / "a.pfm", ramp(20, 20))
    write_pfm(held_out / "b.pfm", ramp(20, 20, offset=5.0))
    config = small(source="clean", reference_dir=str(train), generate=0)
    assert_close(validation_set(config).reference[0], chw(ramp(16, 16)))
    held = dataclasses.replace(config, validation_reference_dir=str(held_out))
    assert_close(validation_set(held).reference[0], chw(ramp(16, 16, offset=5.0)))


# ---------------------------------------------------------------- clean folders


def test_clean_folder_static_tile_is_the_top_left_crop(tmp_path: Path):
    write_pfm(tmp_path / "a.pfm", ramp(20, 24))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.pfm").write_bytes(b"ignored")
    config = small(source="clean", reference_dir=str(tmp_path), generate=0)
    sample = make_dataset(config, seed=0)[0]
    assert_close(sample.reference, chw(ramp(20, 24))[:, :16, :16])
    assert torch.equal(sample.noisy, sample.reference)
    assert torch.equal(sample.noise_ab, torch.zeros(2))


def test_clean_folder_noise_and_mosaic(tmp_path: Path):
    write_pfm(tmp_path / "a.pfm", ramp(20, 24))
    write_pfm(tmp_path / "b.pfm", ramp(30, 30, offset=10.0))
    config = small(source="clean", reference_dir=str(tmp_path), generate=4)
    samples = make_dataset(config, seed=0).__getitems__(range(40))
    # both files are used: a tile's min/max is below 0.75 in a (0..0.78), above 0.9 in b
    spreads = [s.reference.min().item() / s.reference.max().item() for s in samples]
    assert min(spreads) < 0.75 and max(spreads) > 0.9
    for sample in samples:
        assert torch.equal(sample.noisy, bayer_mosaic(sample.noisy))  # already a mosaic
        assert (sample.noise_ab > 0).all()


def test_clean_folder_of_camera_tiffs_and_pngs(tmp_path: Path):
    write_camera_tiff(tmp_path / "a.tif", ramp(16, 16), "Canon", "EOS R5", 100)
    config = small(source="clean", reference_dir=str(tmp_path), generate=0)
    assert_close(make_dataset(config, seed=0)[0].reference, chw(ramp(16, 16)))


# ---------------------------------------------------------------- pairs


def make_pairs(tmp_path: Path, names=("a", "b")) -> tuple[Path, Path]:
    references, noisies = tmp_path / "ref", tmp_path / "noisy"
    references.mkdir(), noisies.mkdir()
    for k, name in enumerate(names):
        write_pfm(references / f"{name}.pfm", ramp(20, 20, offset=k))
        write_pfm(noisies / f"{name}.pfm", ramp(20, 20, offset=k + 0.5))
    return references, noisies


def pairs_config(references: Path, noisies: Path, **changes) -> DataConfig:
    return small(source="pairs", reference_dir=str(references), noisy_dir=str(noisies), **changes)


def test_pairs_static_tile_with_configured_profile(tmp_path: Path):
    references, noisies = make_pairs(tmp_path, names=("a",))
    config = pairs_config(references, noisies, generate=0, noise_a=300.0, noise_b=2.0)
    sample = make_dataset(config, seed=0)[0]
    assert_close(sample.reference, chw(ramp(16, 16)))
    assert_close(sample.noisy, chw(ramp(16, 16, offset=0.5)))
    assert torch.equal(sample.noise_ab, torch.tensor([300.0, 2.0]))


def test_pairs_profile_follows_exposure(tmp_path: Path):
    references, noisies = make_pairs(tmp_path)
    config = pairs_config(
        references, noisies, generate=1, noise_a=300.0, noise_b=2.0, ev_min=1.0, ev_max=1.0
    )
    for sample in make_dataset(config, seed=0).__getitems__(range(4)):
        assert torch.equal(sample.noise_ab, torch.tensor([1200.0, 4.0]))
        assert_close(sample.noisy - sample.reference, torch.full((3, 16, 16), 1.0))


def test_pairs_profile_from_the_cameras_nprof(tmp_path: Path):
    references, noisies = tmp_path / "ref", tmp_path / "noisy"
    references.mkdir(), noisies.mkdir()
    write_pfm(references / "a.pfm", ramp(16, 16))
    write_camera_tiff(noisies / "a.tif", ramp(16, 16, 0.5), "Canon", "Canon EOS R5", 800)
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "Canon-EOS R5-800.nprof").write_text("1234 5.5\nscale u16\n")
    (profiles / "Nikon-D750-800.nprof").write_text("1 1\nscale u16\n")
    config = pairs_config(references, noisies, generate=0, nprof_dir=str(profiles))
    assert torch.equal(make_dataset(config, seed=0)[0].noise_ab, torch.tensor([1234.0, 5.5]))
    # without nprof_dir: a profile beside the noisy file; vkdt's unmarked files on request
    (noisies / "Canon-EOS R5-800.nprof").write_text("0.5 0.001\n")
    beside = pairs_config(references, noisies, generate=0, nprof_scale="dng")
    expected = torch.tensor([0.5 * 65535**2, 0.001 * 65535])
    assert_close(make_dataset(beside, seed=0)[0].noise_ab, expected)


def test_pairs_in_noise_mode_need_no_profile(tmp_path: Path):
    references, noisies = make_pairs(tmp_path)
    sample = make_dataset(pairs_config(references, noisies, generate=2), seed=0)[0]
    assert (sample.noise_ab > 0).all()


# ---------------------------------------------------------------- the cameras law


def test_cameras_law_draws_real_profiles(tmp_path: Path):
    (tmp_path / "Canon-EOS R5-100.nprof").write_text("100 1\nscale u16\n")
    (tmp_path / "Canon-EOS R5-6400.nprof").write_text("0.001 0.0005\nscale dng\n")
    config = small(noise="cameras", nprof_dir=str(tmp_path))
    drawn = collate(make_dataset(config, seed=0).__getitems__(range(40))).noise_ab
    allowed = torch.tensor([[100.0, 1.0], [0.001 * 65535**2, 0.0005 * 65535]])
    matches = [(torch.isclose(allowed, row).all(1)) for row in drawn]
    assert all(match.any() for match in matches)
    assert all(any(match[k] for match in matches) for k in range(2))


# ---------------------------------------------------------------- bad input


def expect_error(config: DataConfig, *words: str) -> None:
    with pytest.raises(KpnError) as caught:
        make_dataset(config, seed=0)
    assert_one_line_error(caught, *words)


def test_missing_and_empty_folders(tmp_path: Path):
    missing = tmp_path / "nowhere"
    expect_error(small(source="clean", reference_dir=str(missing)), str(missing), "no such")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    expect_error(small(source="clean", reference_dir=str(empty)), str(empty), "no images")
    references, _ = make_pairs(tmp_path)
    expect_error(pairs_config(references, missing), str(missing), "no such")
    expect_error(small(nprof_dir=str(missing)), str(missing), "no such")
    expect_error(small(noise="cameras", nprof_dir=str(empty)), str(empty), "no .nprof")


def test_image_smaller_than_the_tile_is_skipped(tmp_path: Path, capsys):
    write_pfm(tmp_path / "big.pfm", ramp(20, 20))
    write_pfm(tmp_path / "small.pfm", ramp(20, 12))
    config = small(source="clean", reference_dir=str(tmp_path))
    dataset = make_dataset(config, seed=0)
    assert len(dataset.source.pairs) == 1
    warnings = capsys.readouterr().err
    assert "small.pfm" in warnings and "12x20" in warnings and "data.tile" in warnings
    assert "skipped 1 of 2 images" in warnings
    (tmp_path / "big.pfm").unlink()
    expect_error(config, str(tmp_path), "none of its 1 images is usable")
    write_pfm(tmp_path / "big.pfm", ramp(20, 20))
    ok = dataclasses.replace(config, tile=12, validation_tile=16)
    assert len(make_dataset(ok, seed=0).source.pairs) == 2
    assert len(validation_set(ok).reference) == ok.validation_count  # small.pfm skipped
    capsys.readouterr()
    (tmp_path / "big.pfm").unlink()
    with pytest.raises(KpnError, match=r"none of its 1 images is usable \(data\.reference_dir"):
        validation_set(ok)
    assert "data.validation_tile" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_reference_with_nan_or_inf_is_skipped(tmp_path: Path, bad: float, capsys):
    image = ramp(20, 20)
    image[3, 4, 1] = bad
    write_pfm(tmp_path / "bad.pfm", image)
    expect_error(small(source="clean", reference_dir=str(tmp_path)), "none of its 1 images")
    warning = capsys.readouterr().err
    assert "bad.pfm" in warning and "NaN or Inf" in warning


@pytest.mark.parametrize(
    ("name", "content"),
    [("broken.pfm", b"PF\n20 20\n-1.0\n" + b"\0" * 10), ("photo.dng", b"not a raw file")],
)
def test_corrupt_file_in_the_folder_is_skipped(tmp_path: Path, name: str, content: bytes, capsys):
    write_pfm(tmp_path / "a.pfm", ramp(20, 20))
    (tmp_path / name).write_bytes(content)
    dataset = make_dataset(small(source="clean", reference_dir=str(tmp_path)), seed=0)
    assert len(dataset.source.pairs) == 1
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 2 and name in warnings[0] and "skipped 1 of 2" in warnings[1]


def test_mixed_source_draws_dead_leaves_for_a_fraction(tmp_path: Path):
    write_pfm(tmp_path / "a.pfm", np.full((40, 40, 3), 0.5, np.float32))
    config = small(
        source="clean",
        reference_dir=str(tmp_path),
        deadleaves_fraction=0.5,
        generate=1,
        ev_min=0.0,
        ev_max=0.0,
        batch=64,
    )
    dataset = make_dataset(config, seed=0)
    samples = dataset.__getitems__(range(200))
    from_file = [bool((s.reference == 0.5).all()) for s in samples]
    assert 70 < sum(from_file) < 130  # binomial(200, 0.5): 100 +- 15 at 2 sigma
    again = dataset.__getitems__(range(100, 110))  # a pure function of the index
    assert all(
        torch.equal(a.reference, b.reference) for a, b in zip(again, samples[100:110], strict=True)
    )
    assert [from_file[i] for i in range(10)] == [
        bool((s.reference == 0.5).all()) for s in (dataset[i] for i in range(10))
    ]
    validation = validation_set(config)  # validation tiles: the files alone
    assert (validation.reference == 0.5).all()
    only_files = make_dataset(dataclasses.replace(config, deadleaves_fraction=0.0), seed=0)
    assert all((s.reference == 0.5).all() for s in only_files.__getitems__(range(20)))


def test_deadleaves_fraction_needs_files():
    with pytest.raises(KpnError, match="deadleaves_fraction"):
        small(deadleaves_fraction=0.5).validate("t")
    with pytest.raises(KpnError, match=r"outside 0\.\.1"):
        small(source="clean", reference_dir="x", deadleaves_fraction=1.5).validate("t")


def test_pairs_missing_partner(tmp_path: Path):
    references, noisies = make_pairs(tmp_path)
    write_pfm(references / "c.pfm", ramp(20, 20))
    expect_error(pairs_config(references, noisies, noise_a=1.0), "c.pfm", "no noisy file")
    (references / "c.pfm").unlink()
    write_pfm(noisies / "d.pfm", ramp(20, 20))
    expect_error(pairs_config(references, noisies, noise_a=1.0), "d.pfm", "no reference file")


def test_pairs_mismatched_sizes(tmp_path: Path):
    references, noisies = make_pairs(tmp_path)
    write_pfm(noisies / "b.pfm", ramp(20, 22))
    expect_error(pairs_config(references, noisies, noise_a=1.0), "b.pfm", "22x20", "20x20")


def test_pairs_two_files_of_one_name(tmp_path: Path):
    references, noisies = make_pairs(tmp_path)
    write_camera_tiff(noisies / "a.tif", ramp(20, 20), "Canon", "EOS R5", 100)
    expect_error(pairs_config(references, noisies, noise_a=1.0), "a.pfm", "a.tif", "same name")


def test_pairs_without_a_profile(tmp_path: Path):
    references, noisies = make_pairs(tmp_path)
    expect_error(pairs_config(references, noisies, generate=1), "a.pfm", "no noise profile")


def test_pairs_camera_without_its_profile(tmp_path: Path):
    references, noisies = tmp_path / "ref", tmp_path / "noisy"
    references.mkdir(), noisies.mkdir()
    write_pfm(references / "a.pfm", ramp(16, 16))
    write_camera_tiff(noisies / "a.tif", ramp(16, 16), "Canon", "EOS R5", 800)
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "Nikon-D750-800.nprof").write_text("1 1\nscale u16\n")
    config = pairs_config(references, noisies, generate=0, nprof_dir=str(profiles))
    expect_error(config, "a.tif", "no noise profile for Canon EOS R5")
    # an unmarked (vkdt) profile is refused unless its scale is given
    (profiles / "Canon-EOS R5-800.nprof").write_text("1 1\n")
    expect_error(config, "Canon-EOS R5-800.nprof", "scale")


def test_malformed_nprof_for_the_cameras_law(tmp_path: Path):
    (tmp_path / "Canon-EOS R5-100.nprof").write_text("not numbers\n")
    config = small(noise="cameras", nprof_dir=str(tmp_path), nprof_scale="u16")
    expect_error(config, "Canon-EOS R5-100.nprof")


BAD_SETTINGS = {
    "tile": ({"tile": 1}, "data.tile"),
    "batch": ({"batch": 0}, "data.batch"),
    "generate": ({"generate": 5}, "data.generate"),
    "ev-order": ({"ev_min": 1.0, "ev_max": 0.0}, "data.ev_min"),
    "ev-range": ({"ev_max": 40.0}, "data.ev_max"),
    "a-range": ({"noise_a_min": 10.0, "noise_a_max": 1.0}, "data.noise_a_min"),
    "b-negative": ({"noise_b_min": -1.0}, "data.noise_b_min"),
    "loguniform-zero": ({"noise": "loguniform"}, "data.noise_a_min"),
    "loglevel-zero": ({"noise": "loglevel"}, "data.noise_a_min"),
    "cameras-no-folder": ({"noise": "cameras"}, "data.nprof_dir"),
    "clean-no-folder": ({"source": "clean"}, "data.reference_dir"),
    "pairs-no-noisy": ({"source": "pairs", "reference_dir": "r"}, "data.noisy_dir"),
    "noise-a": ({"noise_a": -2.0}, "data.noise_a"),
    "workers": ({"workers": -1}, "data.workers"),
    "validation-count": ({"validation_count": 0}, "data.validation_count"),
    "validation-tile": ({"validation_tile": 0}, "data.validation_tile"),
    "source": ({"source": "imagenet"}, "data.source"),
    "raw-mode": ({"raw_mode": "full"}, "data.raw_mode"),
}


@pytest.mark.parametrize("name", sorted(BAD_SETTINGS))
def test_bad_settings_name_their_key(name: str):
    table, key = BAD_SETTINGS[name]
    with pytest.raises(KpnError) as caught:
        config_from_dict({"data": table}, "x.toml")
    assert_one_line_error(caught, key, starts="x.toml: ")


def test_defaults_are_valid_and_vkdt_like():
    config = config_from_dict({}).data
    assert (config.source, config.tile, config.batch, config.generate) == ("deadleaves", 64, 16, 2)
    assert (config.ev_min, config.ev_max) == (-2.0, 2.0)
    assert (config.noise_a_max, config.noise_b_max) == (1000 * 65535, 1000)
    assert make_dataset(config, seed=0).stream == TRAINING


def test_loader_leaves_the_global_generator_alone():
    state = torch.get_rng_state()
    next(iter(make_loader(make_dataset(small(), seed=1), 2, workers=0)))
    assert torch.equal(torch.get_rng_state(), state)


def test_textured_crop_takes_the_busiest_candidate():
    image = torch.full((3, 64, 64), 0.5)
    stripes = torch.arange(32) % 2 * 0.4 + 0.3
    image[:, 32:, :32] = stripes  # one textured quarter, the rest flat
    pair = ImagePair(image)
    busy = 0
    for index in range(40):
        generator = sample_generator(0, 0, index)
        crop = textured_crop(pair, 32, 8, generator)
        assert crop.reference.shape == (3, 32, 32) and crop.offset == "inside"
        again = textured_crop(pair, 32, 8, sample_generator(0, 0, index))
        assert torch.equal(crop.reference, again.reference)
        busy += texture(crop.reference) > 0.1
    # 8 candidates of 33x33 places: the chance that none overlaps the stripes is tiny
    assert busy >= 36
    assert texture(torch.full((3, 8, 8), 0.2)) == 0.0
    assert texture(2 * image) == pytest.approx(texture(image), rel=1e-2)  # nor exposure


def test_texture_candidates_apply_to_training_tiles_only(tmp_path: Path):
    write_pfm(tmp_path / "a.pfm", ramp(40, 40))
    config = small(source="clean", reference_dir=str(tmp_path), texture_candidates=4)
    assert make_dataset(config, seed=0).source.candidates == 4
    assert make_dataset(config, seed=0, stream=VALIDATION).source.candidates == 1
    with pytest.raises(KpnError, match="texture_candidates"):
        small(texture_candidates=0).validate("t")
