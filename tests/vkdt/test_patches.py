"""vkdt/patches: kpn's fixes for vkdt as a `git format-patch` series (issue 24), and
vkdt/apply_series.sh, which applies it.

Without vkdt (CI): each patch is a well-formed format-patch, BASE is the commit
docs/vkdt.md is written for, and each patch changes exactly the files and lines that its
defect in docs/vkdt.md names, in the way its Fix says. Where vkdt's repository is at hand
(VKDT_REPO, as in tests/test_docs.py): the series applies to that commit, patch by patch,
and apply_series.sh applies it and refuses other trees.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PATCHES = ROOT / "vkdt" / "patches"
APPLY_SERIES = ROOT / "vkdt" / "apply_series.sh"
DOC = ROOT / "docs" / "vkdt.md"
VKDT_REPO = Path(os.environ.get("VKDT_REPO", "/work/.mirror/hanatos+vkdt/repo"))

KPN_T = "src/pipe/modules/kpn-t/"
# The defect of docs/vkdt.md that each patch fixes, in series order, and the files the
# defect's Where and Fix name (defect 8's are those of the docs' own patch, step 3).
DEFECT_OF_PATCH = (8, 1, 2, 6)
FILES_OF_PATCH = (
    {
        KPN_T + name
        for name in (
            "fwd-.comp",
            "fwd-impl.glsl",
            "fwd.comp",
            "inf-.comp",
            "inf-impl.glsl",
            "inf.comp",
            "infapply.comp",
            "mulw-impl.glsl",
            "mulw.comp",
        )
    },
    {KPN_T + "fwd.h"},
    {KPN_T + "mip.comp"},
    {"src/pipe/modules/kpn/main.c"},
)
# Patches 0005 on: what kpn's design (weights/design) needs, each a config.h switch whose
# default keeps vkdt's behaviour, so vkdt's own weights run as before: (the config.h line
# the patch adds, the file besides config.h it changes). 0006 is defect 4's fix.
KPN_M = "src/pipe/modules/kpn/"
SWITCH_OF_PATCH = (
    ("// #define INPUT_STAR15_SNR", KPN_T + "input.glsl"),
    ("#define DENOISE_LEVELS 2", KPN_T + "apply.comp"),
    ("// #define POST_MLP_DIFF_MIRROR_COARSE", KPN_T + "up.comp"),
    ("#define KPN_LEVELS 6", KPN_M + "main.c"),
)
# After the switches, later defects' fixes: (the docs' defect number, the files it changes)
LATER_FIXES = (
    (11, {KPN_T + "main.c", KPN_T + "fwd-.comp"}),
    (13, {KPN_T + "mip.comp"}),
    (16, {KPN_T + "dapply.comp"}),
    (14, {KPN_T + "adam.comp"}),
    (18, {KPN_T + "dup.comp"}),
    (19, {KPN_T + "dup.comp"}),
)
FORMAT_PATCH_FROM = re.compile(r"^From ([0-9a-f]{40}) Mon Sep 17 00:00:00 2001$")
SHA = re.compile(r"^[0-9a-f]{40}$")
DIFF_BLOCK = re.compile(r"(?ms)^( *)```diff\n(.*?)^\1```$")  # (indent, body)
HUNK = re.compile(r"^@@ -(\d+)(?:,\d+)? \+\d+(?:,\d+)? @@")


@dataclass
class Patch:
    """One file of the series, taken apart as `git format-patch` writes it."""

    name: str
    sha: str
    headers: dict[str, str]  # From, Date, Subject (folded lines joined)
    message: str  # the commit message's body
    diff: str  # from the first "diff --git" to the signature
    signature: str  # the git version below "-- "

    def files(self) -> set[str]:
        return set(re.findall(r"(?m)^\+\+\+ b/(\S+)$", self.diff))

    def changes(self) -> list[tuple[str, int | None, str]]:
        """(sign, line number in the old file or None for an added line, text) of every
        removed and added line."""
        found, old = [], 0
        for line in self.diff.splitlines():
            if line.startswith(("--- ", "+++ ", "diff --git", "index ")):
                continue
            if hunk := HUNK.match(line):
                old = int(hunk.group(1))
            elif line.startswith("-"):
                found.append(("-", old, line[1:]))
                old += 1
            elif line.startswith("+"):
                found.append(("+", None, line[1:]))
            elif line.startswith(" "):
                old += 1
        return found


def parse_patch(path: Path) -> Patch:
    """Take a format-patch file apart; a file that is not one fails with what is missing."""
    lines = path.read_text(encoding="utf-8").splitlines()
    match = FORMAT_PATCH_FROM.match(lines[0])
    assert match, f"{path.name}: first line is not format-patch's 'From <sha> ...': {lines[0]}"
    blank = lines.index("")
    headers: dict[str, str] = {}
    key = ""
    for line in lines[1:blank]:
        if line.startswith(" "):  # a folded header line
            headers[key] += line
        else:
            key, _, value = line.partition(": ")
            headers[key] = value
    assert "---" in lines, f"{path.name}: no '---' between the message and the diff"
    separator = lines.index("---")
    first_diff = next(i for i, line in enumerate(lines) if line.startswith("diff --git "))
    assert "-- " in lines, f"{path.name}: no signature ('-- ' and git's version) at the end"
    signature = len(lines) - 1 - lines[::-1].index("-- ")
    return Patch(
        name=path.name,
        sha=match.group(1),
        headers=headers,
        message="\n".join(lines[blank + 1 : separator]),
        diff="\n".join(lines[first_diff:signature]),
        signature="\n".join(lines[signature + 1 :]).strip(),
    )


def series_names() -> list[str]:
    return (PATCHES / "series").read_text(encoding="utf-8").split()


@pytest.fixture(scope="module")
def patches() -> list[Patch]:
    return [parse_patch(PATCHES / name) for name in series_names()]


@pytest.fixture(scope="module")
def base() -> str:
    return (PATCHES / "BASE").read_text(encoding="utf-8").strip()


def doc_section(number: int) -> str:
    """The text of docs/vkdt.md's "### N. ..." defect entry."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index(f"\n### {number}. ")
    return text[start : text.index("\n### ", start + 1)]


