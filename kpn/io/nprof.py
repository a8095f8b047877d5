"""Noise profiles: ``.nprof`` files, their scales, lookup by camera and ISO, darktable import.

A profile (a, b) models the noise of a pixel at signal level x as Gaussian with variance
``a + b*x`` (docs/design.md §8). Its numbers depend on the axis x is measured on; three are in use
(design §10), named here by ``scale``:

- ``"u16"``: x on 0..65535. kpn's ``noise_ab``, vkdt's ``kpn`` module parameters and
  design §8's synthesis use it: the scale everything is converted to before use.
- ``"dng"``: x on [0, 1], black subtracted and divided by white - black (the DNG
  normalisation). vkdt's ``nprof`` writes it since commit 4b910761 (2026-04-22), and
  darktable's profiles live on this axis. To u16: ``a * 65535**2``, ``b * 65535``.
- ``"raw"``: x in raw units with black subtracted, not rescaled: vkdt's ``nprof`` before
  that commit. To u16 it needs the camera's ``white - black`` (``raw_range``):
  ``a * s**2``, ``b * s`` with ``s = 65535 / raw_range``.

A ``.nprof`` file is named ``maker-model-iso.nprof`` (the maker is read up to the first
"-", since models often hold one) and its first line is "a b", all that vkdt reads
(``fscanf("%g %g")``). Nothing in vkdt's files says which scale they are on, and their
magnitudes overlap, so kpn adds a second line, ``scale u16`` (or ``dng``, ``raw``), that
vkdt ignores. Reading a file without that line needs the scale from the caller
(``unmarked=``); without it the reader refuses to guess.

Cameras are matched case-insensitively and by brand: a maker is compared by its first
word ("NIKON CORPORATION" finds "Nikon"), and a model that repeats the brand matches one
that does not ("NIKON D750" finds "D750", "Canon EOS R5" finds "EOS R5"), so that the
names in a raw file's tags find profiles named by darktable and vkdt (rawspeed's names).
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kpn.errors import KpnError, ParameterError, PathLike, make_folder, reading, require_folder
from kpn.io.atomic import atomic_write_bytes

Scale = Literal["u16", "dng", "raw"]
SCALES: tuple[Scale, ...] = ("u16", "dng", "raw")
Method = Literal["interpolate", "nearest"]
U16 = 65535.0  # design §8's white


@dataclass(frozen=True)
class NoiseProfile:
    """Noise variance ``a + b*x`` at signal x on ``scale``, for one camera at one ISO."""

    a: float
    b: float
    maker: str
    model: str
    iso: int
    scale: Scale

    def __post_init__(self) -> None:
        # numpy scalars are welcome; they are stored as Python numbers
        for name, value in (("a", self.a), ("b", self.b)):
            real = isinstance(value, numbers.Real) and not isinstance(value, bool)
            if not real or not math.isfinite(value) or value < 0:
                raise KpnError(f"noise profile: {name} = {value!r} (must be a finite number >= 0)")
            object.__setattr__(self, name, float(value))
        whole = isinstance(self.iso, numbers.Integral) and not isinstance(self.iso, bool)
        if not whole or self.iso < 1:
            raise KpnError(f"noise profile: iso {self.iso!r} (must be an integer >= 1)")
        object.__setattr__(self, "iso", int(self.iso))
        if self.scale not in SCALES:
            raise KpnError(f"noise profile: scale {self.scale!r} (expected one of {list(SCALES)})")
        for name, text in (("maker", self.maker), ("model", self.model)):
            if not isinstance(text, str) or not text.strip() or "\n" in text or "\x00" in text:
                raise KpnError(f"noise profile: {name} {text!r} (must be a one-line name)")

    @property
    def file_name(self) -> str:
        """``maker-model-iso.nprof``, with path separators in the names replaced by "_"."""
        return f"{_file_safe(self.maker)}-{_file_safe(self.model)}-{self.iso}.nprof"

    def converted(self, scale: Scale, *, raw_range: float | None = None) -> NoiseProfile:
        """The same profile on ``scale``. ``raw_range`` (white - black in raw units) is
        needed to convert to or from ``"raw"``."""
        if scale not in SCALES:
            raise ParameterError("scale", scale, f"expected one of {list(SCALES)}")
        if scale == self.scale:
            return self
        # x on the new scale = x * factor, so the variance grows by factor**2.
        factor = self._white_on(scale, raw_range) / self._white_on(self.scale, raw_range)
        return NoiseProfile(
            self.a * factor**2, self.b * factor, self.maker, self.model, self.iso, scale
        )

    def _white_on(self, scale: Scale, raw_range: float | None) -> float:
        """The value of white (black subtracted) on ``scale``."""
        if scale == "u16":
            return U16
        if scale == "dng":
            return 1.0
        if raw_range is None:
            raise KpnError(
                f"{self.file_name}: on the raw scale: converting needs the camera's white - "
                "black level (raw_range)"
            )
        if not math.isfinite(raw_range) or raw_range <= 0:
            raise ParameterError("raw_range", raw_range, "must be positive")
        return float(raw_range)


def _file_safe(name: str) -> str:
    return name.replace("/", "_").replace("\\", "_")


# --- files -----------------------------------------------------------------------------
def nprof_text(profile: NoiseProfile) -> str:
    """The file's text: "a b" (shortest exact decimals) and kpn's scale line."""
    return f"{profile.a!r} {profile.b!r}\nscale {profile.scale}\n"


def write_nprof(directory: PathLike, profile: NoiseProfile) -> Path:
    """Write ``profile`` to ``directory/maker-model-iso.nprof`` atomically; returns the path."""
    path = Path(directory) / profile.file_name
    atomic_write_bytes(path, nprof_text(profile).encode("utf-8"))
    return path


def parse_nprof_name(path: PathLike) -> tuple[str, str, int]:
    """(maker, model, iso) from ``maker-model-iso.nprof``; KpnError naming ``path`` if not."""
    name = Path(path).name
    stem = name.removesuffix(".nprof")
    camera, _, iso_text = stem.rpartition("-")
    maker, _, model = camera.partition("-")
    if stem == name or not iso_text.isdigit() or int(iso_text) < 1 or not (maker and model):
        raise KpnError(f"{path}: name is not maker-model-iso.nprof")
    return maker, model, int(iso_text)


def read_nprof(path: PathLike, *, unmarked: Scale | None = None) -> NoiseProfile:
    """Read a ``.nprof`` file: maker, model and ISO from its name, (a, b) and scale from it.

    A file with kpn's ``scale`` line is on that scale; one without it (vkdt's) is taken to
    be on ``unmarked``, and refused when that is None. Raises KpnError naming ``path``
    for a bad name, a first line that is not two finite numbers >= 0, or other content.
    """
    maker, model, iso = parse_nprof_name(path)
    with reading(path):
        text = Path(path).read_text(encoding="utf-8")
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise KpnError(f"{path}: empty first line, expected 'a b'")
    a, b = _parse_ab(lines[0], path)
    scale: Scale | None = None
    for number, line in enumerate(lines[1:], start=2):
        words = line.split()
        if not words:
            continue
        if scale is not None or len(words) != 2 or words[0] != "scale" or words[1] not in SCALES:
            raise KpnError(
                f"{path}: line {number} is {line!r}, expected one 'scale u16', 'scale dng' "
                "or 'scale raw'"
            )
        scale = words[1]  # type: ignore[assignment]  # checked against SCALES just above
    if scale is None:
        if unmarked is None:
            raise KpnError(
                f"{path}: no 'scale' line (a vkdt file?): say which scale it is on "
                "(u16, dng or raw)"
            )
        scale = unmarked
    try:
        return NoiseProfile(a, b, maker, model, iso, scale)
    except KpnError as err:
        raise KpnError(f"{path}: {err}") from None


def _parse_ab(line: str, path: PathLike) -> tuple[float, float]:
    words = line.split()
    try:
        a, b = (float(word) for word in words) if len(words) == 2 else (math.nan, None)
    except ValueError:
        a, b = math.nan, None
    if b is None or not (math.isfinite(a) and math.isfinite(b)):
        raise KpnError(f"{path}: first line {line!r} is not two finite numbers 'a b'")
    if a < 0 or b < 0:
        raise KpnError(f"{path}: negative noise parameter in {line!r} (a variance is >= 0)")
    return a, b


# --- lookup ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ProfileMatch:
    """What :func:`find_profile` found.

    ``profile``: at the requested ISO, on the requested scale, named as asked. ``how``:
    ``"exact"`` (a file for that ISO), ``"interpolated"`` (linearly in ISO between the
    two ``sources`` around it) or ``"nearest"`` (the one source closest in ISO, asked
    for or because the ISO lies outside the measured ones).
    """

    profile: NoiseProfile
    how: Literal["exact", "interpolated", "nearest"]
    sources: tuple[Path, ...]


def camera_key(maker: str, model: str) -> tuple[str, str]:
    """(brand, model) compared by :func:`find_profile`: case-folded single-spaced words,
    the maker's first word, the model without a leading brand."""
    brand_words = _file_safe(maker).casefold().split()
    brand = brand_words[0] if brand_words else ""
    model_text = " ".join(_file_safe(model).casefold().split())
    return brand, model_text.removeprefix(brand + " ") if brand else model_text


