"""kpn.io.nprof: .nprof files, their scales, and lookup by camera and ISO.

darktable's noiseprofiles.json import and its command line: test_nprof_darktable.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from kpn.errors import KpnError
from kpn.io.nprof import (
    NoiseProfile,
    camera_key,
    find_profile,
    nprof_text,
    parse_nprof_name,
    read_nprof,
    write_nprof,
)

from conftest import assert_one_line_error


# --- the profile and its scales --------------------------------------------------------
def test_file_name() -> None:
    profile = NoiseProfile(1.0, 2.0, "Canon", "EOS 5D Mark II", 3200, "u16")
    assert profile.file_name == "Canon-EOS 5D Mark II-3200.nprof"
    assert NoiseProfile(1, 2, "Fuji", "X/T1", 200, "u16").file_name == "Fuji-X_T1-200.nprof"


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        ((-1.0, 2.0, "M", "X", 100, "u16"), "a = -1.0"),
        ((1.0, float("nan"), "M", "X", 100, "u16"), "b = nan"),
        ((1.0, float("inf"), "M", "X", 100, "u16"), "b = inf"),
        ((1.0, "2", "M", "X", 100, "u16"), "b = '2'"),
        ((1.0, 2.0, "M", "X", 0, "u16"), "iso 0"),
        ((1.0, 2.0, "M", "X", True, "u16"), "iso True"),
        ((1.0, 2.0, "M", "X", 100.0, "u16"), "iso 100.0"),
        ((1.0, 2.0, "M", "X", 100, "dB"), "scale 'dB'"),
        ((1.0, 2.0, " ", "X", 100, "u16"), "maker ' '"),
        ((1.0, 2.0, "M", "X\nY", 100, "u16"), "model 'X\\nY'"),
    ],
)
def test_profile_validation(arguments: tuple[object, ...], fragment: str) -> None:
    with pytest.raises(KpnError, match=re.escape(fragment)):
        NoiseProfile(*arguments)  # type: ignore[arg-type]


def test_numpy_numbers_are_stored_as_python_numbers() -> None:
    profile = NoiseProfile(np.float32(0.5), np.float64(2.0), "M", "X", np.int64(100), "u16")
    assert (type(profile.a), type(profile.b), type(profile.iso)) == (float, float, int)
    assert profile == NoiseProfile(0.5, 2.0, "M", "X", 100, "u16")


def test_scale_conversions_by_hand() -> None:
    dng = NoiseProfile(1e-6, 2e-5, "M", "X", 100, "dng")
    u16 = dng.converted("u16")
    # docs/design.md §10: a' = a * 65535**2, b' = b * 65535
    assert (u16.a, u16.b, u16.scale) == (pytest.approx(4294.836225), pytest.approx(1.3107), "u16")
    back = u16.converted("dng")
    assert (back.a, back.b) == (pytest.approx(1e-6, rel=1e-15), pytest.approx(2e-5, rel=1e-15))
    assert dng.converted("dng") is dng
    # a 14-bit camera with black 512: white - black = 15871, s = 65535 / 15871
    raw = NoiseProfile(10.0, 2.0, "M", "X", 100, "raw")
    on_u16 = raw.converted("u16", raw_range=15871)
    assert on_u16.a == pytest.approx(170.5053553804358) and on_u16.b == pytest.approx(8.2584588)
    on_dng = raw.converted("dng", raw_range=15871)
    assert on_dng.a == pytest.approx(10 / 15871**2) and on_dng.b == pytest.approx(2 / 15871)
    assert on_u16.converted("raw", raw_range=15871).a == pytest.approx(10.0)


@pytest.mark.parametrize("scale", ["u16", "dng", "raw"])
def test_conversion_keeps_the_variance(scale: str) -> None:
    # The same pixel: its variance in u16 units is 65535**2 times that in dng units, etc.
    profile = NoiseProfile(3.0, 0.5, "M", "X", 100, "u16")
    white = {"u16": 65535.0, "dng": 1.0, "raw": 4000.0}
    other = profile.converted(scale, raw_range=4000.0)  # type: ignore[arg-type]
    for fraction in (0.0, 0.01, 0.5, 1.0):
        variance_u16 = profile.a + profile.b * fraction * 65535
        variance_other = other.a + other.b * fraction * white[scale]
        assert variance_other * (65535 / white[scale]) ** 2 == pytest.approx(variance_u16)


def test_raw_conversion_needs_range() -> None:
    raw = NoiseProfile(10.0, 2.0, "M", "X", 100, "raw")
    with pytest.raises(KpnError, match="white - black level"):
        raw.converted("u16")
    with pytest.raises(KpnError, match="raw_range=0: must be positive"):
        raw.converted("dng", raw_range=0)
    with pytest.raises(KpnError, match="scale='linear': expected one of"):
        raw.converted("linear")  # type: ignore[arg-type]


# --- files -----------------------------------------------------------------------------
def test_write_read_round_trip(tmp_path: Path) -> None:
    profile = NoiseProfile(4294.836225, 1.3107000000000002, "Canon", "EOS R5", 100, "u16")
    path = write_nprof(tmp_path, profile)
    assert path == tmp_path / "Canon-EOS R5-100.nprof"
    assert path.read_text() == "4294.836225 1.3107000000000002\nscale u16\n"
    assert nprof_text(profile) == path.read_text()
    assert read_nprof(path) == profile  # exact: repr round-trips floats
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left


def test_vkdt_file_needs_its_scale(tmp_path: Path) -> None:
    path = tmp_path / "Sony-ILCE-7M3-800.nprof"
    path.write_text("1.5e-06 2.25e-05\n")  # what vkdt's nprof writes: "%g %g\n"
    with pytest.raises(KpnError, match="no 'scale' line") as err:
        read_nprof(path)
    assert_one_line_error(err, starts=f"{path}: ")
    profile = read_nprof(path, unmarked="dng")
    assert profile == NoiseProfile(1.5e-06, 2.25e-05, "Sony", "ILCE-7M3", 800, "dng")
    # a marked file keeps its own scale whatever the caller assumes for unmarked ones
    path.write_text("1.5e-06 2.25e-05\nscale raw\n")
    assert read_nprof(path, unmarked="dng").scale == "raw"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Canon-EOS-1Ds-100.nprof", ("Canon", "EOS-1Ds", 100)),
        ("unknown-X-3200.nprof", ("unknown", "X", 3200)),
    ],
)
def test_parse_name(name: str, expected: tuple[str, str, int]) -> None:
    assert parse_nprof_name(name) == expected


@pytest.mark.parametrize(
    "name",
    ["Canon-100.nprof", "Canon-EOS-x.nprof", "camera.nprof", "Canon-EOS-0.nprof", "a-b-1.txt"],
)
def test_bad_name(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("1 2\nscale u16\n")
    with pytest.raises(KpnError, match=r"name is not maker-model-iso\.nprof") as err:
        read_nprof(path)
    assert_one_line_error(err, starts=f"{path}: ")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "empty first line"),
        (b"\n1 2\n", "empty first line"),
        (b"1.0\n", "first line '1.0' is not two finite numbers"),
        (b"1 2 3\n", "is not two finite numbers"),
        (b"a b\n", "first line 'a b' is not two finite numbers"),
        (b"nan 1\n", "is not two finite numbers"),
        (b"1 inf\n", "is not two finite numbers"),
        (b"-1 2\nscale u16\n", "negative noise parameter in '-1 2'"),
        (b"1 2\nscale furlongs\n", "line 2 is 'scale furlongs'"),
        (b"1 2\nscale u16\nscale dng\n", "line 3 is 'scale dng'"),
        (b"1 2\n\nhello\n", "line 3 is 'hello'"),
        (b"\xff\xfe1 2", "not a text file"),
    ],
)
def test_malformed(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "M-X-100.nprof"
    path.write_bytes(content)
    with pytest.raises(KpnError, match=re.escape(fragment)) as err:
        read_nprof(path, unmarked="u16")
    assert_one_line_error(err, starts=f"{path}: ")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "M-X-100.nprof"
    with pytest.raises(KpnError, match="no such file") as err:
        read_nprof(path)
    assert_one_line_error(err, starts=f"{path}: ")


# --- lookup ----------------------------------------------------------------------------
@pytest.fixture
def profiles(tmp_path: Path) -> Path:
    for iso, a, b in ((100, 30.0, 0.3), (400, 90.0, 1.2), (1600, 330.0, 4.8)):
        write_nprof(tmp_path, NoiseProfile(a, b, "Canon", "EOS R5", iso, "u16"))
    # other cameras, one whose name starts like ours
    write_nprof(tmp_path, NoiseProfile(1.0, 1.0, "Canon", "EOS R5 C", 200, "u16"))
    write_nprof(tmp_path, NoiseProfile(1.0, 1.0, "Nikon", "D750", 200, "u16"))
    (tmp_path / "notes.txt").write_text("not a profile")
    return tmp_path


def test_find_exact(profiles: Path) -> None:
    match = find_profile(profiles, "Canon", "EOS R5", 400)
    assert match.how == "exact" and match.sources == (profiles / "Canon-EOS R5-400.nprof",)
    assert match.profile == NoiseProfile(90.0, 1.2, "Canon", "EOS R5", 400, "u16")


def test_find_interpolated(profiles: Path) -> None:
    # ISO 200 lies a third of the way from 100 to 400: a = 30 + (90-30)/3, b = 0.3 + 0.9/3
    match = find_profile(profiles, "Canon", "EOS R5", 200)
    assert match.how == "interpolated"
    assert match.sources == (
        profiles / "Canon-EOS R5-100.nprof",
        profiles / "Canon-EOS R5-400.nprof",
    )
    assert match.profile.a == pytest.approx(50.0) and match.profile.b == pytest.approx(0.6)
    assert (match.profile.iso, match.profile.scale) == (200, "u16")
    # 1000 between 400 and 1600: t = 0.5
    halfway = find_profile(profiles, "Canon", "EOS R5", 1000).profile
    assert (halfway.a, halfway.b) == (pytest.approx(210.0), pytest.approx(3.0))


@pytest.mark.parametrize(
    ("iso", "method", "expected_iso"),
    [
        (200, "nearest", 100),
        (250, "nearest", 100),  # a tie: the lower ISO
        (300, "nearest", 400),
        (50, "interpolate", 100),  # below the measured range
        (6400, "interpolate", 1600),  # above it
        (12.5, "nearest", 100),
        (np.int64(1500), "nearest", 1600),
    ],
)
def test_find_nearest(profiles: Path, iso: float, method: str, expected_iso: int) -> None:
    match = find_profile(profiles, "Canon", "EOS R5", iso, method=method)  # type: ignore[arg-type]
    assert match.how == "nearest"
    assert match.sources == (profiles / f"Canon-EOS R5-{expected_iso}.nprof",)
    assert match.profile.a == read_nprof(match.sources[0]).a


@pytest.mark.parametrize(
    ("maker", "model"),
    [("CANON INC.", "Canon EOS R5"), ("canon", "eos  r5"), ("Canon", "EOS R5")],
)
def test_find_by_tag_names(profiles: Path, maker: str, model: str) -> None:
    match = find_profile(profiles, maker, model, 100)
    assert match.sources == (profiles / "Canon-EOS R5-100.nprof",)
    assert (match.profile.maker, match.profile.model) == (maker, model)


def test_camera_key() -> None:
    assert camera_key("NIKON CORPORATION", "NIKON D750") == ("nikon", "d750")
    assert camera_key("Nikon", "D750") == ("nikon", "d750")
    assert camera_key("Canon", "Canon EOS-1Ds") == ("canon", "eos-1ds")
    assert camera_key("Sony", "ILCE-7M3") != camera_key("Sony", "ILCE-7M3 II")


def test_find_converts_scales(tmp_path: Path) -> None:
    # 100 on the dng scale, 300 unmarked (vkdt's own, said to be raw): both converted to u16
    write_nprof(tmp_path, NoiseProfile(1e-6, 2e-5, "M", "X", 100, "dng"))
    (tmp_path / "M-X-300.nprof").write_text("10 2\n")
    match = find_profile(tmp_path, "M", "X", 200, unmarked="raw", raw_range=65535 / 2)
    low_a, low_b = 1e-6 * 65535**2, 2e-5 * 65535
    high_a, high_b = 10 * 4, 2 * 2
    assert match.how == "interpolated" and match.profile.scale == "u16"
    assert match.profile.a == pytest.approx((low_a + high_a) / 2)
    assert match.profile.b == pytest.approx((low_b + high_b) / 2)
    on_dng = find_profile(tmp_path, "M", "X", 100, scale="dng").profile
    assert (on_dng.a, on_dng.b, on_dng.scale) == (1e-6, 2e-5, "dng")
    with pytest.raises(KpnError, match="no 'scale' line") as err:
        find_profile(tmp_path, "M", "X", 300)
    assert_one_line_error(err, starts=f"{tmp_path / 'M-X-300.nprof'}: ")
    with pytest.raises(KpnError, match="white - black") as err:
        find_profile(tmp_path, "M", "X", 300, unmarked="raw")
    assert_one_line_error(err, starts=f"{tmp_path / 'M-X-300.nprof'}: ")


def test_find_no_profile(profiles: Path) -> None:
    with pytest.raises(KpnError, match="no noise profile for Sony ILCE-7M3") as err:
        find_profile(profiles, "Sony", "ILCE-7M3", 100)
    assert_one_line_error(err, starts=f"{profiles}: ")
    empty = profiles / "empty"
    empty.mkdir()
    with pytest.raises(KpnError, match="no noise profile") as err:
        find_profile(empty, "Canon", "EOS R5", 100)
    assert_one_line_error(err, starts=f"{empty}: ")


def test_find_bad_input(profiles: Path) -> None:
    with pytest.raises(KpnError, match="no such folder") as err:
        find_profile(profiles / "absent", "Canon", "EOS R5", 100)
    assert_one_line_error(err, starts=f"{profiles / 'absent'}: ")
    with pytest.raises(KpnError, match="method='cubic': expected"):
        find_profile(profiles, "Canon", "EOS R5", 100, method="cubic")  # type: ignore[arg-type]
    with pytest.raises(KpnError, match="iso=0: must be a positive number"):
        find_profile(profiles, "Canon", "EOS R5", 0)
    write_nprof(profiles, NoiseProfile(1.0, 1.0, "CANON", "Canon EOS R5", 400, "u16"))
    with pytest.raises(KpnError, match="two profiles of Canon EOS R5 at ISO 400") as err:
        find_profile(profiles, "Canon", "EOS R5", 400)
    assert_one_line_error(err, starts=f"{profiles}: ")


def test_find_malformed_candidate(profiles: Path) -> None:
    bad = profiles / "Canon-EOS R5-400.nprof"
    bad.write_text("90 one\n")
    with pytest.raises(KpnError, match="is not two finite numbers") as err:
        find_profile(profiles, "Canon", "EOS R5", 200)
    assert_one_line_error(err, starts=f"{bad}: ")
    assert find_profile(profiles, "Canon", "EOS R5", 100).how == "exact"  # only reads what it uses
