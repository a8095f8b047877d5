"""vkdt graph files (``.cfg``) for weights exported here: inference and kpn-t training.

Pure functions that return the text of three graphs, written by ``python -m kpn export
--vkdt-cfg DIR`` beside the ``.lut``:

- ``kpn-infer-pfm.cfg``: ``i-pfm`` -> ``kpn`` (weights from ``i-lut``) -> ``display``;
- ``kpn-infer-raw.cfg``: ``i-raw`` -> ``denoise`` (strength 0: black/white and crop only)
  -> ``hilite`` -> ``demosaic`` -> ``kpn`` -> ``display``;
- ``kpn-t-train.cfg``: two ``i-pfm`` -> ``cnngenin`` -> ``kpn-t`` -> ``o-lut`` (weights)
  and ``display`` (the denoised tile), with the config's Adam settings.

Each graph's header says which vkdt it is for (``target``, :mod:`kpn.vkdt.target`: vkdt
ce12d6ed with kpn's patch series, or as it is), the patches its network needs, and the
``config.h`` lines of that build.

``display:main`` is the output: in the GUI it is the view, and ``vkdt cli --format o-pfm
--filename F`` puts the output module in its place (vkdt's ``graph-export.c``). The run
lines carry ``--colour-prim bt2020 --colour-trc linear``: vkdt-cli's defaults are rec709
primaries and, through a slip in ``cli/main.c`` (it parses the default curve with
``parse_prim("sRGB")``, which is 1, the 709 curve), the 709 transfer curve, so without them
``graph-export.c`` inserts ``colenc`` before ``o-pfm`` and the file is not kpn's linear
output. vkdt's ``i-pfm`` reads and ``o-pfm`` writes the top row first, where the PFM
format (and infer.py) has the bottom row first: the comments say how to convert
(``python -m kpn pfm``).

Where the syntax comes from (vkdt, hanatos/vkdt at ce12d6ed; read, not copied):
the line grammar of ``src/pipe/graph-io.c`` (``dt_graph_read_config_line``:
``module:NAME:INST``, ``connect:MOD:INST:CONN:MOD:INST:CONN``, ``param:MOD:INST:PARAM:VALUE``,
``frames:N``, ``fps:F``, ``#`` comments); the training graph in
``src/pipe/modules/kpn-t/readme.md``; the raw chain of ``bin/default.i-raw`` and
``bin/examples/raw.cfg``; connector names from the ``connectors`` files and parameter
names and meanings from the ``params`` / ``params.ui`` files of ``i-pfm``, ``i-raw``,
``i-lut``, ``kpn``, ``kpn-t``, ``cnngenin``, ``o-lut``, ``denoise`` and ``display`` under
``src/pipe/modules/``; what ``kpn-t``'s compile-time switches mean from its ``config.h``.

Two rules of vkdt's reader shape the text: it reads a line with ``fscanf("%[^\\n]")``, so
an empty line leaves the buffer as it was and runs the previous line again, and a last
line without its newline is dropped. Every graph here has no empty line and ends in one
newline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from kpn.config import Config
from kpn.vkdt.target import (
    PATCHES,
    TARGET_NAMES,
    TRAIN_WITHOUT_COOPMAT,
    cannot_run,
    inference_differences,
    needed_patches,
    training_differences,
    training_patches,
    vkdt_build,
)

INFER_PFM = "kpn-infer-pfm.cfg"
INFER_RAW = "kpn-infer-raw.cfg"
TRAIN = "kpn-t-train.cfg"

NO_CLIP = 1e30  # kpn-t's gradclip has no "off"; its square overflows to inf in float32
# vkdt-cli writes what kpn computes only with these (see the module docstring)
COLOUR_FLAGS = "--colour-prim bt2020 --colour-trc linear"


@dataclass(frozen=True)
class GraphFile:
    """One graph: its file name and its text."""

    name: str
    text: str


def vkdt_float(value: float) -> str:
    """A number as a graph parameter: Python's shortest exact repr, which strtof reads."""
    if not math.isfinite(value):
        raise ValueError(f"graph parameter {value!r} is not finite")
    return repr(float(value))


# --- the graphs ----------------------------------------------------------------------------
def _comment(lines: Sequence[str], indent: str = "") -> list[str]:
    return [f"# {indent}{line}".rstrip() for line in lines]


def _target_note(config: Config, target: str, training: bool = False) -> list[str]:
    """The comment lines that say which vkdt runs the graph and which patches it needs."""
    needs = needed_patches(config, target)
    if target == "series":
        lines = [
            f"# for {TARGET_NAMES[target]} (vkdt/patches, applied by vkdt/apply_series.sh); "
            f"this network needs {', '.join(needs)}"
        ]
        if training:
            lines.append(
                f"# kpn-t's training of it also needs {', '.join(training_patches(config))}; "
                f"on a GPU without cooperative matrices {TRAIN_WITHOUT_COOPMAT} "
                f"({PATCHES[TRAIN_WITHOUT_COOPMAT]})"
            )
        return lines
    if needs:  # 0001: input.glsl's star15 branch is compiled for every WIDTH but 64
        return [
            f"# for {TARGET_NAMES[target]}, which does not compile WIDTH {config.model.width} as "
            "it is (input.glsl uses push.level and nonuniformEXT too early): apply "
            f"vkdt/patches/{needs[0]}"
        ]
    return [f"# for {TARGET_NAMES[target]} as it is"]