def _names_camera(camera: str, key: tuple[str, str]) -> bool:
    """Whether a file's "maker-model" part names the camera of ``key``, at any "-"."""
    return any(
        camera_key(camera[:i], camera[i + 1 :]) == key
        for i, char in enumerate(camera)
        if char == "-"
    )


def find_profile(
    directory: PathLike,
    maker: str,
    model: str,
    iso: float,
    *,
    method: Method = "interpolate",
    scale: Scale = "u16",
    unmarked: Scale | None = None,
    raw_range: float | None = None,
) -> ProfileMatch:
    """The noise profile of a camera at ``iso`` from the ``.nprof`` files in ``directory``.

    ``method="interpolate"``: a and b linear in ISO between the nearest measured ISO below
    and above (as darktable does); outside the measured range, the nearest. ``"nearest"``:
    the measured ISO closest to ``iso`` (the lower one on a tie). The result is converted
    to ``scale``; ``unmarked`` and ``raw_range`` are passed to :func:`read_nprof` and
    :meth:`NoiseProfile.converted`. Raises KpnError naming ``directory`` when it holds no
    profile for the camera or two for one ISO, or naming a file that is malformed.
    """
    folder = Path(directory)
    if method not in ("interpolate", "nearest"):
        raise ParameterError("method", method, "expected 'interpolate' or 'nearest'")
    require_folder(folder)
    if not (isinstance(iso, numbers.Real) and math.isfinite(iso) and iso > 0):
        raise ParameterError("iso", iso, "must be a positive number")
    iso = float(iso)
    key = camera_key(maker, model)
    by_iso: dict[int, Path] = {}
    for path in sorted(folder.glob("*.nprof")):
        camera, _, iso_text = path.name.removesuffix(".nprof").rpartition("-")
        if not iso_text.isdigit() or not _names_camera(camera, key):
            continue
        found = int(iso_text)
        if found in by_iso:
            raise KpnError(
                f"{directory}: two profiles of {maker} {model} at ISO {found}: "
                f"{by_iso[found].name} and {path.name}"
            )
        by_iso[found] = path
    if not by_iso:
        raise KpnError(
            f"{directory}: no noise profile for {maker} {model} "
            f"(no file {_file_safe(maker)}-{_file_safe(model)}-<iso>.nprof or alike)"
        )

    def load(found: int) -> NoiseProfile:
        profile = read_nprof(by_iso[found], unmarked=unmarked)
        try:
            return profile.converted(scale, raw_range=raw_range)
        except KpnError as err:
            raise KpnError(f"{by_iso[found]}: {err}") from None

    measured = sorted(by_iso)
    below = [found for found in measured if found <= iso]
    above = [found for found in measured if found >= iso]
    if below and below[-1] == iso:
        return _match(load(below[-1]), maker, model, iso, "exact", [by_iso[below[-1]]])
    if method == "nearest" or not below or not above:
        nearest = min(measured, key=lambda found: abs(found - iso))
        return _match(load(nearest), maker, model, iso, "nearest", [by_iso[nearest]])
    low, high = below[-1], above[0]
    t = (iso - low) / (high - low)
    lower, upper = load(low), load(high)
    blended = NoiseProfile(
        (1 - t) * lower.a + t * upper.a,
        (1 - t) * lower.b + t * upper.b,
        lower.maker,
        lower.model,
        lower.iso,
        scale,
    )
    return _match(blended, maker, model, iso, "interpolated", [by_iso[low], by_iso[high]])


