"""The documentation works as written. docs/vkdt.md: its Python blocks run, the names it
cites exist, and its patch for vkdt applies to the vkdt commit it is written for (and
compiles, where glslang is installed). docs/design.md: every section the code cites
exists, every module and name it cites exists, and no file sends a reader to a document
outside the repository."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
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


def assert_resolves(name: str) -> None:
    """``kpn.module.attribute...`` imports: the longest importable module, then attributes."""
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[split:]:
            assert hasattr(target, attribute), name
            target = getattr(target, attribute)
        return
    raise AssertionError(name)  # pragma: no cover - "kpn" always imports


def test_cited_names_exist() -> None:
    """Every `kpn.module.name` the page cites imports (trailing calls and `(...)` aside)."""
    names = sorted(set(DOTTED.findall(DOC.read_text(encoding="utf-8"))))
    assert "kpn.vkdt.lut.LutFile.network" in names
    for name in names:
        assert_resolves(name)


def test_assert_resolves_refuses_a_missing_name() -> None:
    assert_resolves("kpn.model.sampling.mirror_index")
    with pytest.raises(AssertionError):
        assert_resolves("kpn.model.sampling.no_such_function")


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


# --- docs/design.md ----------------------------------------------------------------------
DESIGN = ROOT / "docs" / "design.md"
# What the repository's text may cite: its own files, never a document outside it.
SCANNED = ("kpn", "benchmarks", "scripts", "docs", "tests", "README.md", "train.py", "infer.py")
SKIPPED_FOLDERS = {"__pycache__", ".pytest_cache", ".ruff_cache"}
# Written so that this file's own source does not match them: it is scanned too.
OUTSIDE = (
    re.compile(r"\.\./shared/"),  # the sibling folder a clone does not have
    re.compile(r"\bSPE[C]\b"),  # the contract of that folder, now docs/design.md
    re.compile(r"(?i)\bspe[c]\.md\b"),
)
SECTION_HEADING = re.compile(r"^## (\d+)\. \S", re.MULTILINE)
# "design §4", "docs/design.md §9, §10", "design §1-§5 and §10": one citation each
CITATION = re.compile(r"(?i)\bdesign(?:\.md)?\s+(§\d+(?:(?:-|, | and )§\d+)*)")
SECTION = re.compile(r"§(\d+)")
KPN_MODULE = re.compile(r"(?<![\w./-])kpn/[\w/]+\.py\b")
DESIGN_LINK = re.compile(r"\]\(([^)#\s]+)(?:#([^)\s]+))?\)")


def text_files(*names: str) -> list[tuple[Path, str]]:
    """(path, text) of every text file under ``names`` (folders or files) below the
    repository root; files holding a NUL byte (weights, images) are not text."""
    found = []
    for name in names:
        top = ROOT / name
        paths = [top] if top.is_file() else sorted(top.rglob("*"))
        for path in paths:
            if not path.is_file() or SKIPPED_FOLDERS & set(path.relative_to(ROOT).parts):
                continue
            data = path.read_bytes()
            if b"\0" not in data:
                found.append((path, data.decode("utf-8", errors="replace")))
    return found


def design_sections() -> set[int]:
    """The numbers of docs/design.md's ``## N. Title`` sections."""
    return {int(number) for number in SECTION_HEADING.findall(DESIGN.read_text("utf-8"))}


def cited_sections(text: str) -> list[int]:
    """The section numbers of every ``design §N`` citation in ``text``."""
    return [int(n) for group in CITATION.findall(text) for n in SECTION.findall(group)]


def test_citation_parsing() -> None:
    text = "(docs/design.md §9, §10) and design §1-§5 and §12; Design §0's mirror; §7 alone"
    assert cited_sections(text) == [9, 10, 1, 5, 12, 0]


def test_design_numbers_its_sections_without_gaps() -> None:
    """0..10 follow vkdt's stages, as the code's citations expect; kpn's own come after."""
    sections = design_sections()
    assert sections == set(range(max(sections) + 1))
    assert max(sections) >= 15