# --- the series as files -------------------------------------------------------------------
def test_series_lists_every_patch_in_order() -> None:
    names = series_names()
    assert names == sorted(path.name for path in PATCHES.glob("*.patch"))
    count = len(DEFECT_OF_PATCH) + len(SWITCH_OF_PATCH) + len(LATER_FIXES)
    assert [name[:5] for name in names] == [f"{n:04}-" for n in range(1, count + 1)]


def test_base_is_the_commit_the_docs_are_written_for(base: str) -> None:
    assert SHA.match(base), base
    docs_commit = re.search(
        r"Line numbers refer to vkdt at commit ([0-9a-f]{8,40})", DOC.read_text()
    )
    assert docs_commit, "docs/vkdt.md no longer says which vkdt commit it is written for"
    assert base.startswith(docs_commit.group(1))


def test_patches_are_format_patch_files(patches: list[Patch], base: str) -> None:
    assert len({patch.sha for patch in patches}) == len(patches)
    for number, patch in enumerate(patches, start=1):
        assert patch.headers["From"] == "kpn <kpn@localhost>", patch.name
        assert re.match(r"\w{3}, \d{1,2} \w{3} \d{4} ", patch.headers["Date"]), patch.name
        subject = patch.headers["Subject"]
        digits = len(str(len(patches)))  # format-patch pads: [PATCH 01/10]
        assert subject.startswith(f"[PATCH {number:0{digits}}/{len(patches)}] "), (
            patch.name,
            subject,
        )
        assert re.match(r"\d+\.\d+", patch.signature), (patch.name, patch.signature)
        assert patch.diff.startswith("diff --git a/"), patch.name
        assert re.search(r"(?m)^index [0-9a-f]+\.\.[0-9a-f]+", patch.diff), patch.name
        assert re.search(r"(?m)^@@ -\d+", patch.diff), patch.name
    # --base=BASE puts it below the first patch's diff
    assert f"base-commit: {base}" in (PATCHES / series_names()[0]).read_text()


def test_messages_say_where_why_and_how_it_was_measured(patches: list[Patch]) -> None:
    """Written for vkdt's maintainer: the lines at BASE, the fix, and kpn's reproduction
    (docs/vkdt.md's defect entry)."""
    later = tuple(defect for defect, _ in LATER_FIXES)
    for patch, defect in zip(
        patches, DEFECT_OF_PATCH + (None,) * len(SWITCH_OF_PATCH) + later, strict=True
    ):
        words = " ".join(patch.message.split())  # the lines are wrapped anywhere
        assert "Line numbers refer to vkdt ce12d6ed" in words, patch.name
        assert "Measured" in words, patch.name
        if defect is not None:
            assert "Fix:" in words, patch.name
            assert f"docs/vkdt.md, defect {defect}" in words, patch.name
        else:  # a switch: its name, its default, and where kpn documents it
            assert re.search(r"docs/(vkdt|design)\.md", words), patch.name
            assert "default" in words, patch.name


