"""kpn.io.nprof: .nprof files, scales, lookup by camera and ISO, darktable import, and its CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from kpn.__main__ import main
from kpn.errors import KpnError
from kpn.io import nprof
from kpn.io.nprof import (
    NoiseProfile,
    camera_key,
    find_darktable_json,
    find_profile,
    import_darktable,
    nprof_text,
    parse_nprof_name,
    read_darktable,
    read_nprof,
    write_nprof,
)


def assert_one_line_naming(err: pytest.ExceptionInfo[KpnError], path: Path | str) -> None:
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: "), message


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
    # SPEC 10: a' = a * 65535**2, b' = b * 65535
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
    with pytest.raises(KpnError, match="raw_range 0 must be positive"):
        raw.converted("dng", raw_range=0)
    with pytest.raises(KpnError, match="scale 'linear'"):
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
    assert_one_line_naming(err, path)
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
    assert_one_line_naming(err, path)


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
    assert_one_line_naming(err, path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "M-X-100.nprof"
    with pytest.raises(KpnError, match="no such file") as err:
        read_nprof(path)
    assert_one_line_naming(err, path)


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
    assert_one_line_naming(err, tmp_path / "M-X-300.nprof")
    with pytest.raises(KpnError, match="white - black") as err:
        find_profile(tmp_path, "M", "X", 300, unmarked="raw")
    assert_one_line_naming(err, tmp_path / "M-X-300.nprof")


def test_find_no_profile(profiles: Path) -> None:
    with pytest.raises(KpnError, match="no noise profile for Sony ILCE-7M3") as err:
        find_profile(profiles, "Sony", "ILCE-7M3", 100)
    assert_one_line_naming(err, profiles)
    empty = profiles / "empty"
    empty.mkdir()
    with pytest.raises(KpnError, match="no noise profile") as err:
        find_profile(empty, "Canon", "EOS R5", 100)
    assert_one_line_naming(err, empty)


def test_find_bad_input(profiles: Path) -> None:
    with pytest.raises(KpnError, match="no such directory") as err:
        find_profile(profiles / "absent", "Canon", "EOS R5", 100)
    assert_one_line_naming(err, profiles / "absent")
    with pytest.raises(KpnError, match="method 'cubic'"):
        find_profile(profiles, "Canon", "EOS R5", 100, method="cubic")  # type: ignore[arg-type]
    with pytest.raises(KpnError, match="ISO 0 must be a positive number"):
        find_profile(profiles, "Canon", "EOS R5", 0)
    write_nprof(profiles, NoiseProfile(1.0, 1.0, "CANON", "Canon EOS R5", 400, "u16"))
    with pytest.raises(KpnError, match="two profiles of Canon EOS R5 at ISO 400") as err:
        find_profile(profiles, "Canon", "EOS R5", 400)
    assert_one_line_naming(err, profiles)


def test_find_malformed_candidate(profiles: Path) -> None:
    bad = profiles / "Canon-EOS R5-400.nprof"
    bad.write_text("90 one\n")
    with pytest.raises(KpnError, match="is not two finite numbers") as err:
        find_profile(profiles, "Canon", "EOS R5", 200)
    assert_one_line_naming(err, bad)
    assert find_profile(profiles, "Canon", "EOS R5", 100).how == "exact"  # only reads what it uses


# --- darktable -------------------------------------------------------------------------
def darktable_json() -> dict[str, object]:
    """A tiny noiseprofiles.json in darktable's layout (version 0)."""

    def entry(name: str, iso: float, a: list[float], b: list[float], **extra: object) -> dict:
        return {"name": name, "iso": iso, "a": a, "b": b, **extra}

    return {
        "version": 0,
        "noiseprofiles": [
            {
                "maker": "Canon",
                "models": [
                    {
                        "comment": "contributed by a test",
                        "model": "EOS-1Ds",
                        "profiles": [
                            entry("iso 100", 100, [1e-5, 2e-5, 3e-5], [1e-7, 3e-7, 5e-7]),
                            entry("iso 200", 200, [2e-5, 4e-5, 6e-5], [1e-7, -2e-7, 5e-7]),
                            entry("bad one", 400, [9.0, 9.0, 9.0], [9.0, 9.0, 9.0], skip=True),
                        ],
                    },
                    {
                        "model": "PowerShot G1 X",
                        "profiles": [
                            entry("first", 80, [1e-5, 1e-5, 1e-5], [1e-7, 1e-7, 1e-7]),
                            entry("again", 80, [1e-5, 3e-5, 1e-5], [1e-7, 3e-7, 1e-7]),
                        ],
                    },
                ],
            },
            {
                "maker": "Nikon",
                "models": [
                    {"model": "D750", "profiles": [entry("x", 12800, [0, 1e-3, 0], [0, 1e-6, 0])]}
                ],
            },
        ],
    }