def _match(
    profile: NoiseProfile,
    maker: str,
    model: str,
    iso: float,
    how: Literal["exact", "interpolated", "nearest"],
    sources: list[Path],
) -> ProfileMatch:
    named = NoiseProfile(profile.a, profile.b, maker, model, max(1, round(iso)), profile.scale)
    return ProfileMatch(named, how, tuple(sources))


# --- darktable -------------------------------------------------------------------------
DARKTABLE_JSON_PATHS: tuple[str, ...] = (
    "/usr/share/darktable/noiseprofiles.json",
    "/usr/local/share/darktable/noiseprofiles.json",
    "/opt/darktable/share/darktable/noiseprofiles.json",
    "/app/share/darktable/noiseprofiles.json",  # inside darktable's flatpak
    "/var/lib/flatpak/app/org.darktable.Darktable/current/active/files/share/darktable/"
    "noiseprofiles.json",
    "~/.local/share/flatpak/app/org.darktable.Darktable/current/active/files/share/darktable/"
    "noiseprofiles.json",
    "/Applications/darktable.app/Contents/Resources/share/darktable/noiseprofiles.json",
    "C:/Program Files/darktable/share/darktable/noiseprofiles.json",
)
DARKTABLE_VERSION = 0  # darktable's DT_NOISE_PROFILE_VERSION: the only layout there is
_GREEN = 1