def test_docs_list_the_series(base: str) -> None:
    """docs/vkdt.md's "The patch series" names every patch, in order, and the base."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("\n### The patch series (vkdt/patches)") :]
    names = series_names()
    assert [section.index(f"`{name}`") for name in names] == sorted(
        section.index(f"`{name}`") for name in names
    )
    assert base in section and "bash vkdt/apply_series.sh DIR" in section


# --- each patch is its defect's fix ------------------------------------------------------
def test_each_patch_touches_exactly_its_defects_files(patches: list[Patch]) -> None:
    first = len(DEFECT_OF_PATCH) + len(SWITCH_OF_PATCH)
    defects = patches[: len(DEFECT_OF_PATCH)] + patches[first:]
    numbers = DEFECT_OF_PATCH + tuple(defect for defect, _ in LATER_FIXES)
    files_of = FILES_OF_PATCH + tuple(files for _, files in LATER_FIXES)
    for patch, defect, files in zip(defects, numbers, files_of, strict=True):
        assert patch.files() == files, patch.name
        section = doc_section(defect)
        for file in files:  # the docs name each file (by its name; paths where ambiguous)
            assert Path(file).name in section, (defect, file)


def diff_by_file(diff: str) -> dict[str, list[str]]:
    """Each file's hunks (from its first "@@" on) of a diff, whatever its header lines
    and the function names git writes after a hunk's line numbers."""
    hunks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in diff.splitlines():
        if name := re.match(r"^\+\+\+ b/(\S+)$", line):
            current = hunks.setdefault(name.group(1), [])
        elif line.startswith(("diff --git", "index ", "--- a/", "base-commit:")) or not line:
            continue
        elif current is not None:  # git adds the enclosing function to "@@" lines
            current.append(re.sub(r"^(@@ [^@]+ @@).*", r"\1", line))
    return hunks


def test_width_32_patch_is_the_docs_patch(patches: list[Patch]) -> None:
    """Defect 8: 0001 is docs/vkdt.md's step-3 patch hunk for hunk (tests/test_docs.py
    checks that one against vkdt)."""
    (block,) = DIFF_BLOCK.findall(DOC.read_text(encoding="utf-8"))
    indent, body = block
    docs_patch = "\n".join(line.removeprefix(indent) for line in body.splitlines())
    assert diff_by_file(patches[0].diff) == diff_by_file(docs_patch)
    assert len(diff_by_file(docs_patch)) == 9


def test_kernel_store_patch(patches: list[Patch]) -> None:
    """Defect 1: fwd.h:104 stores RowMajor instead of ColumnMajor, and nothing else."""
    assert "`fwd.h:104`" in doc_section(1)
    (removed, added) = patches[1].changes()
    assert removed[:2] == ("-", 104)
    assert "gl_CooperativeMatrixLayoutColumnMajor" in removed[2]
    assert added[2] == removed[2].replace(
        "gl_CooperativeMatrixLayoutColumnMajor", "gl_CooperativeMatrixLayoutRowMajor"
    )


def test_mip_patch(patches: list[Patch]) -> None:
    """Defect 2: the four lines (mip.comp:32,36 and :53,58) add the partner, in the
    docs' words, with 2, 4, 2, 4."""
    section = doc_section(2)
    assert "`src/pipe/modules/kpn-t/mip.comp:32,36`" in section and "`:53,58`" in section
    fix = re.search(r"`(rgb = \(rgb \+ subgroupShuffleXor\(rgb, 2\)\) / 2\.0;)`", section)
    assert fix, "docs/vkdt.md's defect 2 no longer gives the fix's line"
    changes = patches[2].changes()
    removed = [change for change in changes if change[0] == "-"]
    added = [change[2].strip() for change in changes if change[0] == "+"]
    assert [line for _, line, _ in removed] == [32, 36, 53, 58]
    for (_, _, old), new, lanes in zip(removed, added, (2, 4, 2, 4), strict=True):
        assert (
            old.strip() == f"rgb = subgroupClusteredAdd(subgroupShuffleXor(rgb, {lanes}), 2)/2.0;"
        )
        assert new == fix.group(1).replace("rgb, 2", f"rgb, {lanes}")


def test_in_width_patch(patches: list[Patch]) -> None:
    """Defect 6: kpn/main.c:99 passes WIDTH where it passed 32."""
    assert "`src/pipe/modules/kpn/main.c:99`" in doc_section(6)
    (removed, added) = patches[3].changes()
    assert removed[:2] == ("-", 99)
    assert "{ 32, batch_size, 16, i }" in removed[2]
    assert added[2] == removed[2].replace("{ 32,", "{ WIDTH,")


