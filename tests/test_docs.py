"""docs/vkdt.md works as written: its Python blocks run, the names it cites exist, and its
patch for vkdt applies to the vkdt commit it is written for (and compiles, where glslang
is installed)."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "vkdt.md"
VKDT_REPO = Path(os.environ.get("VKDT_REPO", "/work/.mirror/hanatos+vkdt/repo"))
VKDT_COMMIT = "ce12d6edfa70bc391c42b5c6b6713e2842017a87"
FENCE = re.compile(r"^( *)```(\w*)$")


def fenced_blocks(text: str, language: str) -> list[str]:
    """The bodies of the ```language blocks of a markdown text, their indent removed."""
    blocks, lines, body, indent = [], text.splitlines(), None, ""
    for line in lines:
        match = FENCE.match(line)
        if body is None:
            if match and match.group(2) == language:
                body, indent = [], match.group(1)
        elif match and match.group(1) == indent and not match.group(2):
            blocks.append("\n".join(body) + "\n")
            body = None
        else:
            assert not line.strip() or line.startswith(indent), line
            body.append(line[len(indent) :])
    assert body is None, f"unclosed ```{language} block"
    return blocks


def test_fenced_blocks_reads_indented_blocks() -> None:
    text = "a\n  ```python\n  x = 1\n\n  y = 2\n  ```\n```diff\n-a\n+b\n```\n"
    assert fenced_blocks(text, "python") == ["x = 1\n\ny = 2\n"]
    assert fenced_blocks(text, "diff") == ["-a\n+b\n"]


PYTHON_BLOCKS = fenced_blocks(DOC.read_text(encoding="utf-8"), "python")


def test_doc_has_python_blocks() -> None:
    assert len(PYTHON_BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_python_block_runs(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each block runs on its own, in an empty folder (they write their own files)."""
    monkeypatch.chdir(tmp_path)
    exec(compile(PYTHON_BLOCKS[index], f"docs/vkdt.md python block {index}", "exec"), {})


DOTTED = re.compile(r"`(kpn(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def test_cited_names_exist() -> None:
    """Every `kpn.module.name` the page cites imports (trailing calls and `(...)` aside)."""
    names = sorted(set(DOTTED.findall(DOC.read_text(encoding="utf-8"))))
    assert "kpn.vkdt.lut.LutFile.network" in names
    for name in names:
        parts = name.split(".")
        for split in range(len(parts), 0, -1):
            try:
                target = importlib.import_module(".".join(parts[:split]))
            except ModuleNotFoundError:
                continue
            for attribute in parts[split:]:
                assert hasattr(target, attribute), name
                target = getattr(target, attribute)
            break
        else:  # pragma: no cover - the loop always imports "kpn"
            raise AssertionError(name)


def vkdt_sources(folder: Path) -> Path:
    """vkdt's kpn-t, shared and localsize sources at the commit, from the mirror."""
    if not (VKDT_REPO / "HEAD").exists() and not (VKDT_REPO / ".git").exists():
        pytest.skip(f"no vkdt repository at {VKDT_REPO} (set VKDT_REPO)")
    paths = [
        "src/pipe/modules/kpn-t",
        "src/pipe/modules/shared",
        "src/pipe/modules/shared.glsl",
        "src/pipe/modules/localsize.h",
    ]
    archive = subprocess.run(
        ["git", "--git-dir", str(VKDT_REPO), "archive", VKDT_COMMIT, *paths],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        pytest.skip(f"{VKDT_REPO} lacks vkdt {VKDT_COMMIT[:8]}")
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def the_patch() -> str:
    (patch,) = fenced_blocks(DOC.read_text(encoding="utf-8"), "diff")
    return patch


def test_patch_applies_to_vkdt(tmp_path: Path) -> None:
    if shutil.which("patch") is None:
        pytest.skip("no patch program")
    tree = vkdt_sources(tmp_path)
    result = subprocess.run(
        ["patch", "-p1", "--forward"],
        input=the_patch(),
        text=True,
        capture_output=True,
        cwd=tree,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fuzz" not in result.stdout and "offset" not in result.stdout, result.stdout
    inf = (tree / "src/pipe/modules/kpn-t/inf.comp").read_text()
    assert '#include "input.glsl"' not in inf
    impl = (tree / "src/pipe/modules/kpn-t/inf-impl.glsl").read_text()
    assert impl.index("} push;") < impl.index('#include "input.glsl"')


SHADERS = ("inf.comp", "inf-.comp", "fwd.comp", "fwd-.comp", "mulw.comp", "infapply.comp")
# glslang 12 (Debian 12) has no GL_KHR_cooperative_matrix: compile the fallback branch
FALLBACK = [
    "-DVKDT_COOPMAT_FALLBACK",
    "-Dgl_CooperativeMatrixLayoutRowMajor=0",
    "-Dgl_CooperativeMatrixLayoutColumnMajor=1",
]


def compile_failures(tree: Path, width: int) -> list[str]:
    folder = tree / "src/pipe/modules/kpn-t"
    config = folder / "config.h"
    text = re.sub(r"(?m)^#define WIDTH \d+", f"#define WIDTH {width}", config.read_text())
    config.write_text(text)
    failed = []
    flags = [*FALLBACK, "-I..", "-I.", "--target-env", "vulkan1.3"]  # vkdt's GLSLC_FLAGS
    for shader in SHADERS:
        result = subprocess.run(
            ["glslangValidator", *flags, shader, "-o", str(tree / f"{shader}.spv")],
            capture_output=True,
            text=True,
            cwd=folder,
            check=False,
        )
        if result.returncode != 0:
            failed.append(shader)
    return failed


def test_patch_makes_width_32_compile(tmp_path: Path) -> None:
    """Defect 8: at ce12d6ed WIDTH 32 stops in all six shaders that include input.glsl;
    patched, they compile at WIDTH 32 and (as before) 64."""
    if shutil.which("glslangValidator") is None or shutil.which("patch") is None:
        pytest.skip("no glslangValidator (apt install glslang-tools) or patch")
    tree = vkdt_sources(tmp_path)
    assert compile_failures(tree, 32) == list(SHADERS)
    subprocess.run(["patch", "-p1", "--quiet"], input=the_patch(), text=True, cwd=tree, check=True)
    assert compile_failures(tree, 32) == []
    assert compile_failures(tree, 64) == []
