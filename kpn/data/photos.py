"""``kpn photos DIR``: a training set of real photographs from Debian's wallpaper packages.

Dead leaves teach a denoiser edges and flat areas; real photographs add what they lack
(foliage, fur, skies with gradients, fine repeated texture). The machines this project
trains on reach Debian's archive, whose wallpaper packages hold some 37 CC- and
GPL-licensed photographs of 1-16 Mpx. This module downloads those packages with apt's
own tools, takes the photographic files (not the graphics, chosen by hand below),
decodes them to linear light and box-downscales them there by ``factor`` (4 or more:
a 4x4 mean divides the camera's own noise by 4 and hides JPEG's 8x8 blocks), and writes
them once as PFM, with a manifest of where each came from.

A few photos are held out by file (``validation/``), unlike the training ones in subject,
so that the validation PSNR says how the model does on photos it has not seen. The
benchmark's photos (scikit-image's) are not among these packages, so they are never
trained on.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kpn.errors import KpnError, ParameterError
from kpn.io.atomic import atomic_write_bytes
from kpn.io.images import read_image
from kpn.io.pfm import write_pfm

MIN_FACTOR = 4  # below this, JPEG blocks and the cameras' noise survive the downscale
MANIFEST = "manifest.json"
TRAIN, VALIDATION = "train", "validation"

# The photographic files of each package (installed paths), chosen by looking at every
# image the packages hold; the rest are drawings, renders and gradients.
PHOTOS: dict[str, tuple[str, ...]] = {
    "lomiri-wallpapers-16.04": tuple(
        f"usr/share/backgrounds/{name}.jpg"
        for name in (
            "Bridge_by_Sander_Klootwijk",
            "Dragonfly_by_Bolly",
            "Picture_0B_by_freespace",
            "Picture_1A_by_freespace",
            "Wine_by_Jakkub_Mede",
            "aitzgorri_by_Aitzol_Berasategi",
            "free_by_Peter_Nerlich",
            "friends_by_Aitzol_Berasategi",
            "greentock_by_Peter_Nerlich",
            "life_by_Aitzol_Berasategi",
            "picosdeeuropa_by_Aitzol_Berasategi",
            "seeding_by_Clements_Engelhardt",
            "sunset_by_Aitzol_Berasategi",
        )
    ),
    "lomiri-wallpapers-20.04": ("usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg",),
    "mate-backgrounds": tuple(
        f"usr/share/backgrounds/mate/nature/{name}.jpg"
        for name in (
            "Aqua",
            "Blinds",
            "Dune",
            "FreshFlower",
            "Garden",
            "GreenMeadow",
            "LadyBird",
            "RainDrops",
            "Storm",
            "TwoWings",
            "Wood",
            "YellowFlower",
        )
    ),
    "plasma-workspace-wallpapers": (
        *(
            f"usr/share/wallpapers/{name}/contents/images/2560x1600.jpg"
            for name in (
                "BytheWater",
                "ColdRipple",
                "ColorfulCups",
                "EveningGlow",
                "FallenLeaf",
                "Grey",
                "Kite",
                "OneStandsOut",
                "Path",
                "summer_1am",
            )
        ),
        "usr/share/wallpapers/Volna/contents/images/5120x2880.jpg",
    ),
}
# Held out for validation: one per package and subject (mountains, a dog, macro, forest,
# still life), none like another training photo.
HELD_OUT = frozenset(
    {
        "usr/share/backgrounds/picosdeeuropa_by_Aitzol_Berasategi.jpg",
        "usr/share/backgrounds/friends_by_Aitzol_Berasategi.jpg",
        "usr/share/backgrounds/mate/nature/LadyBird.jpg",
        "usr/share/wallpapers/Path/contents/images/2560x1600.jpg",
        "usr/share/wallpapers/ColorfulCups/contents/images/2560x1600.jpg",
    }
)
OWN_PHOTOS_HINT = (
    "to train on your own photos instead, set data.source = 'clean' and data.reference_dir "
    "to a folder of them (low-ISO raw files, PFM, 16-bit TIFF or PNG; README, Train)"
)


@dataclass(frozen=True)
class PhotoRecord:
    """One photo of the set: where it came from and where it went."""

    package: str
    version: str
    file: str  # installed path inside the package
    licence: str
    copyright: str
    sha256: str  # of the package's file
    bytes: int  # the package's file's size
    size: tuple[int, int]  # (width, height) of the package's file
    output: str  # PFM path relative to the set's folder
    output_size: tuple[int, int]
    split: str  # "train" or "validation"


def box_downscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor`` x ``factor`` blocks; a partial last row or column of blocks is
    dropped. ``[H,W,3] -> [H//f, W//f, 3]``, float32."""
    height, width = image.shape[0] // factor, image.shape[1] // factor
    if height < 1 or width < 1:
        raise KpnError(f"{image.shape[1]}x{image.shape[0]} is smaller than {factor}x{factor}")
    blocks = image[: height * factor, : width * factor].reshape(height, factor, width, factor, -1)
    return blocks.mean(axis=(1, 3), dtype=np.float64).astype(np.float32)


def copyright_paragraphs(text: str) -> list[dict[str, str]]:
    """The paragraphs of a machine-readable debian/copyright file (DEP-5), as dicts of
    field -> first line of the value."""
    paragraphs, fields = [], {}
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if fields:
                paragraphs.append(fields)
            fields = {}
        elif not line[0].isspace() and ":" in line:
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
    return paragraphs