# --- the design's switches (0005 on) ------------------------------------------------------
@pytest.fixture(scope="module")
def switches(patches: list[Patch]) -> list[Patch]:
    return patches[len(DEFECT_OF_PATCH) : len(DEFECT_OF_PATCH) + len(SWITCH_OF_PATCH)]


def test_each_switch_patch_adds_its_config_line_and_one_file(switches: list[Patch]) -> None:
    """Each adds its switch to config.h with vkdt's behaviour as the default (a commented
    #define is off), changes config.h only by adding lines, and touches one other file."""
    for patch, (line, file) in zip(switches, SWITCH_OF_PATCH, strict=True):
        assert patch.files() == {KPN_T + "config.h", file}, patch.name
        config = diff_by_file(patch.diff)[KPN_T + "config.h"]
        assert not [row for row in config if row.startswith("-")], patch.name
        added = [row[1:] for row in config if row.startswith("+")]
        assert [row for row in added if row.startswith(line + " ") or row == line], patch.name
        name = line.removeprefix("// ").split()[1]
        assert name in patch.headers["Subject"], patch.name
        assert any(name in row for row in diff_by_file(patch.diff)[file]), patch.name


def test_star15_snr_patch(switches: list[Patch]) -> None:
    """input.glsl's third input: before the WIDTH 64 branch, with kpn's channels (design
    §11): the noise sigma clamped to [1e-7, 1e30], log2(65535 sigma) / 16, 1, 0 past 31."""
    added = "\n".join(c[2] for c in switches[0].changes() if c[0] == "+")
    assert "#if defined(INPUT_STAR15_SNR)" in added and "#elif WIDTH==64" in added
    assert (
        "clamp(pow(0.5, push.level) * sqrt(noise.x + scale*max(lum_c, 0)*noise.y)/scale"
        ", 1e-7, 1e30)" in added
    )
    assert "if(chan == 30) return log2(sigma * scale) / 16.0;" in added
    assert "if(chan == 31) return 1.0;" in added and "chan > 31) return 0.0;" in added
    removed = [c for c in switches[0].changes() if c[0] == "-"]
    assert [c[2] for c in removed] == ["#if WIDTH==64"]


def test_denoise_levels_patch(switches: list[Patch]) -> None:
    """Defect 4: apply.comp:33 and :56 test DENOISE_LEVELS instead of level > 1."""
    assert "`src/pipe/modules/kpn-t/apply.comp:33-38`" in doc_section(4)
    apply = [c for c in switches[1].changes() if c[0] == "-"]
    assert [(line, text.strip()) for _, line, text in apply[::2]] == [
        (33, "if(push.level > 1)"),
        (56, "if(push.level > 1)"),
    ]
    added = [c[2].strip() for c in switches[1].changes() if c[0] == "+"]
    assert added.count("if(DENOISE_LEVELS > 0 && push.level >= DENOISE_LEVELS)") == 2


def test_kpn_levels_patch(switches: list[Patch]) -> None:
    """kpn/main.c:15's Mcnt = 7 becomes KPN_LEVELS + 1."""
    removed = [c for c in switches[3].changes() if c[0] == "-"]
    assert removed[0][1] == 15 and "const int Mcnt = 7;" in removed[0][2]
    added = [c[2] for c in switches[3].changes() if c[0] == "+"]
    assert any("const int Mcnt = KPN_LEVELS + 1;" in line for line in added)


# --- against vkdt itself, where its repository is here -------------------------------------
def vkdt_git(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["git", "--git-dir", str(VKDT_REPO), *args], capture_output=True, check=False
    )


@pytest.fixture
def vkdt_tree(tmp_path: Path, base: str) -> Path:
    """A plain copy of BASE's files (`git archive`), or a skip where there is no vkdt."""
    if shutil.which("git") is None:
        pytest.skip("no git")
    if not (VKDT_REPO / "HEAD").exists() and not (VKDT_REPO / ".git").exists():
        pytest.skip(f"no vkdt repository at {VKDT_REPO} (set VKDT_REPO)")
    archive = vkdt_git("archive", base)
    if archive.returncode != 0:
        pytest.skip(f"{VKDT_REPO} lacks vkdt {base[:8]}")
    tree = tmp_path / "vkdt"
    tree.mkdir()
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def run_apply_series(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(APPLY_SERIES), str(folder)], capture_output=True, text=True, check=False
    )


def test_each_patch_applies_in_order(vkdt_tree: Path) -> None:
    for name in series_names():
        patch = str(PATCHES / name)
        check = subprocess.run(
            ["git", "apply", "--check", patch], cwd=vkdt_tree, capture_output=True, text=True
        )
        assert check.returncode == 0, (name, check.stderr)
        subprocess.run(["git", "apply", patch], cwd=vkdt_tree, check=True)
    kernel_store = (vkdt_tree / KPN_T / "fwd.h").read_text().splitlines()[103]
    assert kernel_store.rstrip().endswith("gl_CooperativeMatrixLayoutRowMajor);")


