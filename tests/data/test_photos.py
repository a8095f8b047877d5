"""Tests for kpn.data.photos: the photo training set from Debian's wallpaper packages.

The download is replaced by hand-made packages (apt and the network are not the tests'
to use); everything after it runs for real.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kpn.__main__ import main
from kpn.data import photos
from kpn.errors import KpnError
from kpn.io.images import linear_to_srgb, write_image
from kpn.io.pfm import read_pfm

from conftest import assert_error_line

COPYRIGHT = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: wallpapers

Files: *
Copyright: 2020, Someone
License: GPL-2+

Files: 16.04/sea_by_A.jpg
Copyright: A, 2018
License: CC-BY-4.0
 The licence text, indented: not a field.

Files: debian/*
Copyright: 2021, The packager
License: Expat
"""


def test_box_downscale_by_hand():
    image = np.arange(6 * 9 * 1, dtype=np.float32).reshape(6, 9, 1)
    got = photos.box_downscale(image, 3)
    assert got.shape == (2, 3, 1)
    # block (0, 0): rows 0..2, columns 0..2 of value 9y + x: mean 9*1 + 1 = 10
    assert got[0, 0, 0] == pytest.approx(10.0)
    assert got[1, 2, 0] == pytest.approx(9 * 4 + 7)
    partial = photos.box_downscale(image[:5, :8], 2)  # the odd row and column are dropped
    assert partial.shape == (2, 4, 1)
    assert partial[1, 3, 0] == pytest.approx(np.mean([9 * 2 + 6, 9 * 2 + 7, 9 * 3 + 6, 9 * 3 + 7]))
    with pytest.raises(KpnError, match="smaller than 4x4"):
        photos.box_downscale(image[:3], 4)


def test_licence_of_follows_dep5():
    paragraphs = photos.copyright_paragraphs(COPYRIGHT)
    assert [p.get("license") for p in paragraphs] == [None, "GPL-2+", "CC-BY-4.0", "Expat"]
    # the installed path ends otherwise than the source path: matched by name
    assert photos.licence_of(paragraphs, "usr/share/backgrounds/sea_by_A.jpg") == (
        "CC-BY-4.0",
        "A, 2018",
    )
    # "debian/*" names the packaging, not every file called anything
    assert photos.licence_of(paragraphs, "usr/share/backgrounds/other.jpg")[0] == "GPL-2+"
    assert photos.licence_of([], "x.jpg")[0].startswith("unknown")


@pytest.fixture
def fake_archive(monkeypatch: pytest.MonkeyPatch):
    """Two packages of two photos each, one held out; sRGB JPEGs of known content."""
    files = {
        "pkg-a": ("usr/share/backgrounds/sea_by_A.jpg", "usr/share/backgrounds/hill.jpg"),
        "pkg-b": ("usr/share/wallpapers/Path/contents/images/2560x1600.jpg",),
    }
    monkeypatch.setattr(photos, "PHOTOS", files)
    monkeypatch.setattr(photos, "HELD_OUT", frozenset({"usr/share/backgrounds/hill.jpg"}))
    calls = []

    def download(packages: list[str], folder: Path) -> dict[str, Path]:
        calls.append(list(packages))
        return {p: folder / f"{p}_1.0-1_all.deb" for p in packages}

    def extract(deb: Path, folder: Path) -> None:
        package = deb.name.split("_")[0]
        for index, installed in enumerate(files[package]):
            path = folder / installed
            path.parent.mkdir(parents=True, exist_ok=True)
            shade = np.full((40, 48, 3), 0.2 + 0.2 * index, np.float32)
            shade[:, 24:] = 0.9  # an edge
            write_image(path, shade, bits=8)
        doc = folder / "usr/share/doc" / package
        doc.mkdir(parents=True)
        (doc / "copyright").write_text(COPYRIGHT)

    monkeypatch.setattr(photos, "download_packages", download)
    monkeypatch.setattr(photos, "extract", extract)
    monkeypatch.setattr(photos, "deb_field", lambda deb, field: "1.0-1")
    return calls


def test_assemble_writes_linear_downscaled_photos_and_a_manifest(tmp_path: Path, fake_archive):
    records, made = photos.assemble_photos(tmp_path / "set")
    assert made and len(records) == 3
    manifest = json.loads((tmp_path / "set" / photos.MANIFEST).read_text())
    assert manifest["factor"] == 4
    entries = {e["file"]: e for e in manifest["photos"]}
    sea = entries["usr/share/backgrounds/sea_by_A.jpg"]
    assert sea["package"] == "pkg-a" and sea["version"] == "1.0-1"
    assert sea["licence"] == "CC-BY-4.0" and sea["split"] == "train"
    assert sea["size"] == [48, 40] and sea["output_size"] == [12, 10]
    assert len(sea["sha256"]) == 64 and sea["bytes"] > 0
    assert entries["usr/share/backgrounds/hill.jpg"]["output"] == "validation/hill.pfm"
    # plasma names files by size: the photo takes its folder's name
    assert entries["usr/share/wallpapers/Path/contents/images/2560x1600.jpg"]["output"] == (
        "train/Path.pfm"
    )
    image = read_pfm(tmp_path / "set" / "train" / "sea_by_A.pfm")
    assert image.shape == (10, 12, 3)
    # linear light: the JPEG holds sRGB codes of the linear 0.2 and 0.9 written; decoded,
    # not the codes themselves (0.48 and 0.95), JPEG's error aside
    assert image[5, 2, 1] == pytest.approx(0.2, abs=0.01)
    assert image[5, 9, 1] == pytest.approx(0.9, abs=0.02)
    assert float(linear_to_srgb(np.float32(0.2))) > 0.45
    # a second call keeps the set and downloads nothing
    records_again, made_again = photos.assemble_photos(tmp_path / "set")
    assert not made_again and records_again == records and len(fake_archive) == 1


def test_cli_prints_one_line(tmp_path: Path, fake_archive, capsys):
    assert main(["photos", str(tmp_path / "set")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "3 photos assembled: 2 in train/, 1 in validation/" in out[0]
    assert main(["photos", str(tmp_path / "set"), "--factor", "2"]) == 2
    assert "below 4" in capsys.readouterr().err


def test_without_apt_one_line_says_how_to_use_own_photos(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setattr(photos.shutil, "which", lambda name: None)
    assert main(["photos", str(tmp_path / "set")]) == 2
    assert_error_line(capsys.readouterr().err, "apt-get", "data.reference_dir")
    assert not (tmp_path / "set" / photos.MANIFEST).exists()


def test_failed_download_one_line(tmp_path: Path, monkeypatch, capsys):
    script = tmp_path / "bin" / "apt-get"
    script.parent.mkdir()
    script.write_text(
        "#!/bin/sh\necho 'E: Failed to fetch http://deb.debian.org/x' >&2\nexit 100\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}:{__import__('os').environ['PATH']}")
    assert main(["photos", str(tmp_path / "set")]) == 2
    assert_error_line(capsys.readouterr().err, "E: Failed to fetch", "data.reference_dir")


def test_the_curated_list_holds_no_benchmark_photo():
    chosen = [path for files in photos.PHOTOS.values() for path in files]
    assert len(chosen) == len(set(chosen)) >= 30
    assert photos.HELD_OUT <= set(chosen)
    for name in ("astronaut", "chelsea", "coffee", "rocket", "motorcycle"):
        assert not any(name in path.lower() for path in chosen)