@pytest.fixture
def dt_file(tmp_path: Path) -> Path:
    path = tmp_path / "noiseprofiles.json"
    path.write_text(json.dumps(darktable_json(), indent=2))
    return path


def test_read_darktable_by_hand(dt_file: Path) -> None:
    found = {(p.maker, p.model, p.iso): p for p in read_darktable(dt_file)}
    assert set(found) == {
        ("Canon", "EOS-1Ds", 100),
        ("Canon", "EOS-1Ds", 200),
        ("Canon", "PowerShot G1 X", 80),
        ("Nikon", "D750", 12800),
    }  # ISO 400 is marked skip
    # ours: a = darktable's green b * 65535**2, b = darktable's green a * 65535
    first = found["Canon", "EOS-1Ds", 100]
    assert (first.a, first.b, first.scale) == (
        pytest.approx(1288.4508675),
        pytest.approx(1.3107),
        "u16",
    )
    clamped = found["Canon", "EOS-1Ds", 200]  # darktable's green b is -2e-7: clamped to 0
    assert (clamped.a, clamped.b) == (0.0, pytest.approx(2.6214))
    averaged = found["Canon", "PowerShot G1 X", 80]  # two measurements at ISO 80: the mean
    assert averaged.a == pytest.approx(2e-7 * 65535**2)
    assert averaged.b == pytest.approx(2e-5 * 65535)
    on_dng = {(p.model, p.iso): p for p in read_darktable(dt_file, scale="dng")}
    assert (on_dng["EOS-1Ds", 100].a, on_dng["EOS-1Ds", 100].b) == (
        pytest.approx(3e-7),
        pytest.approx(2e-5),
    )


