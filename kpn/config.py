"""One dataclass tree for every setting, read from TOML and validated before any work.

A config file has the sections ``[model]``, ``[data]``, ``[train]`` and ``[infer]``; every
key is optional and falls back to the default written here, whose comment says why it was
chosen. Unknown keys, wrong types and values outside their choices are refused with one
line naming the key, the value and what is allowed (:class:`~kpn.errors.KpnError`).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kpn.errors import KpnError

DownFilter = Literal["box2", "binomial5", "box2_vkdt"]
UpFilter = Literal["bspline", "bilinear"]
MlpInput = Literal["mip", "detail"]
Blend = Literal["mix", "add", "post_diff"]
Features = Literal["star15", "patch8x8"]
NoiseLuminance = Literal["x", "lowpass"]
Activation = Literal["leaky_relu", "relu", "none"]
KernelActivation = Literal["softmax", "plain"]
AlphaActivation = Literal["const", "plain", "clamped", "sigmoid"]
Precision = Literal["fp32", "vkdt-f16"]
Loss = Literal["l2", "smape", "cosh"]
LossReduction = Literal["sum", "mean"]

# The input width each feature extractor produces (SPEC 2).
FEATURE_CHANNELS = {"star15": 32, "patch8x8": 64}


@dataclass(frozen=True)
class ModelConfig:
    """The network and the pyramid around it (SPEC 1-5, 10). Defaults: the design preset."""

    levels: int = 4  # network levels N; vkdt's kpn-t trains 4
    down: DownFilter = "box2"  # pyramid reduction; box2 is the original 2x2 mip
    up: UpFilter = "bspline"  # expansion for details and reconstruction
    mlp_input: MlpInput = "mip"  # X of each level: its mip M_i or its detail D_i
    blend: Blend = "mix"  # coarse-to-fine reconstruction (SPEC 5)
    features: Features = "star15"  # per-pixel network input (SPEC 2)
    noise_luminance: NoiseLuminance = "x"  # sigma channel from X (vkdt) or the low-pass M_i
    width: int = 32  # hidden width W; vkdt builds 32 or 64
    n_hidden: int = 6  # hidden layers, as tiny-cuda-nn's fully fused MLP in vkdt
    activation: Activation = "leaky_relu"  # vkdt's default hidden activation (slope 0.001)
    kernel_activation: KernelActivation = "softmax"  # kernel weights always normalised
    alpha_activation: AlphaActivation = "sigmoid"  # blend weight kept in [0, 1], smooth
    denoise_levels: int = 0  # filter only levels < this; 0 = all (vkdt HEAD: 2)
    gradient_stop: bool = False  # vkdt's training: no gradient from level 0 into coarser
    block_transpose: bool = False  # vkdt HEAD's kernel store bug since 2026-01 (SPEC 10)
    precision: Precision = "fp32"  # "vkdt-f16" emulates vkdt's float16 arithmetic

    @property
    def in_features(self) -> int:
        """Channels of the per-pixel network input."""
        return FEATURE_CHANNELS[self.features]

    def validate(self, where: str) -> None:
        if not 1 <= self.levels <= 16:
            raise KpnError(f"{where}: model.levels = {self.levels} is outside 1..16")
        if self.width % 16 or not 16 <= self.width <= 256:
            raise KpnError(
                f"{where}: model.width = {self.width} must be a multiple of 16 in 16..256 "
                "(vkdt's cooperative matrices work on 16x16 blocks)"
            )
        if not 1 <= self.n_hidden <= 32:
            raise KpnError(f"{where}: model.n_hidden = {self.n_hidden} is outside 1..32")
        if self.features == "patch8x8" and self.width < 64:
            raise KpnError(
                f"{where}: model.features = 'patch8x8' has 64 input channels and needs "
                f"model.width >= 64, not {self.width}"
            )
        if self.denoise_levels < 0:
            raise KpnError(f"{where}: model.denoise_levels = {self.denoise_levels} must be >= 0")
        wanted_input = "detail" if self.blend == "add" else "mip"
        if self.mlp_input != wanted_input:
            raise KpnError(
                f"{where}: model.blend = '{self.blend}' needs model.mlp_input = "
                f"'{wanted_input}', not '{self.mlp_input}' (SPEC 5)"
            )


@dataclass(frozen=True)
class DataConfig:
    """Where training tiles come from (filled in by the data stage)."""

    tile: int = 64  # vkdt's cnngenin tile size
    batch: int = 16  # tiles per step

    def validate(self, where: str) -> None:
        if self.tile < 1:
            raise KpnError(f"{where}: data.tile = {self.tile} must be >= 1")
        if self.batch < 1:
            raise KpnError(f"{where}: data.batch = {self.batch} must be >= 1")


@dataclass(frozen=True)
class TrainConfig:
    """What training minimises (the optimiser joins this section with the training stage)."""

    loss: Loss = "smape"  # vkdt's shipped LOSS; favours noise reduction
    loss_reduction: LossReduction = "mean"  # vkdt sums; a mean keeps lr independent of tile

    def validate(self, where: str) -> None:
        pass


@dataclass(frozen=True)
class InferConfig:
    """How photos are denoised."""

    levels: int = 0  # network levels at inference; 0 = model.levels (vkdt's kpn uses 6)

    def validate(self, where: str) -> None:
        if self.levels < 0 or self.levels > 16:
            raise KpnError(f"{where}: infer.levels = {self.levels} is outside 0..16")


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)

    def validate(self, where: str) -> None:
        for section in dataclasses.fields(self):
            getattr(self, section.name).validate(where)


def _describe_type(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(hint))
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[hint]


def _coerce(value: Any, hint: Any, key: str, where: str) -> Any:
    """Check one TOML value against its field's type; ints are accepted for floats."""
    ok: bool
    if typing.get_origin(hint) is Literal:
        ok = value in typing.get_args(hint) and isinstance(value, str)
    elif hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
            ok = math.isfinite(value)
    elif hint is str:
        ok = isinstance(value, str)
    else:  # pragma: no cover - a field type this loader was not taught
        raise TypeError(f"unsupported config field type {hint!r} for {key}")
    if not ok:
        expected = _describe_type(hint)
        raise KpnError(f"{where}: {key} = {value!r} is not allowed: expected {expected}")
    return value


