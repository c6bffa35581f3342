"""Real frontal MIPs next to phantoms of the same scan range, as the model sees them, for judging realism.

Each row: a real MIP (the L3 scans of ``../shared/data/real_dev`` read through l3edge's own reader, and the
two pictures of ``../shared/data/real_mip_reference``, whose 8-bit values are mapped back to HU), then
phantoms whose scan covers about the same levels. Every tile is in the model space of the bundled model
(4 mm/px, 64 columns = 256 mm, the [100, 1500] HU bone window), enlarged 3x without smoothing, so what the
network cannot see is not shown either. Red ticks: the phantoms' T12, L1, L3 and S1 (truth). The last row
forces generator 0.4's new options (``EXTRAS``): a lumbar spine CT, contrast over the spine, a scan cut
through L3, streaks and beam hardening.

    python -m tools.phantom_gallery --out docs/phantom_gallery.png [--seed 0] [--per-row 4]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from l3edge.phantom import fast_projection
from l3edge.preprocess import to_model_space
from tools.data import default_space

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ZOOM = 3
TILE_H = 330


def _space_image(mip: np.ndarray, z: np.ndarray, col_mm: float) -> np.ndarray:
    img, _ = to_model_space(mip, z, col_mm, default_space(pad_px=0))
    return np.clip((img - 100.0) / 1400.0, 0, 1)


def tile(img01: np.ndarray, label: str, marks: list[tuple[float, str]] | None = None) -> Image.Image:
    """``img01`` in [0, 1] (rows superior first) as an RGB tile; ``marks`` are (row, name) ticks."""
    im = Image.fromarray((img01 * 255).astype(np.uint8)).convert("RGB")
    im = im.resize((im.width * ZOOM, im.height * ZOOM), Image.Resampling.NEAREST)
    scale = TILE_H / im.height if im.height > TILE_H else 1.0
    if scale != 1.0:
        im = im.resize((max(1, round(im.width * scale)), TILE_H), Image.Resampling.BILINEAR)
    d = ImageDraw.Draw(im)
    for row, name in marks or []:
        y = (row + 0.5) * ZOOM * scale
        d.line([(0, y), (8, y)], fill=(255, 60, 60), width=2)
        d.text((10, y - 6), name, fill=(255, 80, 80))
    d.rectangle([0, 0, im.width, 25], fill=(0, 0, 0))
    d.multiline_text((2, 1), label, fill=(255, 255, 0), spacing=0)
    return im


def real_tiles() -> list[tuple[Image.Image, str]]:
    """(tile, region of phantoms to show beside it) for each real MIP available."""
    out: list[tuple[Image.Image, str]] = []
    dev = SHARED / "real_dev"
    if (dev / "truth.json").is_file():
        from l3edge.scan import read_projection

        truth = json.loads((dev / "truth.json").read_text())
        for name, t in sorted(truth.items()):
            if not t.get("has_l3"):
                continue
            p = read_projection(dev / name, series_uid=t.get("series_with_l3"))
            img = _space_image(p.mip_hu, p.z_mm, p.col_spacing_mm)
            out.append((tile(img, f"REAL {name[:22]}\n(real_dev)"), "abdomen"))
    for f in sorted((SHARED / "real_mip_reference").glob("*.png")):
        a = np.asarray(Image.open(f).convert("L"), dtype=np.float32) / 255.0 * 1700.0 - 200.0
        mm = 1.07 if "pancreas" in f.name else 3.0  # square pixels (the README gives the pixel size)
        z = -mm * np.arange(a.shape[0], dtype=np.float64)
        out.append((tile(_space_image(a, z, mm), f"REAL {f.stem[:22]}\n(picture)"), "abdomen"))
    return out


EXTRAS: tuple[tuple[str, dict[str, object]], ...] = (
    ("spine", {}),
    (
        "abdomen",
        {"iv_contrast": True, "contrast_phase": "portal", "contrast_scale": 1.4, "aorta_offset_mm": 2.0},
    ),
    ("abdomen", {"iv_contrast": True, "contrast_phase": "arterial", "contrast_scale": 1.3}),
    ("l3_bottom", {"cut_level": "L3", "cut_end": "bottom", "cut_frac": 0.5, "table_edge_hu": 500.0}),
    ("cap", {"streaks": 5, "streak_hu": 350.0, "beam_hardening": 0.22}),
)
"""The last row: generator 0.4's new options, forced (a lumbar spine CT, contrast over the spine, a scan cut
through L3 with a curved table, streaks and beam hardening)."""


def phantom_tile(seed: int, region: str, **overrides: object) -> Image.Image:
    proj, truth = fast_projection(seed, mm_per_px=2.0, region=region, **overrides)
    img, grid = to_model_space(proj.mip_hu, proj.z_mm, proj.col_spacing_mm, default_space(pad_px=0))
    img01 = np.clip((img - 100.0) / 1400.0, 0, 1)
    marks = [
        (float(grid.z_to_row(v["z_center"])), k)
        for k, v in truth.vertebrae.items()
        if k in ("L3", "L1", "S1", f"T{truth.config.get('n_ribs', 12)}") and v["in_view"]
    ]
    var = ",".join(v.replace("hip_prosthesis_", "hip_").replace("_contrast", "") for v in truth.variants)
    return tile(img01, f"phantom {seed} {region}\n{var[:30]}", marks)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0, help="first phantom seed")
    ap.add_argument("--per-row", type=int, default=4, help="phantoms beside each real MIP")
    ap.add_argument("--out", type=Path, default=Path("docs/phantom_gallery.png"))
    args = ap.parse_args(argv)
    rows, seed = [], args.seed
    reals = real_tiles() or [(tile(np.zeros((80, 64)), "no real MIPs here\n(../shared absent)"), "abdomen")]
    for real, region in reals:
        tiles = [real]
        for _ in range(args.per_row):
            tiles.append(phantom_tile(seed, region))
            seed += 1
        rows.append(tiles)
    rows.append([phantom_tile(seed + i, region, **kw) for i, (region, kw) in enumerate(EXTRAS)])
    width = max(sum(t.width for t in r) + 6 * len(r) for r in rows)
    height = sum(max(t.height for t in r) + 6 for r in rows)
    sheet = Image.new("RGB", (width, height), (40, 40, 40))
    y = 0
    for r in rows:
        x = 0
        for t in r:
            sheet.paste(t, (x, y))
            x += t.width + 6
        y += max(t.height for t in r) + 6
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(args.out)


if __name__ == "__main__":
    main()
