"""Vertebral levels: names, sizes, z positions, the spine's curve, and the scan range of each region.

How levels are named (this defines the truth, also in the variants):
- Cervical C3..C7 are always present (C1/C2 and the skull are drawn as a head, without levels).
- Thoracic vertebrae are exactly the rib-bearing ones: T1..Tn with n = ``n_ribs`` (11, 12 or 13 pairs; with 13
  pairs there is a T13, with 11 pairs the vertebra after T11 bears no rib and is L1).
- Lumbar vertebrae are the free, rib-less vertebrae between the last thoracic and the sacrum: L1..Lm with
  m = ``n_lumbar`` (4: "sacralised L5", the fifth segment is fused into the sacrum; 6: a sixth lumbar).
  So **L3 is always the third vertebra below the last rib-bearing vertebra**.
- S1 is the top (first fused) segment of the sacrum; with ``n_lumbar == 4`` it is the transitional segment,
  drawn with a rudimentary disc below it and broad alae.
Shape follows position, not name: a vertebra's size comes from its position counted from C3 (so with 11 ribs,
L1 has the size of a usual T12), except that lumbar transverse processes follow the lumbar name (L3's longest,
the last lumbar's short and stubby).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from l3edge.errors import UsageError
from l3edge.phantom.config import PhantomConfig

# Per position from C3 (index 0) to L5 (index 21): body height, disc below, half width, half depth (mm).
_HEIGHT = [
    13,
    13,
    13.5,
    14,
    14.5,
    15,
    16,
    16.5,
    17,
    17.5,
    18,
    18.5,
    19.5,
    20.5,
    22,
    23,
    24,
    25,
    26,
    26.5,
    27,
    28,
]
_DISC = [5, 5, 5, 5, 5, 4, 4, 4, 4.5, 4.5, 5, 5, 5.5, 5.5, 6, 6.5, 7, 8, 9, 10, 11, 10]
_HALF_W = [9, 9.5, 10, 11, 13, 14, 14.5, 14.5, 15, 15.5, 16, 16.5, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26]
_HALF_D = [8, 8, 8, 8.5, 9, 10, 11, 12, 12.5, 13, 13.5, 14, 14, 14.5, 15, 15.5, 15.5, 16, 16.5, 17, 17, 17]
# Distance from the back's skin (minus fat) to the body centre, by position: kyphosis / lordosis.
_BACK = [50, 50, 52, 55, 58, 60, 58, 56, 55, 54, 54, 55, 56, 58, 60, 62, 65, 70, 75, 80, 80, 77]


@dataclass(frozen=True)
class Level:
    """One vertebra (or the S1 segment)."""

    name: str
    kind: str
    """'C', 'T', 'L' or 'S'."""
    index: int
    """1-based number within its kind (L3 -> 3)."""
    z_top: float
    z_bottom: float
    half_width: float
    half_depth: float
    x: float
    """Body centre x (spine curve at the centre)."""
    y: float
    """Body centre y."""

    @property
    def z_center(self) -> float:
        return 0.5 * (self.z_top + self.z_bottom)

    @property
    def height(self) -> float:
        return self.z_top - self.z_bottom


@dataclass(frozen=True)
class Spine:
    """All levels, superior first, plus the pelvic landmarks derived from S1."""

    levels: tuple[Level, ...]
    sacrum_length: float
    z_femoral_head: float
    """z of the femoral head centres."""

    def by_name(self, name: str) -> Level:
        for lv in self.levels:
            if lv.name == name:
                return lv
        raise KeyError(name)

    def curve_x(self, cfg: PhantomConfig, z: float) -> float:
        return spine_x(cfg, z, self.by_name("L3").z_center)


def spine_x(cfg: PhantomConfig, z: float, z_l3: float) -> float:
    """Lateral position of the spine: the patient's offset plus a smooth scoliotic S-curve."""
    s = cfg.scoliosis_mm * np.sin(2 * np.pi * (z - z_l3) / 420.0 + cfg.scoliosis_phase)
    return float(cfg.lateral_offset_mm + s)


