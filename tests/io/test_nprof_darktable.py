"""kpn.io.nprof's darktable import: noiseprofiles.json read by hand, written as .nprof files
that find_profile reads, bad input refused in one line, and ``python -m kpn nprof
import-darktable``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kpn.__main__ import main
from kpn.errors import KpnError
from kpn.io import nprof
from kpn.io.nprof import (
    find_darktable_json,
    find_profile,
    import_darktable,
    read_darktable,
    read_nprof,
)

from conftest import assert_one_line_error


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
    assert_one_line_error(err, starts=f"{path}: ")
    assert not out.exists() or list(out.iterdir()) == []


def test_darktable_not_json(tmp_path: Path) -> None:
    path = tmp_path / "noiseprofiles.json"
    path.write_text('{"version": 0,\n "noiseprofiles": [}')
    with pytest.raises(KpnError, match=r"not JSON \(line 2, column 20: Expecting value\)") as err:
        read_darktable(path)
    assert_one_line_error(err, starts=f"{path}: ")
    with pytest.raises(KpnError, match="no such file"):
        read_darktable(tmp_path / "absent.json")
    with pytest.raises(KpnError, match="scale='raw': darktable's profiles cannot be put on"):
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
