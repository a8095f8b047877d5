"""The noise profile of each input: given, from a ``.nprof`` file, looked up for a
camera raw file, or estimated from the image."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kpn.errors import KpnError, ParameterError, mention
from kpn.infer.noise_estimate import estimate_noise
from kpn.io.nprof import NoiseProfile, find_profile
from kpn.io.raw import RawImage

# The model computes in float32: a larger (a, b) would become inf there and fail every file.
NOISE_MAX = float(np.finfo(np.float32).max)
NOISE_RANGE = f"finite, >= 0 and at most {NOISE_MAX:.4g} (float32)"


def valid_noise(values: object) -> bool:
    """Whether every noise variance in ``values`` (a number or an array) is ``NOISE_RANGE``."""
    array = np.asarray(values, dtype=np.float64)
    return bool(np.isfinite(array).all() and (array >= 0).all() and (array <= NOISE_MAX).all())


def check_noise_parameter(parameter: str, value: float) -> float:
    """``value`` as a float, or a :class:`~kpn.errors.ParameterError` naming ``parameter``
    unless it is a noise variance the model can compute with."""
    if not valid_noise(value):
        raise ParameterError(
            parameter, value, f"a noise variance (0..65535 scale) is {NOISE_RANGE}"
        )
    return float(value)


@dataclass(frozen=True)
class NoiseOptions:
    """The noise profile sources a run was given, tried in this order."""

    explicit: tuple[float, float] | None = None
    nprof: NoiseProfile | None = None
    nprof_path: str = ""
    nprof_dir: str | None = None
    auto: bool = False
    unmarked: str | None = None  # scale of .nprof files without a scale line

    @property
    def any(self) -> bool:
        return bool(self.explicit or self.nprof or self.nprof_dir or self.auto)


@dataclass(frozen=True)
class Profile:
    """The (a, b) used for a file, on the 0..65535 scale, and where it came from."""

    a: float
    b: float
    source: str


def _raw_range(raw: RawImage | None) -> float | None:
    return None if raw is None else raw.white[0] - raw.black[0]


def resolve_profile(
    options: NoiseOptions, path: Path, image: np.ndarray, raw: RawImage | None
) -> Profile:
    """The noise profile of one input: the first of the run's sources that applies."""
    if options.explicit is not None:
        return Profile(*options.explicit, "--noise-a/--noise-b")
    if options.nprof is not None:
        try:
            profile = options.nprof.converted("u16", raw_range=_raw_range(raw))
        except KpnError as err:
            raise KpnError(f"{path}: {mention('nprof', options.nprof_path)}: {err}") from None
        return Profile(profile.a, profile.b, f"--nprof {options.nprof_path}")
    skipped = ""
    if options.nprof_dir is not None:
        if raw is None:
            skipped = "--nprof-dir holds camera profiles, and this is not a camera raw file"
        elif raw.maker is None or raw.model is None or raw.iso is None:
            skipped = "the raw file does not name its maker, model and ISO"
        else:
            try:
                match = find_profile(
                    options.nprof_dir,
                    raw.maker,
                    raw.model,
                    raw.iso,
                    unmarked=options.unmarked,  # type: ignore[arg-type]
                    raw_range=_raw_range(raw),
                )
            except KpnError as err:
                if not options.auto:
                    raise
                skipped = str(err)
            else:
                sources = ", ".join(source.name for source in match.sources)
                how = f"{match.how} for ISO {raw.iso}"
                return Profile(match.profile.a, match.profile.b, f"{sources} ({how})")
    if options.auto:
        estimate = estimate_noise(image, str(path))
        note = f"; {skipped}" if skipped else ""
        return Profile(
            estimate.a, estimate.b, f"an estimate from the image ({estimate.describe()}{note})"
        )
    reason = f" ({skipped})" if skipped else ""
    raise KpnError(
        f"{path}: no noise profile{reason}: give {mention('noise_a')} and "
        f"{mention('noise_b')}, {mention('nprof')}, {mention('nprof_dir')} or "
        f"{mention('noise', 'auto')}"
    )