def build_spine(cfg: PhantomConfig) -> Spine:
    """Stack the vertebrae (heights and discs) around the L3 centre at ``cfg.l3_z_mm``."""
    s = cfg.skeleton_scale
    names: list[tuple[str, str, int, int]] = [(f"C{i}", "C", i, i - 3) for i in range(3, 8)]
    names += [(f"T{i}", "T", i, 4 + i) for i in range(1, cfg.n_ribs + 1)]
    names += [(f"L{j}", "L", j, 4 + cfg.n_ribs + j) for j in range(1, cfg.n_lumbar + 1)]
    pos = [min(p, 21) for _, _, _, p in names]
    # Per-level jitter of body and disc heights (people differ level by level, not only in scale), and a
    # compressed body where the config has a fracture (the disc heights stay).
    jit = np.random.default_rng([cfg.detail_seed, 3])
    heights = [_HEIGHT[p] * s * float(jit.uniform(0.93, 1.07)) for p in pos]
    discs = [_DISC[p] * s * float(jit.uniform(0.75, 1.25)) for p in pos]
    for i, (name, *_rest) in enumerate(names):
        if name == cfg.fracture_level:
            heights[i] *= 1.0 - cfg.fracture_severity
    # Stack from C3 downwards with z = 0 at the top of C3, then shift so the L3 centre is at cfg.l3_z_mm.
    tops, z = [], 0.0
    for h, d in zip(heights, discs, strict=True):
        tops.append(z)
        z -= h + d
    s1_top = z
    i_l3 = [n for n, *_ in names].index("L3")
    shift = cfg.l3_z_mm - (tops[i_l3] - heights[i_l3] / 2)
    depth = 0.85 + 0.15 * cfg.body_depth_scale
    back0 = cfg.table_top_y_mm - cfg.fat_mm
    levels = []
    for (name, kind, idx, _), p, top, h in zip(names, pos, tops, heights, strict=True):
        zc = top + shift - h / 2
        lord = 60 + (_BACK[p] - 60) * cfg.lordosis_scale
        y = back0 - lord * s * depth
        x = spine_x(cfg, zc, cfg.l3_z_mm)
        wide = 1.08 * float(jit.uniform(0.95, 1.05))
        levels.append(
            Level(name, kind, idx, top + shift, top + shift - h, _HALF_W[p] * s * wide, _HALF_D[p] * s, x, y)
        )
    s1_h = 28.0 * s
    z_s1 = s1_top + shift
    y_s1 = levels[-1].y + 8 * s
    levels.append(
        Level("S1", "S", 1, z_s1, z_s1 - s1_h, 25 * s, 16 * s, spine_x(cfg, z_s1, cfg.l3_z_mm), y_s1)
    )
    return Spine(tuple(levels), sacrum_length=110.0 * s, z_femoral_head=z_s1 - 105.0 * s * cfg.femur_drop)


def scan_range(cfg: PhantomConfig, spine: Spine) -> tuple[float, float]:
    """(z_min, z_max) of the slice centres for the config's region (or its explicit ``scan_z_range``)."""
    if cfg.scan_z_range is not None:
        lo, hi = cfg.scan_z_range
        return float(min(lo, hi)), float(max(lo, hi))
    tm, bm = cfg.top_margin_mm, cfg.bottom_margin_mm
    lv = spine.by_name
    last_t = lv(f"T{cfg.n_ribs}")
    pelvis_bottom = spine.z_femoral_head - 50.0 * cfg.skeleton_scale - (bm + 15)
    z_l3 = lv("L3").z_center
    if cfg.region == "abdomen":
        # from the lower chest (about T6) to the diaphragm (about T11), depending on the margin drawn
        k = int(np.clip(round(6 - (tm + 10) / 12), 1, 6))
        top, bottom = lv(f"T{cfg.n_ribs - k}").z_top + tm % 12, pelvis_bottom
    elif cfg.region == "cap":
        top, bottom = lv("T1").z_top + 25 + tm, pelvis_bottom
    elif cfg.region == "wholebody":
        top, bottom = lv("C3").z_top + 60 + 2.5 * tm, spine.z_femoral_head - 220 - 3 * bm
    elif cfg.region == "chest":
        # Ends between the last thoracic and L1: L3 (two vertebrae lower) is never in view.
        top, bottom = lv("T1").z_top + 25 + tm, last_t.z_center - 0.5 * bm
    elif cfg.region == "l3_top":
        top = z_l3 + 0.8 * (tm - 5)
        bottom = top - (280 + 3 * bm)
    elif cfg.region == "l3_bottom":
        bottom = z_l3 - (0.7 * bm - 3)
        top = bottom + 280 + 3 * tm
    elif cfg.region == "spine":
        # lumbar spine CT: from the middle of L1 (below the last ribs) to about the top of the sacrum
        top, bottom = lv("L1").z_center + tm, lv("S1").z_top - bm
    else:
        raise ValueError(f"unknown region {cfg.region!r}")
    if cfg.cut_level:  # the edge cuts through a named vertebral body (a scan that ends inside a level)
        try:
            cut = spine.by_name(cfg.cut_level)
        except KeyError:
            raise UsageError(f"cut_level {cfg.cut_level!r} is not a level of this spine") from None
        if cfg.cut_end not in ("top", "bottom"):
            raise UsageError(f"cut_end must be 'top' or 'bottom', not {cfg.cut_end!r}")
        z_cut = cut.z_top - float(np.clip(cfg.cut_frac, 0.0, 1.0)) * cut.height
        if cfg.cut_end == "top":  # keep at least 50 mm of scan below the cut
            top, bottom = z_cut, min(bottom, z_cut - 50.0)
        else:
            bottom, top = z_cut, max(top, z_cut + 50.0)
    return float(bottom), float(top)


def slice_positions(cfg: PhantomConfig, spine: Spine, top_limit: float | None = None) -> np.ndarray:
    """Slice centre z, superior first, spaced ``slice_spacing_mm`` from the top of the scan range (lowered to
    ``top_limit`` when given, keeping at least 60 mm of scan)."""
    lo, hi = scan_range(cfg, spine)
    if top_limit is not None and top_limit < hi:
        hi = top_limit
        lo = min(lo, hi - 60.0)
    n = int(np.floor((hi - lo) / cfg.slice_spacing_mm + 1e-6)) + 1
    return hi - cfg.slice_spacing_mm * np.arange(n, dtype=np.float64)