def test_nothing_cites_a_document_outside_the_repository() -> None:
    files = text_files(*SCANNED)
    assert any(path == Path(__file__).resolve() for path, _ in files)
    found = [
        f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, match.start()) + 1}: {match.group()}"
        for path, text in files
        for pattern in OUTSIDE
        for match in pattern.finditer(text)
    ]
    assert not found, "\n".join(found)


def test_outside_patterns_catch_what_they_are_for() -> None:
    for line in ("see .." + "/shared/notes.md", "(SP" + "EC 4)", "the sp" + "ec.md file"):
        assert any(pattern.search(line) for pattern in OUTSIDE), line
    assert not any(pattern.search("SPEC_TAPS in shared/coopmat.glsl") for pattern in OUTSIDE)


def test_every_section_cited_in_kpn_exists() -> None:
    """Each ``design §N`` in kpn/ names a section of docs/design.md, and every § there is
    such a citation (a bare §N would escape the check)."""
    sections = design_sections()
    cited = 0
    for path, text in text_files("kpn"):
        numbers = cited_sections(text)
        where = path.relative_to(ROOT)
        assert len(numbers) == text.count("§"), f"{where}: a § outside a design citation"
        missing = sorted(set(numbers) - sections)
        assert not missing, f"{where} cites design §{missing[0]}, which docs/design.md lacks"
        cited += len(numbers)
    assert cited >= 40


def test_every_section_cited_elsewhere_exists() -> None:
    sections = design_sections()
    for path, text in text_files(*(name for name in SCANNED if name != "kpn")):
        missing = sorted(set(cited_sections(text)) - sections)
        assert not missing, f"{path.relative_to(ROOT)} cites design §{missing[0]}"


def test_design_names_existing_modules() -> None:
    modules = sorted(set(KPN_MODULE.findall(DESIGN.read_text("utf-8"))))
    assert "kpn/model/apply.py" in modules and len(modules) >= 20
    missing = [module for module in modules if not (ROOT / module).is_file()]
    assert not missing, missing


def test_design_cited_names_exist() -> None:
    names = sorted(set(DOTTED.findall(DESIGN.read_text("utf-8"))))
    assert len(names) >= 2
    for name in names:
        assert_resolves(name)


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation but ``-`` and ``_``
    dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", markdown, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_heading_anchors() -> None:
    text = '# A b\n## vkdt\'s float16 (`model.precision = "vkdt-f16"`)\n'
    assert heading_anchors(text) == {"a-b", "vkdts-float16-modelprecision--vkdt-f16"}


@pytest.mark.parametrize("page", ["design.md", "vkdt.md"])
def test_links_between_the_docs_resolve(page: str) -> None:
    """Every relative link of the page names a file beside it, and its anchor a heading."""
    links = DESIGN_LINK.findall((ROOT / "docs" / page).read_text("utf-8"))
    local = [(target, anchor) for target, anchor in links if "://" not in target]
    assert local
    for target, anchor in local:
        linked = ROOT / "docs" / target
        assert linked.is_file(), f"{page} links to {target}, which does not exist"
        if anchor:
            assert anchor in heading_anchors(linked.read_text("utf-8")), f"{target}#{anchor}"


# --- README.md's test command is what CI runs ---------------------------------------------
def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run's command is the README's "run the tests" line, byte for byte, and that line
    checks the code with ruff (lint and format) before the tests."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = [line.strip() for line in readme.splitlines() if line.startswith("    bash ")]
    (test_command,) = [c for c in commands if c.endswith(".venv/bin/python -m pytest -q")]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci[-1] == test_command
    assert "ruff check ." in test_command and "ruff format --check ." in test_command


def test_setup_script_python_lines_run() -> None:
    """scripts/setup.sh's ``python -c`` lines (the native library's build) import what
    they name: a module moved elsewhere would otherwise fail only on a fresh machine."""
    setup = (ROOT / "scripts" / "setup.sh").read_text(encoding="utf-8")
    snippets = re.findall(r'^\.venv/bin/python -c "([^"]+)"$', setup, re.MULTILINE)
    assert any("native.library()" in s for s in snippets), setup
    for snippet in snippets:
        done = subprocess.run(
            [sys.executable, "-c", snippet], cwd=ROOT, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, f"{snippet}: {done.stderr}"
