"""Render 16 phantom frontal MIPs (fast path) next to the real reference MIPs, for judging realism.

Display convention of the real PNGs: HU clipped to [-200, 1500] -> 0..255, superior at top, patient right
on the image left, square pixels.

    python tools/phantom_gallery.py --seed 0 --out docs/phantom_gallery.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from l3edge.phantom import fast_projection

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real_mip_reference"
TILE_H = 400


def to_png(mip_hu: np.ndarray) -> Image.Image:
    return Image.fromarray(((np.clip(mip_hu, -200, 1500) + 200) / 1700 * 255).astype(np.uint8))


def tile(
    img: Image.Image, label: str, height: int = TILE_H, marks: list[tuple[float, str]] | None = None
) -> Image.Image:
    w = max(1, round(img.width * height / img.height))
    im = img.convert("RGB").resize((w, height), Image.BILINEAR)
    d = ImageDraw.Draw(im)
    for frac, name in marks or []:
        y = frac * height
        d.line([(0, y), (8, y)], fill=(255, 60, 60), width=2)
        d.text((10, y - 6), name, fill=(255, 80, 80))
    d.rectangle([0, 0, w, 12 * (label.count("\n") + 1) + 2], fill=(0, 0, 0))
    d.multiline_text((2, 1), label, fill=(255, 255, 0), spacing=0)
    return im


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0, help="first phantom seed (16 consecutive seeds)")
    ap.add_argument("--n", type=int, default=16, help="number of phantoms")
    ap.add_argument("--mm-per-px", type=float, default=1.5)
    ap.add_argument("--out", type=Path, default=Path("docs/phantom_gallery.png"))
    args = ap.parse_args(argv)
    tiles = []
    for f in sorted(REAL.glob("*.png")) if REAL.is_dir() else []:
        tiles.append(tile(Image.open(f), f"REAL {f.stem[:18]}"))
    for s in range(args.seed, args.seed + args.n):
        proj, truth = fast_projection(s, mm_per_px=args.mm_per_px)
        z0, zspan = proj.z_mm[0], proj.z_mm[0] - proj.z_mm[-1]
        marks = [
            ((z0 - v["z_center"]) / zspan, k)
            for k, v in truth.vertebrae.items()
            if k in ("L3", "L1", "S1", "T12") and v["in_view"]
        ]
        var = ",".join(v.replace("hip_prosthesis_", "hip_").replace("_contrast", "") for v in truth.variants)
        label = f"seed {s} {truth.region}\n{var[:40]}\n{var[40:80]}"
        tiles.append(tile(to_png(proj.mip_hu), label, marks=marks))
    per_row = 6
    rows = [tiles[i : i + per_row] for i in range(0, len(tiles), per_row)]
    width = max(sum(t.width for t in r) + 4 * len(r) for r in rows)
    sheet = Image.new("RGB", (width, len(rows) * (TILE_H + 4)), (40, 40, 40))
    for ri, r in enumerate(rows):
        x = 0
        for t in r:
            sheet.paste(t, (x, ri * (TILE_H + 4)))
            x += t.width + 4
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)


if __name__ == "__main__":
    main()