def _build(cls: type, table: Any, prefix: str, where: str) -> Any:
    if not isinstance(table, dict):
        raise KpnError(f"{where}: [{prefix}] must be a table, not {table!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in table.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if key not in names:
            allowed = ", ".join(sorted(names))
            raise KpnError(f"{where}: unknown key '{dotted}' (allowed: {allowed})")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, dotted, where)
        else:
            kwargs[key] = _coerce(value, hint, dotted, where)
    return cls(**kwargs)


def config_from_dict(table: dict[str, Any], where: str = "<config>") -> Config:
    """Build and validate a :class:`Config` from nested dicts as ``tomllib`` returns them."""
    config = _build(Config, table, "", where)
    config.validate(where)
    return config


def load_config(path: str | Path) -> Config:
    """Read a TOML config file; every failure is a one-line :class:`KpnError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KpnError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KpnError(f"{path}: cannot read config: {exc}") from None
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise KpnError(f"{path}: invalid TOML: {exc}") from None
    return config_from_dict(table, str(path))


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"model.width=64"`` -> (["model", "width"], 64), the value read as a TOML value.

    A value that is not valid TOML (``model.down=box2``) is taken as a bare string, so
    shells need no extra quoting.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise KpnError(f"override '{text}': expected section.key=value")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.split("."), value


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Return ``config`` with ``section.key=value`` overrides applied and re-validated."""
    table = config_to_dict(config)
    for text in overrides:
        path, value = parse_override(text)
        node = table
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                raise KpnError(f"override '{text}': unknown section '{part}'")
            node = child
        if path[-1] not in node or isinstance(node[path[-1]], dict):
            raise KpnError(f"override '{text}': unknown key '{'.'.join(path)}'")
        node[path[-1]] = value
    return config_from_dict(table, "--set")


def config_to_dict(config: Any) -> dict[str, Any]:
    """The config as nested plain dicts (a fresh copy)."""
    return dataclasses.asdict(config)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    raise TypeError(f"cannot write {value!r} as TOML")  # pragma: no cover


def config_to_toml(config: Config) -> str:
    """The fully resolved config as TOML text that :func:`load_config` reads back equal."""
    lines: list[str] = []
    for section, table in config_to_dict(config).items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in table.items())
        lines.append("")
    return "\n".join(lines)