def _text(lines: Sequence[str]) -> str:
    for line in lines:
        if not line.strip() or "\n" in line:
            raise ValueError(f"graph line {line!r}: vkdt's reader needs one non-empty line")
    return "\n".join(lines) + "\n"


def inference_graph(
    weights: str,
    config: Config,
    *,
    source: str,
    noise_a: float,
    noise_b: float,
    layout: str = "kpn-t",
    target: str = "series",
) -> str:
    """The text of an inference graph: ``source`` ("pfm" or "raw") -> kpn -> display.

    ``weights`` is the ``.lut`` path as the graph names it (relative paths are resolved
    from the graph's folder), in ``layout``. ``noise_a``, ``noise_b``: the camera's noise
    profile on the 0..65535 scale (docs/design.md §8) for ``kpn``'s parameters.
    ``target``: the vkdt that runs it (:data:`kpn.vkdt.target.TARGETS`).
    """
    if source not in ("pfm", "raw"):
        raise ValueError(f"source {source!r}: expected 'pfm' or 'raw'")
    build = vkdt_build(config, target)
    module = "i-pfm" if source == "pfm" else "i-raw"
    example = "noisy.pfm" if source == "pfm" else "noisy.raw"
    lines = [
        *_inference_usage(weights, source, example),
        "# kpn's noise a / noise b: the camera's noise profile on the 0..65535 scale",
        "# (a .nprof of vkdt since 4b910761 is on [0,1]: a*65535^2, b*65535; docs/vkdt.md)",
        *_target_note(config, target),
        "# kpn must be built with these lines in src/pipe/modules/kpn-t/config.h:",
        *_comment(build.defines, "  "),
    ]
    differences = cannot_run(config, target, layout) + inference_differences(config, target)
    if differences:
        lines += [f"# {TARGET_NAMES[target]} computes otherwise than this config:"]
        lines += _comment(differences, "  ")
    lines += [
        *_inference_modules(source),
        "connect:i-lut:w:output:kpn:01:w",
        "connect:kpn:01:output:display:main:input",
        f"param:{module}:main:filename:{example}",
    ]
    if source == "raw":
        lines += [
            "# denoise with strength 0 only crops, subtracts black and scales to white",
            "param:denoise:01:strength:0.0",
        ]
    lines += [
        f"param:i-lut:w:filename:{weights}",
        f"param:kpn:01:noise a:{vkdt_float(noise_a)}",
        f"param:kpn:01:noise b:{vkdt_float(noise_b)}",
    ]
    return _text(lines)


def _inference_usage(weights: str, source: str, example: str) -> list[str]:
    """The comment lines that open an inference graph: what it does, how to run it, and
    how to bring its PFMs to and from the format's row order."""
    name = INFER_PFM if source == "pfm" else INFER_RAW
    module = "i-pfm" if source == "pfm" else "i-raw"
    lines = [
        f"# vkdt graph: denoise a {'linear PFM' if source == 'pfm' else 'raw photo'} with kpn "
        f"and the weights {weights} (written by python -m kpn export)",
        f"# run: vkdt cli -g {name} --format o-pfm --filename denoised {COLOUR_FLAGS} "
        f"--config param:{module}:main:filename:/path/to/{example}",
        f"# {COLOUR_FLAGS}: the linear output as kpn computes it (without them vkdt cli "
        "adds colenc: rec709 primaries, 709 curve)",
    ]
    if source == "pfm":
        lines += [
            "# i-pfm reads and o-pfm writes the top row first, a standard PFM (infer.py's) "
            "the bottom row first:",
            f"#   python -m kpn pfm --to-vkdt photo.pfm {example} makes the input, "
            "python -m kpn pfm --from-vkdt denoised.pfm photo.denoised.pfm the output",
        ]
    else:
        lines += [
            "# o-pfm writes the top row first: python -m kpn pfm --from-vkdt denoised.pfm "
            "photo.denoised.pfm gives a standard PFM (infer.py's)",
        ]
    return lines


def _inference_modules(source: str) -> list[str]:
    """The modules of an inference graph and the connections up to kpn's input: a PFM
    straight in, a raw photo through denoise (black/white, crop), hilite and demosaic."""
    if source == "pfm":
        return [
            "module:i-pfm:main",
            "module:i-lut:w",
            "module:kpn:01",
            "module:display:main",
            "connect:i-pfm:main:output:kpn:01:input",
        ]
    return [
        "module:i-raw:main",
        "module:denoise:01",
        "module:hilite:01",
        "module:demosaic:01",
        "module:i-lut:w",
        "module:kpn:01",
        "module:display:main",
        "connect:i-raw:main:output:denoise:01:input",
        "connect:denoise:01:output:hilite:01:input",
        "connect:hilite:01:output:demosaic:01:input",
        "connect:demosaic:01:output:kpn:01:input",
    ]


