"""Soft tissue, air and the table: skin/fat, body wall muscle, cavities, lungs, organs, vessels (IV contrast),
bowel (oral contrast, gas), limbs' soft tissue. Painted before the bones, in list order."""

from __future__ import annotations

import numpy as np

from l3edge.phantom.body import BodyShape
from l3edge.phantom.config import PhantomConfig
from l3edge.phantom.levels import Spine
from l3edge.phantom.primitives import Box, Capsule, Ellipsoid, Primitive, Tube, chain, rot_z
from l3edge.phantom.vessels import great_vessels, phase_hu

FAT, MUSCLE, LUNG, GAS = -100.0, 50.0, -850.0, -950.0


def _shrunk(knots: tuple, d: float, dy: float = 0.0) -> tuple:
    return tuple((z, cx, cy + dy, max(1.0, rx - d), max(1.0, ry - d)) for z, cx, cy, rx, ry in knots)


def table(cfg: PhantomConfig, rng: np.random.Generator) -> list[Primitive]:
    """Patient table under the back: foam core in a thin carbon shell, optional rails; centred in the FOV."""
    top, th, hw = cfg.table_top_y_mm, cfg.table_thickness_mm, 230.0
    zr = (-5000.0, 5000.0)
    out: list[Primitive] = [
        Box((-hw, top, zr[0]), (hw, top + th, zr[1]), -850.0),
        Box((-hw, top, zr[0]), (hw, top + 2.0, zr[1]), cfg.table_shell_hu),
        Box((-hw * 0.9, top + th - 2.0, zr[0]), (hw * 0.9, top + th, zr[1]), cfg.table_shell_hu),
        Box((-hw * 0.55, top - 6.0, zr[0]), (hw * 0.55, top, zr[1]), -750.0),  # mattress
    ]
    if cfg.table_edge_hu > 0:  # a curved table's raised sides: seen edge-on, bright lines in the MIP
        for sg in (-1.0, 1.0):
            x0 = sg * hw * 0.93
            lo, hi = min(x0, x0 + sg * 2.5), max(x0, x0 + sg * 2.5)
            out.append(Box((lo, top - 30.0, zr[0]), (hi, top, zr[1]), cfg.table_edge_hu))
    if cfg.table_rails:
        hu = float(rng.uniform(250, 1500))
        for sg in (-1.0, 1.0):
            for dx, r in ((8.0, 5.0), (22.0, 3.0)):
                x = sg * (hw + dx)
                out.append(Capsule((x, top + th / 2, zr[0]), (x, top + th / 2, zr[1]), r, hu))
    return out


def _vessel_tree(
    root: tuple[float, float, float],
    extent: tuple[float, float, float],
    hu: float,
    rng: np.random.Generator,
    depth: int = 3,
) -> list[Primitive]:
    """A small random branching tree of thin enhancing vessels inside an ellipsoidal organ of semi-axes
    ``extent`` around ``root`` (branches halve in length and thin out at each level)."""
    out: list[Primitive] = []
    tips = [(np.asarray(root, dtype=np.float64), 3.0)]
    ext = np.asarray(extent, dtype=np.float64)
    for level in range(depth):
        new = []
        for p, r in tips:
            for _ in range(int(rng.integers(2, 4))):
                d = rng.normal(size=3)
                q = p + 0.55**level * ext * d / np.linalg.norm(d)
                out.append(Capsule(tuple(p), tuple(q), r, hu * float(rng.uniform(0.6, 0.85))))
                new.append((q, max(1.0, 0.7 * r)))
        tips = new
    return out


