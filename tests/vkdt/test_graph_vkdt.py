"""Tests of kpn.vkdt.graph's files against vkdt itself: the rules of vkdt's graph reader,
and the connectors and parameters of every module as vkdt's ``connectors`` / ``params``
files declare them (transcribed below from hanatos/vkdt at ce12d6ed, and compared with
those files when a vkdt checkout is at hand: ``$VKDT_REPO``, a bare git directory,
defaulting to this project's mirror), and kpn-t's config.h.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from kpn.config import load_config
from kpn.vkdt.graph import graph_files
from kpn.vkdt.target import vkdt_build

from vkdt_shared import CONFIGS, preset

PRESETS = sorted(p.stem for p in CONFIGS.glob("*.toml"))
VKDT_REPO = Path(os.environ.get("VKDT_REPO", "/work/.mirror/hanatos+vkdt/repo"))


# module -> connector -> direction, from src/pipe/modules/<module>/connectors
CONNECTORS = {
    "i-pfm": {"output": "source"},
    "i-raw": {"output": "source"},
    "i-lut": {"output": "source"},
    "denoise": {"input": "read", "output": "write"},
    "hilite": {"input": "read", "output": "write"},
    "demosaic": {"input": "read", "output": "write"},
    "kpn": {"input": "read", "output": "write", "w": "read"},
    "kpn-t": {
        "input": "read",
        "ref": "read",
        "output": "write",
        "w": "write",
        "graph": "write",
        "vis": "write",
        "debug": "write",
        "wcp": "read",
        "noiseab": "read",
    },
    "cnngenin": {
        "imgi": "read",
        "refi": "read",
        "imgo": "write",
        "refo": "write",
        "noiseab": "write",
    },
    "o-lut": {"input": "sink"},
    "display": {"input": "sink"},
}
# module -> parameter -> type, from src/pipe/modules/<module>/params
PARAMS = {
    "i-pfm": {"filename": "string", "startid": "int", "noise a": "float", "noise b": "float"},
    "i-raw": {"filename": "string", "noise a": "float", "noise b": "float", "startid": "int"},
    "i-lut": {"filename": "string"},
    "denoise": {
        "strength": "float",
        "luma": "float",
        "detail": "float",
        "pad": "float",
        "edges": "float",
        "gainmap": "int",
    },
    "hilite": None,  # not read: no parameter is set
    "demosaic": None,
    "kpn": {"noise a": "float", "noise b": "float"},
    "kpn-t": {
        "alpha": "float",
        "beta1": "float",
        "beta2": "float",
        "eps": "float",
        "init": "int",
        "L2": "float",
        "gradclip": "float",
    },
    "cnngenin": {"generate": "int", "tiles": "int"},
    "o-lut": {"filename": "string"},
    "display": None,
}


# --- vkdt's reader and module declarations -------------------------------------------------
def all_graphs() -> list[tuple[str, str]]:
    out = []
    for name in PRESETS:
        config = load_config(CONFIGS / f"{name}.toml")
        for init in (None, "start.lut"):
            for graph in graph_files(
                config,
                "weights.lut",
                noise_a=123.5,
                noise_b=0.25,
                weights_out="w",
                init_weights=init,
            ):
                out.append((f"{name}/{graph.name}/{init}", graph.text))
    return out


@pytest.mark.parametrize(("name", "text"), all_graphs(), ids=[n for n, _ in all_graphs()])
def test_graph_obeys_vkdt(name: str, text: str) -> None:
    # graph-io.c reads "%[^\n]": an empty line repeats the previous one, and a last line
    # without newline is dropped
    assert text.endswith("\n") and not text.endswith("\n\n")
    lines = text[:-1].split("\n")
    assert all(line.strip() for line in lines)
    modules: dict[tuple[str, str], str] = {}
    inputs_taken: set[tuple[str, str, str]] = set()
    for line in lines:
        if line.startswith("#"):
            continue
        command, _, rest = line.partition(":")
        if command in ("frames", "fps"):
            assert re.fullmatch(r"[0-9]+", rest), line
            continue
        if command == "module":
            module, inst = rest.split(":")
            assert module in CONNECTORS and len(inst) <= 8, line  # dt_token: 8 characters
            assert (module, inst) not in modules, line
            modules[(module, inst)] = module
        elif command == "connect":
            m0, i0, c0, m1, i1, c1 = rest.split(":")
            assert (m0, i0) in modules and (m1, i1) in modules, line
            assert CONNECTORS[m0][c0] in ("write", "source"), line
            assert CONNECTORS[m1][c1] in ("read", "sink"), line
            assert (m1, i1, c1) not in inputs_taken, line
            inputs_taken.add((m1, i1, c1))
        elif command == "param":
            module, inst, param, value = rest.split(":", 3)
            assert (module, inst) in modules, line
            kind = PARAMS[module][param]  # type: ignore[index]
            assert len(param) <= 8, line
            if kind == "int":
                assert re.fullmatch(r"-?[0-9]+", value), line
            elif kind == "float":
                float(value)  # strtof reads Python's repr
            else:
                assert value and ":" not in value, line
        else:
            pytest.fail(f"not a vkdt graph line: {line!r}")
    # every read connector of kpn / kpn-t is fed
    for (module, inst), _ in modules.items():
        if module in ("kpn", "kpn-t"):
            needed = {"input", "w"} if module == "kpn" else {"input", "ref", "noiseab"}
            assert {c for m, i, c in inputs_taken if (m, i) == (module, inst)} >= needed


def vkdt_file(path: str) -> str:
    if not (VKDT_REPO / "HEAD").exists():
        pytest.skip(f"no vkdt checkout at {VKDT_REPO} (set VKDT_REPO)")
    result = subprocess.run(
        ["git", "-C", str(VKDT_REPO), "show", f"HEAD:{path}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"{path} not in {VKDT_REPO}")
    return result.stdout


@pytest.mark.parametrize("module", sorted(CONNECTORS))
def test_tables_match_vkdts_module_files(module: str) -> None:
    connectors = {}
    for line in vkdt_file(f"src/pipe/modules/{module}/connectors").splitlines():
        name, direction, *_ = line.split(":")
        connectors[name] = direction
    assert connectors == CONNECTORS[module]
    if PARAMS[module] is not None:
        params = {}
        for line in vkdt_file(f"src/pipe/modules/{module}/params").splitlines():
            name, kind, *_ = line.split(":")
            params[name] = kind
        assert params == PARAMS[module]


def test_shipped_build_matches_vkdts_config_h() -> None:
    text = vkdt_file("src/pipe/modules/kpn-t/config.h")
    active = {
        line.split("//")[0].strip() for line in text.splitlines() if line.startswith("#define ")
    }
    build = vkdt_build(preset("vkdt-head"), "head")
    for define in build.defines:
        if define.startswith("//"):
            name = define.split()[-1]
            assert not any(a.split()[1] == name for a in active), define
        else:
            assert define in active, define