def licence_of(paragraphs: list[dict[str, str]], installed: str) -> tuple[str, str]:
    """(licence, copyright) of an installed file: the last ``Files`` paragraph whose glob
    matches its path's end or its name (DEP-5 names source paths, which packages install
    elsewhere: lomiri's ``16.04/x.jpg`` is ``usr/share/backgrounds/x.jpg``)."""
    found = ("unknown (see the package's copyright file)", "")
    name = installed.rsplit("/", 1)[-1]
    for fields in paragraphs:
        for glob in fields.get("files", "").split():
            suffix = fnmatch.fnmatch(installed, glob) or fnmatch.fnmatch(installed, "*/" + glob)
            if suffix or ("/" in glob and glob.rsplit("/", 1)[-1] == name):
                found = (fields.get("license", found[0]), fields.get("copyright", ""))
    return found


def download_packages(packages: list[str], folder: Path) -> dict[str, Path]:
    """``apt-get download`` each package into ``folder``; package -> its .deb."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise KpnError(
            f"kpn photos: apt-get and dpkg-deb are needed (Debian's apt); {OWN_PHOTOS_HINT}"
        )
    result = subprocess.run(
        ["apt-get", "download", *packages], cwd=folder, capture_output=True, text=True
    )
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.startswith("E:")]
        why = lines[0] if lines else f"exit status {result.returncode}"
        raise KpnError(
            f"kpn photos: apt-get download failed ({why}; no network or no package "
            f"lists?); {OWN_PHOTOS_HINT}"
        )
    debs = {}
    for package in packages:
        found = sorted(folder.glob(f"{package}_*.deb"))
        if not found:
            raise KpnError(f"kpn photos: apt-get download gave no .deb for {package}")
        debs[package] = found[0]
    return debs


def deb_field(deb: Path, field: str) -> str:
    result = subprocess.run(["dpkg-deb", "-f", str(deb), field], capture_output=True, text=True)
    if result.returncode != 0:
        raise KpnError(f"{deb}: dpkg-deb cannot read it ({result.stderr.strip()})")
    return result.stdout.strip()


def extract(deb: Path, folder: Path) -> None:
    result = subprocess.run(
        ["dpkg-deb", "-x", str(deb), str(folder)], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise KpnError(f"{deb}: dpkg-deb cannot extract it ({result.stderr.strip()})")


def read_manifest(folder: Path) -> list[PhotoRecord] | None:
    """The set's manifest, or None when there is none or it does not match its files."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["photos"]
        records = [
            PhotoRecord(**{**e, "size": tuple(e["size"]), "output_size": tuple(e["output_size"])})
            for e in entries
        ]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    for record in records:
        output = folder / record.output
        if not output.is_file():
            return None
    return records


def assemble_photos(
    folder: str | Path, factor: int = MIN_FACTOR, packages: list[str] | None = None
) -> tuple[list[PhotoRecord], bool]:
    """Build the photo set in ``folder`` (``train/``, ``validation/``, ``manifest.json``).

    Returns the records and whether they were made now (False: an existing set with the
    same factor and packages was kept). Raises KpnError with one line when apt, the
    network or a file fails.
    """
    folder = Path(folder)
    if factor < MIN_FACTOR:
        raise ParameterError("factor", factor, f"is below {MIN_FACTOR}")
    chosen = list(PHOTOS) if packages is None else packages
    unknown = [p for p in chosen if p not in PHOTOS]
    if unknown:
        raise KpnError(f"kpn photos: unknown package {unknown[0]!r} (known: {', '.join(PHOTOS)})")
    existing = read_manifest(folder)
    wanted = {(p, f) for p in chosen for f in PHOTOS[p]}
    if existing is not None and {(r.package, r.file) for r in existing} == wanted:
        if all(r.size[0] // factor == r.output_size[0] for r in existing):
            return existing, False
    for split in (TRAIN, VALIDATION):
        (folder / split).mkdir(parents=True, exist_ok=True)
    records = []
    with tempfile.TemporaryDirectory(prefix="kpn-photos-") as temp:
        work = Path(temp)
        debs = download_packages(chosen, work)
        for package, deb in debs.items():
            root = work / package
            extract(deb, root)
            version = deb_field(deb, "Version")
            copyright_file = root / "usr/share/doc" / package / "copyright"
            text = (
                copyright_file.read_text(encoding="utf-8", errors="replace")
                if copyright_file.is_file()
                else ""
            )
            paragraphs = copyright_paragraphs(text)
            for installed in PHOTOS[package]:
                source = root / installed
                if not source.is_file():
                    raise KpnError(f"kpn photos: {package} {version} has no {installed}")
                records.append(
                    _convert(source, folder, package, version, installed, paragraphs, factor)
                )
    manifest = {
        "about": "kpn's training photographs (python -m kpn photos); linear Rec.709 "
        f"primaries, box-downscaled by {factor} in linear light",
        "factor": factor,
        "photos": [asdict(r) for r in records],
    }
    atomic_write_bytes(folder / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
    return records, True


def _convert(
    source: Path,
    folder: Path,
    package: str,
    version: str,
    installed: str,
    paragraphs: list[dict[str, str]],
    factor: int,
) -> PhotoRecord:
    data = source.read_bytes()
    linear = read_image(source)  # sRGB codes decoded to linear light
    small = box_downscale(linear, factor)
    split = VALIDATION if installed in HELD_OUT else TRAIN
    stem = Path(installed).stem
    if stem[0].isdigit():  # plasma names its files by size: take the folder's name
        stem = Path(installed).parts[-4]
    output = f"{split}/{stem}.pfm"
    write_pfm(folder / output, small)
    licence, holder = licence_of(paragraphs, installed)
    return PhotoRecord(
        package=package,
        version=version,
        file=installed,
        licence=licence,
        copyright=holder,
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
        size=(linear.shape[1], linear.shape[0]),
        output=output,
        output_size=(small.shape[1], small.shape[0]),
        split=split,
    )
