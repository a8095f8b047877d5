#!/usr/bin/env python3
"""Test images and comparisons for vkdt/oracle_series.sh (vkdt-cli against kpn's emulation).

numpy only (scikit-image for `make`'s photo); reads and writes PFM itself, so that the
comparison does not go through kpn's own PFM code.

  make OUTDIR [--a 20000 --b 40 --seed 1 --photo coffee --y0 8 --x0 44]
      OUTDIR/clean.pfm, OUTDIR/noisy.pfm: a 512x384 crop (from row y0, column x0) of a
      scikit-image photo (default `coffee`),
      linearised from sRGB, with Poisson-Gaussian noise (a, b on the 0..65535 scale), standard
      PFM row order (bottom row first). The same image as /work/shared/vkdt-oracle/vkdt-compare.py
      `make` (benchmarks/results/vkdt-oracle.md) with the defaults.
  crop OUTDIR NAME Y0 Y1 X0 X1
      OUTDIR/{clean,noisy}-NAME.pfm (standard rows) and OUTDIR/noisy-NAME-vkdt.pfm (top row
      first: vkdt's i-pfm reads a PFM's first row as the image's top row).
  compare VKDT.pfm KPN.pfm CLEAN.pfm [--tol 2e-3]
      VKDT.pfm as vkdt's o-pfm writes it (top row first), KPN.pfm and CLEAN.pfm standard.
      Prints max |d|, mean |d|, how many values exceed tol, PSNR (peak 1) of vkdt against
      kpn, and the PSNR of each output (and of the noisy input, if NOISY is given) against
      the clean image. Exit status 0 when max |d| <= tol, 3 otherwise.
"""

import argparse
import math
import sys

import numpy as np


def read_pfm(path, top_first=False):
    with open(path, "rb") as f:
        raw = f.read()
    parts, pos = [], 0
    while len(parts) < 4:
        while raw[pos : pos + 1].isspace():
            pos += 1
        start = pos
        while not raw[pos : pos + 1].isspace():
            pos += 1
        parts.append(raw[start:pos].decode())
    pos += 1
    magic, w, h, scale = parts[0], int(parts[1]), int(parts[2]), float(parts[3])
    ch = 3 if magic == "PF" else 1
    data = np.frombuffer(raw, dtype="<f4" if scale < 0 else ">f4", count=w * h * ch, offset=pos)
    img = data.astype(np.float32).reshape(h, w, ch)
    if ch == 1:
        img = img.repeat(3, 2)
    return np.ascontiguousarray(img if top_first else img[::-1])


def write_pfm(path, img, top_first=False):
    img = np.asarray(img, dtype="<f4")
    h, w, _ = img.shape
    with open(path, "wb") as f:
        f.write(f"PF\n{w} {h}\n-1.0\n".encode())
        f.write(np.ascontiguousarray(img if top_first else img[::-1]).tobytes())


def psnr(a, b):
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def cmd_make(args):
    from skimage import data

    photo = getattr(data, args.photo)()
    rgb = photo[args.y0 : args.y0 + 384, args.x0 : args.x0 + 512, :3].astype(np.float64) / 255.0
    if rgb.shape != (384, 512, 3):
        raise SystemExit(
            f"{args.photo} from ({args.y0}, {args.x0}) gives {rgb.shape}, not 384x512x3"
        )
    clean = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4).astype(np.float32)
    rng = np.random.default_rng(args.seed)
    sigma = np.sqrt(args.a + 65535.0 * np.maximum(clean, 0) * args.b) / 65535.0
    noisy = (clean + sigma * rng.standard_normal(clean.shape)).astype(np.float32)
    write_pfm(f"{args.outdir}/clean.pfm", clean)
    write_pfm(f"{args.outdir}/noisy.pfm", noisy)
    print(
        f"wrote {args.outdir}/clean.pfm, noisy.pfm: 512x384 of {args.photo} "
        f"from ({args.y0}, {args.x0}), noise a={args.a} b={args.b}, "
        f"noisy PSNR {psnr(noisy, clean):.2f} dB"
    )


