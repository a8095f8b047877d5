"""Tests for ``python -m kpn`` (kpn/__main__.py): ``main(argv)`` called in-process."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from kpn.__main__ import main

from conftest import assert_error_line

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
DESIGN = str(CONFIGS / "design.toml")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


class TestSummary:
    def test_design_37x23(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, err = run(capsys, "summary", "--config", DESIGN, "--size", "37x23")
        assert (code, err) == (0, "")
        lines = out.splitlines()
        # W 64: 64*32 + 5*64*64 + 16*64 = 2048 + 20480 + 1024 = 23552
        assert lines[-1] == "total parameters: 23552"
        # coarse size ((w+1)//2, (h+1)//2): 37x23 -> 19x12 -> 10x6 -> 5x3, 4 levels
        levels = [line.strip() for line in lines if line.strip().startswith("level ")]
        assert levels == [
            "level 0: 37x23 (filtered)",
            "level 1: 19x12 (filtered)",
            "level 2: 10x6 (filtered)",
            "level 3: 5x3 (filtered)",
        ]
        # one line per bias-free layer: [out x in]
        assert sum("[64 x 32]" in line for line in lines) == 1
        assert sum("[64 x 64]" in line for line in lines) == 5
        assert sum("[16 x 64]" in line for line in lines) == 1

    def test_vkdt_head_w32_roles(self, capsys: pytest.CaptureFixture[str]) -> None:
        """add: one more level, the residual; denoise_levels 2: levels 2, 3 passed."""
        config = str(CONFIGS / "vkdt-head-w32.toml")
        code, out, _ = run(capsys, "summary", "--config", config, "--size", "37x23")
        assert code == 0
        levels = [line.strip() for line in out.splitlines() if line.strip().startswith("level ")]
        assert levels == [
            "level 0: 37x23 (filtered)",
            "level 1: 19x12 (filtered)",
            "level 2: 10x6 (passed through)",
            "level 3: 5x3 (passed through)",
            "level 4: 3x2 (residual low-pass)",
        ]

    def test_set_overrides_the_config(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, _ = run(
            capsys, "summary", "--config", DESIGN, "--size", "8x8", "--set", "model.width=64"
        )
        assert code == 0
        # 64*32 + 5*64*64 + 16*64 = 2048 + 20480 + 1024 = 23552
        assert out.splitlines()[-1] == "total parameters: 23552"

    def test_size_is_case_insensitive(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, _ = run(capsys, "summary", "--config", DESIGN, "--size", "64X48")
        assert code == 0
        assert "level 0: 64x48 (filtered)" in out


class TestSmoke:
    def test_design_64x48(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, err = run(capsys, "smoke", "--config", DESIGN, "--size", "64x48")
        assert (code, err) == (0, "")
        assert "64x48" in out
        psnr = [line for line in out.splitlines() if line.startswith("PSNR")]
        assert len(psnr) == 1
        match = re.fullmatch(r"PSNR noisy (\d+\.\d\d) dB -> output (\d+\.\d\d) dB", psnr[0])
        assert match is not None, psnr[0]
        # noise (a, b) = (1e5, 100) on a [0,1] scene: sigma about
        # sqrt(1e5 + 65535*0.5*100)/65535 = 0.028, so a PSNR near 31 dB
        assert 20.0 < float(match.group(1)) < 40.0

    def test_seed_makes_it_reproducible(self, capsys: pytest.CaptureFixture[str]) -> None:
        argv = ("smoke", "--config", DESIGN, "--size", "16x16", "--seed", "3")
        first = [line for line in run(capsys, *argv)[1].splitlines() if line.startswith("PSNR")]
        second = [line for line in run(capsys, *argv)[1].splitlines() if line.startswith("PSNR")]
        assert first == second


class TestErrors:
    @pytest.mark.parametrize("command", ["summary", "smoke"])
    def test_missing_config(
        self, command: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
    ) -> None:
        missing = str(tmp_path / "nowhere.toml")
        code, out, err = run(capsys, command, "--config", missing, "--size", "8x8")
        assert (code, out) == (2, "")
        assert_error_line(err, missing)

    @pytest.mark.parametrize("size", ["64by48", "0x5", "5x0", "x", "-3x4", "64x", "1.5x2"])
    @pytest.mark.parametrize("command", ["summary", "smoke"])
    def test_bad_size(self, command: str, size: str, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, err = run(capsys, command, "--config", DESIGN, f"--size={size}")
        assert (code, out) == (2, "")
        assert_error_line(err, "--size", size)

    @pytest.mark.parametrize(
        ("override", "word"),
        [
            ("model.width", "model.width"),
            ("model.width=33", "33"),
            ("model.nope=1", "model.nope"),
            ("nope.width=1", "nope"),
        ],
    )
    @pytest.mark.parametrize("command", ["summary", "smoke"])
    def test_bad_set(
        self, command: str, override: str, word: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, err = run(capsys, command, "--config", DESIGN, "--set", override)
        assert (code, out) == (2, "")
        assert_error_line(err, word)

    def test_invalid_config_file(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        path = tmp_path / "bad.toml"
        path.write_text("[model]\nwidth = 40\n", encoding="utf-8")
        code, out, err = run(capsys, "summary", "--config", str(path))
        assert (code, out) == (2, "")
        assert_error_line(err, str(path), "model.width")

    def test_no_command_is_a_usage_error(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exit_info:
            main([])
        assert exit_info.value.code == 2
        assert "usage" in capsys.readouterr().err


# a 2x3 colour image for TestPfm: pixel (x, y) holds (10*y + x, 100 + 10*y + x, -(10*y + x))
PFM_IMAGE = [[[10 * y + x, 100 + 10 * y + x, -(10 * y + x)] for x in range(2)] for y in range(3)]


class TestPfm:
    """``pfm --to-vkdt`` / ``--from-vkdt``: the same pixels in the other row order."""

    @staticmethod
    def standard_bytes(rows: list[list[list[float]]]) -> bytes:
        """A PFM written by hand: header, then the rows bottom first (the format's order)."""
        data = b"".join(struct.pack("<3f", *pixel) for row in reversed(rows) for pixel in row)
        return b"PF\n2 3\n-1.0\n" + data

    def test_to_vkdt_and_back(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        standard, vkdt, back = tmp_path / "in.pfm", tmp_path / "vkdt.pfm", tmp_path / "back.pfm"
        standard.write_bytes(self.standard_bytes(PFM_IMAGE))
        code, out, err = run(capsys, "pfm", "--to-vkdt", str(standard), str(vkdt))
        assert (code, err) == (0, "")
        assert "vkdt's (top row first)" in out and "2 x 3" in out
        raw = vkdt.read_bytes()
        # o-pfm's header: "-1.0" padded with zeros so that the data starts at byte 16
        assert raw[:16] == b"PF\n2 3\n-1.00000\n"
        values = struct.unpack("<18f", raw[16:])
        # the top row (y = 0) first: pixel (0, 0), (1, 0), then y = 1, y = 2
        assert values[:6] == (0.0, 100.0, -0.0, 1.0, 101.0, -1.0)
        assert values[-3:] == (21.0, 121.0, -21.0)
        code, out, err = run(capsys, "pfm", "--from-vkdt", str(vkdt), str(back))
        assert (code, err) == (0, "")
        assert back.read_bytes() == standard.read_bytes()

    def test_in_place(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        path = tmp_path / "x.pfm"
        path.write_bytes(self.standard_bytes(PFM_IMAGE))
        assert run(capsys, "pfm", "--to-vkdt", str(path), str(path))[0] == 0
        assert run(capsys, "pfm", "--from-vkdt", str(path), str(path))[0] == 0
        assert path.read_bytes() == self.standard_bytes(PFM_IMAGE)

    @pytest.mark.parametrize(
        ("content", "words"),
        [
            (None, ["no such file"]),
            (b"P6\n2 2\n255\n" + bytes(12), ["not a PFM file"]),
            (b"PF\n2 3\n-1.0\n" + bytes(10), ["truncated"]),
        ],
        ids=["missing", "not-pfm", "truncated"],
    )
    def test_bad_input(
        self,
        capsys: pytest.CaptureFixture[str],
        tmp_path: Path,
        content: bytes | None,
        words: list[str],
    ) -> None:
        source, target = tmp_path / "in.pfm", tmp_path / "out.pfm"
        if content is not None:
            source.write_bytes(content)
        code, out, err = run(capsys, "pfm", "--to-vkdt", str(source), str(target))
        assert code == 2 and out == ""
        assert_error_line(err, str(source), *words)
        assert not target.exists()
        assert list(tmp_path.iterdir()) == ([source] if content is not None else [])

    def test_needs_one_direction(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exit_info:
            main(["pfm", "a.pfm", "b.pfm"])
        assert exit_info.value.code == 2
        assert "one of the arguments --to-vkdt --from-vkdt is required" in capsys.readouterr().err