def training_graph(
    config: Config, *, weights_out: str, init_weights: str | None, target: str = "series"
) -> str:
    """The text of a kpn-t training graph for ``config`` on ``target``.

    ``weights_out``: the o-lut filename (vkdt appends ``.lut`` and writes it in the
    current folder). ``init_weights``: a ``.lut`` to start from through ``kpn-t``'s
    ``wcp`` input, or None for vkdt's random initialisation.
    """
    train = config.train
    build = vkdt_build(config, target)
    steps = train.steps
    lines = [
        f"# vkdt graph: train kpn-t for {steps} steps, the weights go to {weights_out}.lut "
        "(written by python -m kpn export)",
        f"# run: vkdt cli -g {TRAIN} --last-frame-only --progress",
        "# point both i-pfm filenames at a clean linear PFM (%04d and startid for a sequence):",
        "# cnngenin generate: 0 static tile, 1 random tiles, 2 noise added to the reference "
        "(main unused), 3 mosaic, 4 2+3",
        *_target_note(config, target, training=True),
        "# build vkdt with these lines in src/pipe/modules/kpn-t/config.h:",
        *_comment(build.defines, "  "),
    ]
    differences = training_differences(config, target)
    if differences:
        lines += [f"# {TARGET_NAMES[target]} trains otherwise than this config:"]
        lines += _comment(differences, "  ")
    if config.train.init.endswith(".pt"):
        lines += [
            f"# train.init = {config.train.init} is a kpn checkpoint, which vkdt cannot read:",
            "# export it to a .lut and start from it with an i-lut on kpn-t's wcp input",
        ]
    lines += [
        f"frames:{steps + 1}",  # frame 0 only initialises the weights (adam.comp)
        "fps:0",
        "module:i-pfm:main",
        "module:i-pfm:ref",
        "module:cnngenin:01",
        "module:kpn-t:01",
        "module:o-lut:w",
        "module:display:main",
    ]
    if init_weights is not None:
        lines.append("module:i-lut:wcp")
    lines += [
        "connect:i-pfm:main:output:cnngenin:01:imgi",
        "connect:i-pfm:ref:output:cnngenin:01:refi",
        "connect:cnngenin:01:imgo:kpn-t:01:input",
        "connect:cnngenin:01:refo:kpn-t:01:ref",
        "connect:cnngenin:01:noiseab:kpn-t:01:noiseab",
        "connect:kpn-t:01:w:o-lut:w:input",
        "connect:kpn-t:01:output:display:main:input",
    ]
    if init_weights is not None:
        lines.append("connect:i-lut:wcp:output:kpn-t:01:wcp")
    lines += [
        "param:i-pfm:main:filename:reference.pfm",
        "param:i-pfm:ref:filename:reference.pfm",
        f"param:cnngenin:01:generate:{config.data.generate}",
        "param:cnngenin:01:tiles:1",
        f"param:kpn-t:01:alpha:{vkdt_float(train.lr)}",
        f"param:kpn-t:01:beta1:{vkdt_float(train.beta1)}",
        f"param:kpn-t:01:beta2:{vkdt_float(train.beta2)}",
        f"param:kpn-t:01:eps:{vkdt_float(train.eps)}",
        f"param:kpn-t:01:init:{0 if init_weights is not None else 1}",
        f"param:kpn-t:01:L2:{vkdt_float(train.l2)}",
        f"param:kpn-t:01:gradclip:{vkdt_float(train.grad_clip or NO_CLIP)}",
        f"param:o-lut:w:filename:{weights_out}",
    ]
    if init_weights is not None:
        lines.append(f"param:i-lut:wcp:filename:{init_weights}")
    return _text(lines)


def graph_files(
    config: Config,
    weights: str,
    *,
    noise_a: float,
    noise_b: float,
    weights_out: str,
    init_weights: str | None,
    layout: str = "kpn-t",
    target: str = "series",
) -> tuple[GraphFile, ...]:
    """The three graphs ``--vkdt-cfg`` writes for ``target``, for weights in ``layout``
    that the graphs name ``weights``."""
    pfm, raw = (
        inference_graph(
            weights, config, source=source, noise_a=noise_a, noise_b=noise_b, layout=layout,
            target=target,
        )
        for source in ("pfm", "raw")
    )  # fmt: skip
    training = training_graph(
        config, weights_out=weights_out, init_weights=init_weights, target=target
    )
    return (GraphFile(INFER_PFM, pfm), GraphFile(INFER_RAW, raw), GraphFile(TRAIN, training))