def test_import_darktable_writes_files(dt_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "new" / "nprof"
    paths = import_darktable(dt_file, out)
    assert sorted(p.name for p in paths) == sorted(p.name for p in out.iterdir())
    assert sorted(p.name for p in paths) == [
        "Canon-EOS-1Ds-100.nprof",
        "Canon-EOS-1Ds-200.nprof",
        "Canon-PowerShot G1 X-80.nprof",
        "Nikon-D750-12800.nprof",
    ]
    profile = read_nprof(out / "Nikon-D750-12800.nprof")
    assert profile.scale == "u16"
    assert (profile.a, profile.b) == (pytest.approx(1e-6 * 65535**2), pytest.approx(65.535))
    # the files are what find_profile reads
    match = find_profile(out, "NIKON CORPORATION", "NIKON D750", 6400)
    assert match.how == "nearest" and match.profile.a == profile.a
    again = import_darktable(dt_file, out, scale="dng")  # replaces the files
    assert len(again) == 4 and read_nprof(out / "Nikon-D750-12800.nprof").scale == "dng"


def test_import_darktable_default_path(
    dt_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nprof, "DARKTABLE_JSON_PATHS", (str(tmp_path / "no.json"), str(dt_file)))
    assert find_darktable_json() == dt_file
    assert len(import_darktable(None, tmp_path / "out")) == 4
    monkeypatch.setattr(nprof, "DARKTABLE_JSON_PATHS", (str(tmp_path / "no.json"),))
    with pytest.raises(KpnError, match=r"noiseprofiles\.json: not at darktable's usual paths"):
        import_darktable(None, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


def mutate(change: str) -> str:
    data = darktable_json()
    makers = data["noiseprofiles"]
    assert isinstance(makers, list)
    first = makers[0]["models"][0]["profiles"][0]
    if change == "version":
        data["version"] = 1
    elif change == "no list":
        data["noiseprofiles"] = {}
    elif change == "maker":
        del makers[1]["maker"]
    elif change == "models":
        makers[1]["models"] = "D750"
    elif change == "a size":
        first["a"] = [1e-5, 2e-5]
    elif change == "b null":
        first["b"] = [1e-7, None, 5e-7]
    elif change == "iso text":
        first["iso"] = "100"
    elif change == "iso zero":
        first["iso"] = 0
    elif change == "iso fraction":
        first["iso"] = 100.5
    elif change == "entry":
        makers[0]["models"][0]["profiles"][1] = [1, 2]
    elif change == "collision":
        makers[0]["models"][1]["model"] = "EOS/1Ds"
        makers[0]["models"].append({**makers[0]["models"][1], "model": "EOS_1Ds"})
    return json.dumps(data)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ("version", "not a darktable noise profile file of version 0 (version 1)"),
        ("no list", "top level: 'noiseprofiles' must be a list"),
        ("maker", "noiseprofiles[1]: 'maker' must be a one-line name, got None"),
        ("models", "noiseprofiles[1]: 'models' must be a list"),
        ("a size", "noiseprofiles[0].models[0].profiles[0]: 'a' must be 3 finite numbers"),
        ("b null", "profiles[0]: 'b' must be 3 finite numbers, got [1e-07, None, 5e-07]"),
        ("iso text", "profiles[0]: 'iso' must be a number >= 1, got '100'"),
        ("iso zero", "'iso' must be a number >= 1, got 0"),
        ("iso fraction", "'iso' 100.5 is not a whole number"),
        ("entry", "profiles[1]: expected an object with 'iso', 'a' and 'b'"),
        ("collision", "would both be written to Canon-EOS_1Ds-80.nprof"),
    ],
)
def test_darktable_bad_input(tmp_path: Path, change: str, fragment: str) -> None:
    path = tmp_path / "noiseprofiles.json"
    path.write_text(mutate(change))
    out = tmp_path / "out"
    with pytest.raises(KpnError, match=re.escape(fragment)) as err:
        import_darktable(path, out)
    assert_one_line_naming(err, path)
    assert not out.exists() or list(out.iterdir()) == []


def test_darktable_not_json(tmp_path: Path) -> None:
    path = tmp_path / "noiseprofiles.json"
    path.write_text('{"version": 0,\n "noiseprofiles": [}')
    with pytest.raises(KpnError, match=r"not JSON \(line 2, column 20: Expecting value\)") as err:
        read_darktable(path)
    assert_one_line_naming(err, path)
    with pytest.raises(KpnError, match="no such file"):
        read_darktable(tmp_path / "absent.json")
    with pytest.raises(KpnError, match="cannot be put on the raw scale"):
        read_darktable(path, scale="raw")


# --- command line ----------------------------------------------------------------------
def test_cli_import(dt_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert main(["nprof", "import-darktable", str(dt_file), "-o", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote 4 noise profiles of 3 cameras to {out} (u16 scale)\n"
    assert len(list(out.iterdir())) == 4
    assert main(["nprof", "import-darktable", str(dt_file), "-o", str(out), "--scale", "dng"]) == 0
    assert read_nprof(out / "Canon-EOS-1Ds-100.nprof").scale == "dng"


def test_cli_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "noiseprofiles.json"
    path.write_text(mutate("a size"))
    out = tmp_path / "cli"
    assert main(["nprof", "import-darktable", str(path), "-o", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"error: {path}: ") and captured.err.count("\n") == 1
    assert not out.exists()
    with pytest.raises(SystemExit) as exit_info:  # argparse: -o is required
        main(["nprof", "import-darktable", str(path)])
    assert exit_info.value.code == 2