def cmd_crop(args):
    sl = (slice(args.y0, args.y1), slice(args.x0, args.x1))
    for k in ("clean", "noisy"):
        img = read_pfm(f"{args.outdir}/{k}.pfm")[sl]
        write_pfm(f"{args.outdir}/{k}-{args.name}.pfm", img)
    write_pfm(
        f"{args.outdir}/noisy-{args.name}-vkdt.pfm",
        read_pfm(f"{args.outdir}/noisy.pfm")[sl],
        top_first=True,
    )
    print(
        f"wrote {args.outdir}/{{clean,noisy}}-{args.name}.pfm and noisy-{args.name}-vkdt.pfm: "
        f"{img.shape[1]}x{img.shape[0]}"
    )


def cmd_compare(args):
    v = read_pfm(args.vkdt, top_first=True)
    k = read_pfm(args.kpn)
    c = read_pfm(args.clean)
    if not (v.shape == k.shape == c.shape):
        raise SystemExit(f"shapes differ: vkdt {v.shape}, kpn {k.shape}, clean {c.shape}")
    d = np.abs(v.astype(np.float64) - k.astype(np.float64))
    h, w, _ = v.shape
    ok = bool(np.isfinite(d).all()) and float(d.max()) <= args.tol
    print(
        f"{w}x{h}: vkdt range [{v.min():.4f}, {v.max():.4f}], "
        f"kpn range [{k.min():.4f}, {k.max():.4f}]"
    )
    print(
        f"vkdt vs kpn: max|d| {d.max():.3e}  mean|d| {d.mean():.3e}  values > {args.tol:g}: "
        f"{int((d > args.tol).sum())} of {d.size}  identical: {100 * float((d == 0).mean()):.2f}%  "
        f"PSNR {psnr(v, k):.2f} dB  non-finite: {int((~np.isfinite(d)).sum())}"
    )
    dflip = np.abs(v[::-1].astype(np.float64) - k)
    print(f"(orientation check: vkdt flipped vs kpn max|d| {dflip.max():.3e})")
    line = f"PSNR against clean: vkdt {psnr(v, c):.3f} dB, kpn {psnr(k, c):.3f} dB"
    if args.noisy:
        line += f", noisy input {psnr(read_pfm(args.noisy), c):.3f} dB"
    print(line)
    dm = d.max(axis=2)
    print(
        "max|d| per 16-row band (top first):",
        " ".join(f"{dm[i : i + 16].max():.1e}" for i in range(0, h, 16)),
    )
    print(
        "max|d| per 16-col band (left first):",
        " ".join(f"{dm[:, i : i + 16].max():.1e}" for i in range(0, w, 16)),
    )
    for idx in np.argsort(dm.ravel())[::-1][:3]:
        y, x = divmod(int(idx), w)
        print(f"  worst px (x={x}, y={y} from the top): vkdt {v[y, x]} kpn {k[y, x]}")
    print(
        f"RESULT {'PASS' if ok else 'FAIL'}: "
        f"max|d| {d.max():.3e} {'<=' if ok else '>'} {args.tol:g}"
    )
    return 0 if ok else 3


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("outdir")
    m.add_argument("--a", type=float, default=20000.0)
    m.add_argument("--b", type=float, default=40.0)
    m.add_argument("--seed", type=int, default=1)
    m.add_argument("--photo", default="coffee")
    m.add_argument("--y0", type=int, default=8)
    m.add_argument("--x0", type=int, default=44)
    c = sub.add_parser("crop")
    c.add_argument("outdir")
    c.add_argument("name")
    for k in ("y0", "y1", "x0", "x1"):
        c.add_argument(k, type=int)
    c = sub.add_parser("compare")
    c.add_argument("vkdt")
    c.add_argument("kpn")
    c.add_argument("clean")
    c.add_argument("--noisy")
    c.add_argument("--tol", type=float, default=2e-3)
    args = ap.parse_args()
    return {"make": cmd_make, "crop": cmd_crop, "compare": cmd_compare}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