def soft_tissue(
    spine: Spine, body: BodyShape, cfg: PhantomConfig, rng: np.random.Generator
) -> list[Primitive]:
    lv = spine.by_name
    s, n = cfg.skeleton_scale, cfg.n_ribs
    iv, oral = cfg.iv_contrast, cfg.oral_contrast
    phase = cfg.contrast_phase if iv else "none"
    enh = phase_hu(cfg, np.random.default_rng([cfg.detail_seed, 59]))
    aorta_hu, vein_hu, kidney_hu = enh
    liver_hu = {"arterial": 75.0, "portal": float(rng.uniform(100, 150)), "delayed": 90.0}.get(phase, 55.0)
    pitch = 33.0 * s  # a lumbar vertebra and its disc: the unit of the organs' shifts
    zf = spine.z_femoral_head
    knots = body.knots
    wall = cfg.fat_mm
    out: list[Primitive] = [Tube(knots, FAT), Tube(_shrunk(knots, wall), MUSCLE)]
    # cavity (visceral fat) from the pelvic floor to the lung apices
    cav = tuple(k for k in _shrunk(knots, wall + 14.0, -4.0) if zf - 40 <= k[0] <= lv("T1").z_top)
    out.append(Tube(cav, -90.0))
    # legs and head soft tissue
    for sg in (-1.0, 1.0):
        lx = cfg.lateral_offset_mm + sg * 85 * cfg.body_width_scale
        r0, r1 = 78 * cfg.body_width_scale + cfg.fat_mm, 55 + 0.5 * cfg.fat_mm
        out.append(
            Tube(
                (
                    (zf - 520 * s, lx, cfg.table_top_y_mm - r1, r1, r1),
                    (zf - 40, lx, cfg.table_top_y_mm - r0, r0, r0),
                ),
                MUSCLE,
            )
        )
        for shoulder, elbow, wrist in body.arm_path(sg):
            out.append(Capsule(shoulder, elbow, 42 * s + 0.5 * cfg.fat_mm, MUSCLE))
            out.append(Capsule(elbow, wrist, 32 * s + 0.4 * cfg.fat_mm, MUSCLE))
    c3 = lv("C3")
    out.append(Ellipsoid((c3.x, c3.y - 25 * s, c3.z_top + 110 * s), (82 * s, 105 * s, 105 * s), 20.0))
    # paraspinal muscles and psoas, spinal canal
    lvls = [v for v in spine.levels if v.kind in "TL"]
    for sg in (-1.0, 1.0):
        out.append(
            Tube(
                tuple(
                    (v.z_center, v.x + sg * 35 * s, v.y + v.half_depth + 35 * s, 28 * s, 25 * s)
                    for v in reversed(lvls)
                ),
                MUSCLE,
            )
        )
    lum = [v for v in spine.levels if v.kind == "L"]
    for sg in (-1.0, 1.0):
        ks = [(zf + 20, lum[-1].x + sg * 60 * s, lum[-1].y - 10, 22 * s, 20 * s)]
        ks += [
            (v.z_center, v.x + sg * (v.half_width + 8 + 3 * k), v.y, (8 + 4 * k) * s, (8 + 3.5 * k) * s)
            for k, v in reversed(list(enumerate(lum)))
        ]
        out.append(Tube(tuple(ks), MUSCLE))
    out.append(
        Tube(
            tuple(
                (v.z_center, v.x, v.y + v.half_depth + 9 * s, 9 * s, 7 * s) for v in reversed(spine.levels)
            ),
            15.0,
        )
    )
    # lungs and heart
    t1, tb = lv("T1"), lv(f"T{n - 1}")
    dz_liver = cfg.liver_shift * 0.8 * pitch  # diaphragm, liver dome and lung bases move together
    for sg in (-1.0, 1.0):
        cx, cy, rx, ry = body.cavity(lv(f"T{n // 2 + 1}").z_center)
        zt, zb = t1.z_top + 25 * s, tb.z_center - 15 * s + dz_liver
        out.append(
            Ellipsoid(
                (cx + sg * 0.5 * rx, cy + 0.1 * ry, 0.5 * (zt + zb)),
                (0.48 * rx, 0.85 * ry, 0.5 * (zt - zb)),
                LUNG,
            )
        )
    tm = lv(f"T{max(1, n - 4)}")
    cx, cy, rx, ry = body.cavity(tm.z_center)
    out.append(
        Ellipsoid((cx + 15, cy - 0.3 * ry, tm.z_center), (62 * s, 52 * s, 62 * s), 100.0 if iv else 40.0)
    )
    out.append(
        Ellipsoid((cx + 15, cy - 0.3 * ry, tm.z_center), (45 * s, 38 * s, 45 * s), aorta_hu if iv else 40.0)
    )
    # organs
    tl = lv(f"T{n}")
    cx, cy, rx, ry = body.cavity(tl.z_center)
    dome = lv(f"T{n - 3}").z_center + dz_liver
    out.append(
        Ellipsoid(
            (cx - 0.45 * rx, cy - 0.05 * ry, tl.z_top - 15 + dz_liver),
            (0.6 * rx, 0.8 * ry, float(rng.uniform(75, 105)) * s),
            liver_hu,
            z_clip=(-1e9, dome),
        )
    )
    hilum = (cx - 0.25 * rx, cy, min(tl.z_top - 30, dome - 40))
    if iv:  # enhancing hepatic/portal branches: thin bright lines mottling the liver in the MIP
        tree_hu = aorta_hu if phase == "arterial" else vein_hu
        out += _vessel_tree(
            hilum, (0.55 * rx, 0.6 * ry, 70 * s), tree_hu, np.random.default_rng([cfg.detail_seed, 37])
        )
    spleen = (cx + 0.62 * rx, cy + 0.45 * ry, tl.z_top)
    out.append(
        Ellipsoid(
            spleen,
            (28 * s, 45 * s, 55 * s),
            120.0 if iv else 45.0,
            rot=rot_z(0.5),
        )
    )
    out.append(Ellipsoid((cx + 0.35 * rx, cy - 0.35 * ry, tl.z_top + 5), (45 * s, 35 * s, 45 * s), 25.0))
    if rng.random() < 0.6:
        out.append(Ellipsoid((cx + 0.35 * rx, cy - 0.5 * ry, tl.z_top + 25), (30 * s, 15 * s, 25 * s), GAS))
    l1 = lv("L1")
    pelvis_hu = float(rng.uniform(600, 1500)) if phase == "delayed" else 120.0 if iv else 25.0
    z_bladder = spine.z_femoral_head + 5
    kidneys = []
    for sg, dz in ((-1.0, -20.0), (1.0, 0.0)):
        kz = l1.z_center + dz * s + (cfg.kidney_shift + float(rng.uniform(-0.3, 0.3))) * pitch
        kc = (l1.x + sg * (l1.half_width + 42 * s), l1.y + 8, kz)
        kidneys.append(kc)
        out.append(Ellipsoid(kc, (28 * s, 24 * s, 55 * s), kidney_hu, rot=rot_z(sg * 0.5)))
        out.append(Ellipsoid(kc, (16 * s, 14 * s, 38 * s), pelvis_hu, rot=rot_z(sg * 0.5)))
        if phase == "delayed":  # excreted contrast: collecting systems, ureters down to the bladder
            ureter = [
                (kc[0] - sg * 10 * s, kc[1] - 10, kc[2] - 20 * s),
                (l1.x + sg * 45 * s, l1.y - 10, 0.5 * (kc[2] + z_bladder)),
                (cfg.lateral_offset_mm + sg * 25 * s, lv("S1").y - 70 * s, z_bladder + 20),
            ]
            out.extend(chain(ureter, 2.5 * s, 0.7 * pelvis_hu))
        if iv:  # renal vessels fanning out from the hilum
            hil = (kc[0] - sg * 12 * s, kc[1], kc[2])
            k_rng = np.random.default_rng([cfg.detail_seed, 41, int(sg > 0)])
            out += _vessel_tree(hil, (20 * s, 16 * s, 40 * s), aorta_hu, k_rng, depth=2)
    # great vessels (vessels.py), then small mesenteric branches
    vessels, ao = great_vessels(spine, cfg, enh, kidneys, hilum, spleen)
    out += vessels
    if iv:
        for _ in range(int(rng.integers(10, 25))):
            p = (
                cx + rng.uniform(-0.6, 0.6) * rx,
                cy + rng.uniform(-0.8, 0.2) * ry,
                rng.uniform(zf + 40, tl.z_center),
            )
            q = (p[0] + rng.uniform(-40, 40), p[1] + rng.uniform(-20, 20), p[2] + rng.uniform(-40, 40))
            out.append(Capsule(p, q, float(rng.uniform(1.5, 3.5)), aorta_hu * float(rng.uniform(0.6, 0.95))))
    # bowel: colon frame and small bowel loops, some with oral contrast or gas
    zl = zf + 45 * s
    bowel: list[Primitive] = []
    gas: list[Primitive] = []
    for _ in range(int(rng.integers(14, 28))):
        c = (
            cx + rng.uniform(-0.7, 0.7) * rx,
            cy + rng.uniform(-0.75, 0.1) * ry,
            rng.uniform(zl, l1.z_center),
        )
        r3 = rng.uniform(10, 22, 3) * s
        rad = (float(r3[0]), float(r3[1]), float(r3[2]))
        hu = float(rng.uniform(250, 700)) if oral and rng.random() < 0.6 else float(rng.uniform(10, 40))
        bowel.append(Ellipsoid(c, rad, hu, rot=rot_z(float(rng.uniform(0, np.pi)))))
        if rng.random() < 0.3:
            gas.append(
                Ellipsoid((c[0], c[1] - 0.3 * rad[1], c[2]), (0.5 * rad[0], 0.5 * rad[1], 0.5 * rad[2]), GAS)
            )
    colon_hu = float(rng.uniform(200, 500)) if oral and rng.random() < 0.5 else 20.0
    cpts = [
        (cx - 0.72 * rx, cy - 0.1 * ry, zl),
        (cx - 0.75 * rx, cy - 0.2 * ry, l1.z_center),
        (cx, cy - 0.75 * ry, lv("L2").z_center),
        (cx + 0.75 * rx, cy - 0.2 * ry, l1.z_center + 20),
        (cx + 0.7 * rx, cy - 0.1 * ry, zl),
    ]
    bowel.extend(chain(cpts, 22 * s, colon_hu))
    for a, b in zip(cpts[:-1], cpts[1:], strict=True):
        if rng.random() < 0.6:
            gas.append(Capsule(a, tuple(0.5 * (np.asarray(a) + np.asarray(b))), 10 * s, GAS))
    out += bowel + gas
    bladder_hu = float(rng.uniform(400, 1200)) if phase == "delayed" else 10.0
    out.append(
        Ellipsoid(
            (cfg.lateral_offset_mm, lv("S1").y - 85 * s, z_bladder), (40 * s, 32 * s, 35 * s), bladder_hu
        )
    )
    out += _calcified_plaques(ao, cfg, np.random.default_rng([cfg.detail_seed, 47]))
    return out


def _calcified_plaques(
    aorta: list[tuple[float, float, float]], cfg: PhantomConfig, rng: np.random.Generator
) -> list[Primitive]:
    """Bright specks along the aorta's wall (older patients): 300-1000 HU, a few mm."""
    out: list[Primitive] = []
    if cfg.aorta_calcification <= 0 or len(aorta) < 2:
        return out
    pts = np.asarray(aorta, dtype=np.float64)
    for _ in range(int(60 * cfg.aorta_calcification)):
        k = int(rng.integers(len(pts) - 1))
        p = pts[k] + rng.random() * (pts[k + 1] - pts[k])
        ang = rng.uniform(0, 2 * np.pi)
        c = (p[0] + 11 * np.cos(ang), p[1] + 11 * np.sin(ang), p[2])
        q = (c[0], c[1], c[2] + float(rng.uniform(1, 6)))
        out.append(Capsule(c, q, float(rng.uniform(1.0, 2.5)), float(rng.uniform(300, 1000))))
    return out