def test_apply_series_on_a_copy_of_base(vkdt_tree: Path, base: str) -> None:
    result = run_apply_series(vkdt_tree)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"applied {name}" for name in series_names()]
    in_width = (vkdt_tree / "src/pipe/modules/kpn/main.c").read_text()
    assert "pc_inf[] = { WIDTH, batch_size, 16, i };" in in_width
    # BASE_TREE, which the script compares a copy with, is BASE's tree
    tree = vkdt_git("rev-parse", f"{base}^{{tree}}").stdout.decode().strip()
    assert f"BASE_TREE={tree}\n" in APPLY_SERIES.read_text()
    # applied once, the copy is no longer BASE's files: refused, not patched twice
    again = run_apply_series(vkdt_tree)
    assert again.returncode == 2
    assert again.stderr.startswith("error: ") and again.stderr.count("\n") == 1


# --- apply_series.sh's refusals, without vkdt -----------------------------------------------
HELLO = "int main() { return 0; }\n"


def hello_diff(old: int, new: int) -> str:
    """A unified diff of hello.c that changes its return value, as git apply reads it."""
    lines = ("--- a/hello.c", "+++ b/hello.c", "@@ -1 +1 @@")
    return "\n".join(lines) + f"\n-{HELLO.replace('0', str(old))}+{HELLO.replace('0', str(new))}"


@pytest.fixture
def checkout(tmp_path: Path) -> tuple[Path, str]:
    """A git repository (not vkdt) with one commit of hello.c, and that commit."""
    if shutil.which("git") is None:
        pytest.skip("no git")
    folder = (tmp_path / "checkout").resolve()  # the script names the resolved path
    folder.mkdir()
    identity = ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL")
    env = {**os.environ, **dict.fromkeys(identity, "test")}
    (folder / "hello.c").write_text(HELLO)
    commit = ["-c", "commit.gpgsign=false", "commit", "-qm", "hello"]  # whatever ~/.gitconfig says
    for command in (["init", "-q"], ["add", "."], commit):
        subprocess.run(["git", "-C", str(folder), *command], check=True, env=env)
    sha = subprocess.run(
        ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return folder, sha


def test_apply_series_refuses_a_checkout_at_another_commit(
    checkout: tuple[Path, str], base: str
) -> None:
    folder, found = checkout
    result = run_apply_series(folder)
    assert result.returncode == 2
    assert result.stderr == f"error: {folder} is at vkdt {found}, the series is for {base}\n"
    assert (folder / "hello.c").read_text() == HELLO


def test_apply_series_refuses_a_copy_of_other_files(tmp_path: Path, base: str) -> None:
    if shutil.which("git") is None:
        pytest.skip("no git")
    (tmp_path / "hello.c").write_text(HELLO)
    result = run_apply_series(tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {tmp_path.resolve()} holds tree ")
    assert f"not vkdt {base[:8]}'s files" in result.stderr and result.stdout == ""
    assert (tmp_path / "hello.c").read_text() == HELLO


def test_apply_series_stops_at_the_first_patch_that_does_not_apply(
    tmp_path: Path, checkout: tuple[Path, str]
) -> None:
    """The script run on a series of its own (BASE: the checkout's commit), whose second
    patch does not apply: the first is applied, the third is not tried."""
    folder, sha = checkout
    script = tmp_path / "vkdt" / "apply_series.sh"
    (script.parent / "patches").mkdir(parents=True)
    shutil.copy(APPLY_SERIES, script)
    # the second expects hello.c to return 2: it does not apply after the first
    series = {
        "0001-return-1.patch": hello_diff(0, 1),
        "0002-stale.patch": hello_diff(2, 3),
        "0003-never.patch": hello_diff(1, 4),
    }
    for name, text in series.items():
        (script.parent / "patches" / name).write_text(text)
    (script.parent / "patches" / "series").write_text("\n".join(series) + "\n")
    (script.parent / "patches" / "BASE").write_text(sha + "\n")
    result = subprocess.run(
        ["bash", str(script), str(folder)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert result.stdout == "applied 0001-return-1.patch\n"
    assert result.stderr.startswith(f"error: 0002-stale.patch does not apply to {folder}: ")
    assert result.stderr.count("\n") == 1 and "hello.c" in result.stderr
    assert (folder / "hello.c").read_text() == "int main() { return 1; }\n"