def find_darktable_json(candidates: tuple[str, ...] | None = None) -> Path:
    """The first of ``candidates`` (default :data:`DARKTABLE_JSON_PATHS`) that is a file."""
    candidates = DARKTABLE_JSON_PATHS if candidates is None else candidates
    for candidate in candidates:
        path = Path(candidate).expanduser()
        if path.is_file():
            return path
    raise KpnError(
        f"noiseprofiles.json: not at darktable's usual paths ({', '.join(candidates)}): "
        "give its path"
    )


def read_darktable(json_path: PathLike, *, scale: Scale = "u16") -> list[NoiseProfile]:
    """Every camera and ISO of darktable's ``noiseprofiles.json`` as a profile on ``scale``.

    darktable stores, per ISO, ``a[3]`` and ``b[3]`` (red, green, blue) of the variance
    ``a*x + b`` on the dng axis: its a is our b and its b our a. We take the green
    channel, as darktable's own denoiser does ("only use green channel + wb"), and clamp
    negative values (a few of darktable's fits have a slightly negative Gaussian term) to
    0, as vkdt's own fit does. Entries marked ``"skip": true`` are left out; repeated
    measurements of one camera at one ISO are averaged. ``scale`` is ``"u16"`` or
    ``"dng"``. Raises KpnError naming the file and the entry for anything not in
    darktable's layout.
    """
    if scale == "raw":
        raise ParameterError("scale", scale, "darktable's profiles cannot be put on the raw scale")
    if scale not in SCALES:
        raise ParameterError("scale", scale, "expected 'u16' or 'dng'")
    with reading(json_path):
        text = Path(json_path).read_text(encoding="utf-8")
    try:
        root = json.loads(text)
    except json.JSONDecodeError as err:
        raise KpnError(
            f"{json_path}: not JSON (line {err.lineno}, column {err.colno}: {err.msg})"
        ) from None
    if not isinstance(root, dict) or root.get("version") != DARKTABLE_VERSION:
        version = root.get("version") if isinstance(root, dict) else None
        raise KpnError(
            f"{json_path}: not a darktable noise profile file of version {DARKTABLE_VERSION} "
            f"(version {version!r})"
        )
    sums: dict[tuple[str, str, int], list[float]] = {}  # (a, b, count) per camera and ISO
    for i, maker_entry in enumerate(_list(root, "noiseprofiles", json_path, "")):
        where = f"noiseprofiles[{i}]"
        maker = _name(maker_entry, "maker", json_path, where)
        for j, model_entry in enumerate(_list(maker_entry, "models", json_path, where)):
            where_model = f"{where}.models[{j}]"
            model = _name(model_entry, "model", json_path, where_model)
            for k, entry in enumerate(_list(model_entry, "profiles", json_path, where_model)):
                where_profile = f"{where_model}.profiles[{k}]"
                iso, dt_a, dt_b = _darktable_profile(entry, json_path, where_profile)
                if entry.get("skip") is True:
                    continue
                total = sums.setdefault((maker, model, iso), [0.0, 0.0, 0.0])
                total[0] += max(dt_b[_GREEN], 0.0)
                total[1] += max(dt_a[_GREEN], 0.0)
                total[2] += 1
    white = U16 if scale == "u16" else 1.0
    return [
        NoiseProfile(a / count * white**2, b / count * white, maker, model, iso, scale)
        for (maker, model, iso), (a, b, count) in sums.items()
    ]


