"""kpn as a wheel: built from the repository, installed into a fresh virtual environment,
and run from a folder outside the repository. The presets, the shipped models and the C
sources are package data (pyproject.toml); nothing may read them from the source tree.

The fresh environment gets the dependencies from the project's .venv through a ``.pth``
line naming .venv's site-packages (a plain path, so .venv's own ``.pth`` files, among them
the editable kpn, are not processed): kpn itself can come only from the wheel.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import imagecodecs
import numpy as np
import pytest

from conftest import TINY_RUN

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DATA = ("kpn/configs", "kpn/weights", "kpn/model/csrc")  # pyproject's package-data
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def run(argv: list[object], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run ``argv`` in ``cwd``; a failure shows the command's output."""
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{argv}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built without network from a copy of the sources (setuptools writes its
    build/ and egg-info beside them, which must not land in the repository)."""
    source = tmp_path_factory.mktemp("source")
    shutil.copytree(ROOT / "kpn", source / "kpn", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", dist, source],
        cwd=source,
        env=clean_env(None),
    )
    (built,) = dist.glob("kpn-*.whl")
    return built


def clean_env(venv: Path | None) -> dict[str, str]:
    """The environment without anything that points Python at the repository or .venv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["OMP_NUM_THREADS"] = "1"
    if venv is not None:
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(venv)
    return env


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel installed, outside the repository."""
    venv = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=venv, env=clean_env(None))
    python = venv / "bin" / "python"
    site = run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        cwd=venv,
        env=clean_env(venv),
    ).stdout.strip()
    (Path(site) / "kpn_test_dependencies.pth").write_text(
        sysconfig.get_path("purelib") + "\n", encoding="utf-8"
    )
    pip = [python, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    run([*pip, "install", "--no-deps", "--no-index", wheel], cwd=venv, env=clean_env(venv))
    return venv


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A working folder outside the repository."""
    assert not tmp_path.resolve().is_relative_to(ROOT)
    return tmp_path


def test_wheel_holds_every_module_and_the_package_data(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    expected = {
        str(p.relative_to(ROOT))
        for p in (ROOT / "kpn").rglob("*")
        if p.is_file()
        and "__pycache__" not in p.parts
        and (p.suffix == ".py" or str(p.relative_to(ROOT)).startswith(PACKAGE_DATA))
    }
    shipped = {
        "kpn/weights/design-star21/checkpoint.pt",
        "kpn/weights/design-chroma/checkpoint.pt",
        "kpn/weights/design/checkpoint.pt",
    }
    assert {"kpn/configs/design.toml", *shipped} <= expected
    assert expected - names == set()
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    with zipfile.ZipFile(wheel) as archive:
        scripts = archive.read(entry_points).decode()
    for script in ("kpn = ", "kpn-infer = ", "kpn-train = "):
        assert script in scripts


def test_kpn_comes_from_the_wheel(venv: Path, outside: Path) -> None:
    where = run(
        [venv / "bin" / "python", "-c", "import kpn; print(kpn.__file__)"],
        cwd=outside,
        env=clean_env(venv),
    ).stdout.strip()
    assert Path(where).is_relative_to(venv), where


def test_kpn_infer_denoises_with_the_shipped_model(venv: Path, outside: Path) -> None:
    """kpn-infer with no weights: the default model shipped in the wheel; the noise
    estimated from the photo (a smooth ramp with Gaussian noise)."""
    ramp = np.linspace(0.2, 0.8, 96, dtype=np.float32)
    clean = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], 0.5), axis=-1)
    noisy = clean + np.random.default_rng(0).normal(0.0, 0.03, clean.shape)
    photo = outside / "photo.png"
    photo.write_bytes(imagecodecs.png_encode(np.round(np.clip(noisy, 0, 1) * 255).astype(np.uint8)))
    run(
        [venv / "bin" / "kpn-infer", photo.name, "--noise", "auto"],
        cwd=outside,
        env=clean_env(venv),
    )
    (written,) = outside.glob("photo.denoised.*")
    assert imagecodecs.imread(written.read_bytes()).shape == (96, 96, 3)


def test_kpn_train_finds_the_preset_by_name(venv: Path, outside: Path) -> None:
    settings = [f"{s}.{k}={v}" for s, table in TINY_RUN.items() for k, v in table.items()]
    argv = [venv / "bin" / "kpn-train", "--config", "quick", "--out", "run"]
    for setting in [*settings, "train.steps=2"]:
        argv += ["--set", setting]
    run(argv, cwd=outside, env=clean_env(venv))
    assert (outside / "run" / "checkpoint.pt").is_file()
    assert (outside / "run" / "weights.lut").is_file()
    assert "steps = 2" in (outside / "run" / "config.toml").read_text(encoding="utf-8")


def test_summary_of_a_preset(venv: Path, outside: Path) -> None:
    out = run(
        [venv / "bin" / "python", "-m", "kpn", "summary", "--config", "design"],
        cwd=outside,
        env=clean_env(venv),
    ).stdout
    assert out.splitlines()[-1] == "total parameters: 23552"


def test_readme_python_blocks_run_from_any_folder(venv: Path, outside: Path) -> None:
    """The README's Python blocks, each on its own; ``image`` is the reader's photo."""
    blocks = PYTHON_BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 2 and any("kpn.load()" in block for block in blocks)
    script = outside / "blocks.py"
    script.write_text(
        textwrap.dedent(f"""\
            import numpy as np
            for index, block in enumerate({blocks!r}):
                image = np.random.default_rng(index).random((64, 64, 3), dtype=np.float32)
                code = compile(block, f"README.md python block {{index}}", "exec")
                exec(code, {{"image": image}})
            """),
        encoding="utf-8",
    )
    run([venv / "bin" / "python", script.name], cwd=outside, env=clean_env(venv))