def _list(entry: object, key: str, path: PathLike, where: str) -> list[object]:
    value = entry.get(key) if isinstance(entry, dict) else None
    if not isinstance(value, list):
        raise KpnError(f"{path}: {where or 'top level'}: '{key}' must be a list")
    return value


def _name(entry: object, key: str, path: PathLike, where: str) -> str:
    value = entry.get(key) if isinstance(entry, dict) else None
    if not isinstance(value, str) or not value.strip() or "\n" in value:
        raise KpnError(f"{path}: {where}: '{key}' must be a one-line name, got {value!r}")
    return value.strip()


def _darktable_profile(
    entry: object, path: PathLike, where: str
) -> tuple[int, list[float], list[float]]:
    """(iso, a[3], b[3]) of one darktable profile entry."""
    if not isinstance(entry, dict):
        raise KpnError(f"{path}: {where}: expected an object with 'iso', 'a' and 'b'")
    iso = entry.get("iso")
    if isinstance(iso, bool) or not isinstance(iso, int | float) or not iso >= 1:
        raise KpnError(f"{path}: {where}: 'iso' must be a number >= 1, got {iso!r}")
    if not math.isfinite(iso) or iso != round(iso):
        raise KpnError(f"{path}: {where}: 'iso' {iso!r} is not a whole number")
    channels = []
    for key in ("a", "b"):
        value = entry.get(key)
        if (
            not isinstance(value, list)
            or len(value) != 3
            or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                for v in value
            )
        ):
            raise KpnError(f"{path}: {where}: '{key}' must be 3 finite numbers, got {value!r}")
        channels.append([float(v) for v in value])
    return round(iso), channels[0], channels[1]


def import_darktable(
    json_path: PathLike | None, out_dir: PathLike, *, scale: Scale = "u16"
) -> list[Path]:
    """Write one ``.nprof`` per camera and ISO of darktable's database into ``out_dir``.

    ``json_path`` None: the first of :data:`DARKTABLE_JSON_PATHS` that exists. The whole
    file is read and checked before anything is written; ``out_dir`` is created if
    needed, and existing files of the same names are replaced. Returns the paths written.
    """
    source = find_darktable_json() if json_path is None else Path(json_path)
    profiles = read_darktable(source, scale=scale)
    if not profiles:
        raise KpnError(f"{source}: holds no noise profile")
    folder = make_folder(out_dir)
    names: dict[str, NoiseProfile] = {}
    for profile in profiles:
        other = names.setdefault(profile.file_name, profile)
        if other is not profile:
            raise KpnError(
                f"{source}: {other.maker} {other.model} and {profile.maker} {profile.model} "
                f"would both be written to {profile.file_name}"
            )
    return [write_nprof(folder, profile) for profile in profiles]
