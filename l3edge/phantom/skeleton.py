"""Bones and metal as analytic primitives: vertebrae with their processes, sacrum, skull, arms, degenerative
spurs, cement and spinal hardware; ribs (ribs.py) and pelvis (pelvis.py). Shapes aim at a realistic frontal
MIP, not at exact anatomy. Every level's proportions come from its position in the column and its name
(lumbar transverse processes: L1 short, L3 longest, the last lumbar stubby and angled up), with per-scan
jitter, so that no single shape tells the level: counting does.
"""

from __future__ import annotations

import numpy as np

from l3edge.phantom.body import BodyShape
from l3edge.phantom.config import PhantomConfig
from l3edge.phantom.levels import Level, Spine
from l3edge.phantom.pelvis import pelvis
from l3edge.phantom.primitives import Capsule, Ellipsoid, Primitive, Tube, chain
from l3edge.phantom.ribs import rib_cage

METAL_HU = 3000.0
CEMENT_HU = 2200.0
# Lumbar transverse process length beyond the pedicle (mm) by lumbar number; the last lumbar's is separate.
_LUMBAR_TP = {1: 17.0, 2: 24.0, 3: 30.0, 4: 25.0, 5: 20.0}


def _vertebra(
    lv: Level,
    nxt: Level | None,
    cfg: PhantomConfig,
    cortex: float,
    canc: float,
    rng: np.random.Generator,
) -> list[Primitive]:
    s = cfg.skeleton_scale
    x, y, w, d, h = lv.x, lv.y, lv.half_width, lv.half_depth, lv.height
    zt, zb, zc = lv.z_top, lv.z_bottom, lv.z_center
    out: list[Primitive] = []
    if nxt is not None:  # intervertebral disc below this body
        xm, ym = 0.5 * (x + nxt.x), 0.5 * (y + nxt.y)
        out.append(Tube(((nxt.z_top, xm, ym, w + 1.5, d + 1.5), (zb, xm, ym, w + 1.5, d + 1.5)), 80.0))
    # Shell (AP walls dimmer than the endplates and lateral margins, as in real MIPs), cancellous core.
    waist = float(rng.uniform(0.88, 0.96))
    shell = cortex * float(rng.uniform(0.5, 0.7))  # a thin shell: dimmer than endplates and margins
    e, rc = min(1.6, 0.12 * h), min(2.5, 0.15 * h)  # endplate thickness, rounding of the body's corners
    out.append(
        Tube(
            (
                (zb, x, y, w - rc, d - rc),
                (zb + rc, x, y, w, d),
                (zc, x, y, waist * w, 0.95 * d),
                (zt - rc, x, y, w, d),
                (zt, x, y, w - rc, d - rc),
            ),
            shell,
        )
    )
    out.append(
        Tube(
            (
                (zb + e, x, y, w - 2, d - 2),
                (zc, x, y, waist * w - 2, 0.95 * d - 2),
                (zt - e, x, y, w - 2, d - 2),
            ),
            canc,
        )
    )
    for z0, z1 in ((zb, zb + e), (zt - e, zt)):
        out.append(Tube(((z0, x, y, w - rc, d - rc), (z1, x, y, w - rc, d - rc)), 0.88 * cortex))
    for sg in (-1.0, 1.0):
        out.append(Capsule((x + sg * (w - 1.2), y, zb + 2), (x + sg * (waist * w - 1.2), y, zc), 1.2, cortex))
        out.append(Capsule((x + sg * (waist * w - 1.2), y, zc), (x + sg * (w - 1.2), y, zt - 2), 1.2, cortex))
    post = cortex * float(rng.uniform(0.5, 0.7))
    yb = y + d  # posterior wall of the body
    lumbar, cerv = lv.kind == "L", lv.kind == "C"
    rp = (5.5 if lumbar else 3.0 if cerv else 4.2) * s
    zp = zc + 0.15 * h
    last = lumbar and lv.index == cfg.n_lumbar
    tp_len = (15.0 if last else _LUMBAR_TP.get(lv.index, 22.0)) * s * float(rng.uniform(0.8, 1.2))
    tp_rise = (float(rng.uniform(4, 10)) if last else float(rng.uniform(-1, 3))) * s  # last: up to the ala
    for sg in (-1.0, 1.0):
        xp = x + sg * 0.62 * w
        ped_end = (xp, yb + 10 * s, zp)
        # pedicle, seen end-on: an oval with a brighter rim ("owl's eye"), not a bright spot
        out.append(Capsule((xp, yb - 3, zp), ped_end, rp, 0.8 * cortex, 0.45))
        out.append(Capsule(ped_end, (x + sg * 3 * s, yb + 20 * s, zc - 0.05 * h), 3.5 * s, post))  # lamina
        xa = x + sg * 0.6 * w
        out.append(
            Capsule((xa, yb + 13 * s, zt + 2 * s), (xa, yb + 13 * s, zb - 1 * s), 3.8 * s, post)
        )  # facets
        if lumbar:
            r = (6.0 if last else 3.2) * s
            tip = (xp + sg * tp_len, yb + 9 * s, zp + tp_rise)
            out.append(Capsule((xp, yb + 7 * s, zp - 2), tip, r, post))
        elif lv.kind == "T":
            out.append(
                Capsule((xp, yb + 8 * s, zp), (xp + sg * 20 * s, yb + 22 * s, zp + 3 * s), 4.5 * s, post)
            )
        else:
            out.append(Capsule((xp, yb + 3 * s, zp), (xp + sg * 10 * s, yb + 2 * s, zp), 3.0 * s, post))
    base = (x, yb + 18 * s, zc - 0.1 * h)
    if lumbar:
        tip3, r = (x, yb + 45 * s, zc - 8 * s), 5.5 * s
    elif lv.kind == "T":
        tip3, r = (x, yb + 40 * s, zc - 28 * s), 3.8 * s
    else:
        tip3, r = (x, yb + (38 if lv.name == "C7" else 22) * s, zc - 8 * s), 3.2 * s
    out.append(Capsule(base, tip3, r, post))
    return out


def _osteophytes(
    spine: Spine, cfg: PhantomConfig, cortex: float, rng: np.random.Generator
) -> list[Primitive]:
    """Lateral spurs at the endplate corners of the lower thoracic and lumbar spine; severe ones bridge the
    disc (a bright bar over the dark gap that counting relies on)."""
    sev = cfg.osteophytes
    out: list[Primitive] = []
    if sev <= 0:
        return out
    levels = [lv for lv in spine.levels if lv.kind == "L" or (lv.kind == "T" and lv.index >= cfg.n_ribs - 3)]
    for a, b in zip(levels[:-1], levels[1:], strict=True):
        for sg in (-1.0, 1.0):
            if rng.random() > 0.35 + 0.6 * sev:
                continue
            length = float(rng.uniform(2, 10)) * sev * cfg.skeleton_scale
            gap = a.z_bottom - b.z_top
            reach = gap * (0.55 if sev > 0.7 and rng.random() < sev else float(rng.uniform(0.15, 0.45)))
            for lv, zc, dz in ((a, a.z_bottom, -reach), (b, b.z_top, reach)):
                x0 = lv.x + sg * (lv.half_width - 1)
                out.append(Capsule((x0, lv.y, zc), (x0 + sg * length, lv.y, zc + dz), 2.5, 0.9 * cortex))
    return out


def _head(spine: Spine, cfg: PhantomConfig, cortex: float) -> list[Primitive]:
    s, c3 = cfg.skeleton_scale, spine.by_name("C3")
    x, y, z = c3.x, c3.y - 10 * s, c3.z_top
    out: list[Primitive] = [
        Tube(((z + 2, x, y, 11 * s, 9 * s), (z + 30 * s, x, y, 9 * s, 8 * s)), 0.85 * cortex),
        Ellipsoid((x, y + 5, z + 36 * s), (38 * s, 22 * s, 6 * s), 0.7 * cortex),
    ]
    sk = (x, y - 15 * s, z + 115 * s)
    out.append(Ellipsoid(sk, (75 * s, 95 * s, 88 * s), 0.95 * cortex))
    out.append(Ellipsoid(sk, (69 * s, 89 * s, 82 * s), 35.0))
    out.extend(
        chain(
            [
                (x - 50 * s, y, z + 35 * s),
                (x - 45 * s, y - 60 * s, z + 5 * s),
                (x, y - 85 * s, z),
                (x + 45 * s, y - 60 * s, z + 5 * s),
                (x + 50 * s, y, z + 35 * s),
            ],
            6 * s,
            0.9 * cortex,
        )
    )
    return out


def _long_bone(
    p0: tuple[float, float, float], p1: tuple[float, float, float], r: float, cortex: float, canc: float
) -> list[Primitive]:
    return [Capsule(p0, p1, r, 1.1 * cortex, 0.4), Capsule(p0, p1, 0.55 * r, canc * 0.3)]


def _arms(body: BodyShape, cfg: PhantomConfig, cortex: float, canc: float) -> list[Primitive]:
    s = cfg.skeleton_scale
    out: list[Primitive] = []
    for sg in (-1.0, 1.0):
        for shoulder, elbow, wrist in body.arm_path(sg):
            out.append(Ellipsoid(shoulder, (23 * s, 23 * s, 25 * s), 0.75 * cortex))
            out += _long_bone(shoulder, elbow, 11 * s, 0.95 * cortex, canc)
            off = np.array([0.0, 10.0 * s, 0.0])
            out += _long_bone(
                tuple(np.add(elbow, off)), tuple(np.add(wrist, off)), 7 * s, 0.95 * cortex, canc
            )
            out += _long_bone(tuple(np.subtract(elbow, off)), wrist, 7.5 * s, 0.95 * cortex, canc)
    return out


def _sacrum(spine: Spine, cfg: PhantomConfig, cortex: float, canc: float) -> list[Primitive]:
    s1 = spine.by_name("S1")
    s, x, y, L, z0 = cfg.skeleton_scale, s1.x, s1.y, spine.sacrum_length, s1.z_top
    pw = s * cfg.pelvis_width

    def knots(shrink: float, lo: float, hi: float) -> tuple[tuple[float, float, float, float, float], ...]:
        prof = [(z0 - L, 45, 8, 7), (z0 - 0.55 * L, 25, 24, 13), (z0 - 30 * s, 5, 46, 16), (z0, 0, 48, 17)]
        ks = [
            (z, x, y + dy * s, max(1.0, rx * pw - shrink), max(1.0, ry * s - shrink))
            for z, dy, rx, ry in prof
        ]
        zs = [k[0] for k in ks]
        lo, hi = max(lo, zs[0]), min(hi, zs[-1])
        pick = [(lo, *[float(np.interp(lo, zs, [k[i] for k in ks])) for i in range(1, 5)])]
        pick += [k for k in ks if lo < k[0] < hi]
        pick += [(hi, *[float(np.interp(hi, zs, [k[i] for k in ks])) for i in range(1, 5)])]
        return tuple(pick)  # type: ignore[arg-type]

    out: list[Primitive] = []
    sac_hu = 0.6 * cortex
    if cfg.n_lumbar == 4:  # transitional S1: rudimentary disc below it, broad alae fused to the ilium
        gap = (s1.z_bottom - 1.5, s1.z_bottom + 1.5)
        parts = [(z0 - L, gap[0]), (gap[1], z0)]
        for sg in (-1.0, 1.0):
            out.append(
                Capsule(
                    (x + sg * 18 * s, y + 8 * s, s1.z_center),
                    (x + sg * 52 * pw, y + 12 * s, s1.z_center - 6 * s),
                    12 * s,
                    0.8 * cortex,
                )
            )
    else:
        parts = [(z0 - L, z0)]
    for lo, hi in parts:
        out.append(Tube(knots(0.0, lo, hi), sac_hu))
        out.append(Tube(knots(3.0, lo + 1.5, hi - 1.5), canc))
    # S1 endplate and the alae's upper margins: bright lines where the sacrum meets L5
    out.append(Tube(((z0 - 1.6, x, y, 22 * s, 15 * s), (z0, x, y, 22 * s, 15 * s)), cortex))
    for sg in (-1.0, 1.0):
        out.append(
            Capsule(
                (x + sg * 20 * s, y + 5 * s, z0 - 2),
                (x + sg * 46 * pw, y + 10 * s, z0 - 12 * s),
                3.0 * s,
                0.95 * cortex,
            )
        )
    return out


def _cement(spine: Spine, cfg: PhantomConfig) -> list[Primitive]:
    out: list[Primitive] = []
    for name in cfg.cement_levels:
        try:
            lv = spine.by_name(name)
        except KeyError:
            continue
        out.append(
            Ellipsoid(
                (lv.x, lv.y, lv.z_center),
                (0.7 * lv.half_width, 0.7 * lv.half_depth, 0.4 * lv.height),
                CEMENT_HU,
            )
        )
    return out


def _hardware(spine: Spine, cfg: PhantomConfig) -> list[Primitive]:
    """Pedicle screws and rods: from ``hardware_start`` (or lumbar level ``hardware_top``) down over
    ``hardware_levels`` levels, thoracic or lumbar; sometimes an interbody cage."""
    s = cfg.skeleton_scale
    chain_levels = [lv for lv in spine.levels if lv.kind in "TL"]
    names = [lv.name for lv in chain_levels]
    start = cfg.hardware_start if cfg.hardware_start in names else f"L{min(cfg.hardware_top, cfg.n_lumbar)}"
    i0 = names.index(start) if start in names else len(names) - 2
    levels = chain_levels[i0 : i0 + cfg.hardware_levels]
    out: list[Primitive] = []
    for sg in (-1.0, 1.0):
        heads = []
        for lv in levels:
            hd = (
                lv.x + sg * (0.62 * lv.half_width + 4 * s),
                lv.y + lv.half_depth + 28 * s,
                lv.z_center + 3 * s,
            )
            tip = (lv.x + sg * 0.2 * lv.half_width, lv.y - 0.4 * lv.half_depth, lv.z_center + 1 * s)
            out.append(Capsule(hd, tip, 3.2 * s, METAL_HU))
            heads.append(hd)
        if len(heads) >= 2:
            out.extend(chain(heads, 3.0 * s, METAL_HU))
    return out


def skeleton(
    spine: Spine,
    body: BodyShape,
    cfg: PhantomConfig,
    rng: np.random.Generator,
    ribs_out: list[Primitive] | None = None,
) -> list[Primitive]:
    """All bone and metal primitives, painted after the soft tissue (the ribs also into ``ribs_out``)."""
    dens = min(cfg.bone_density, 1.15)
    cortex = cfg.cortical_hu * (0.55 + 0.45 * dens)
    canc = cfg.cancellous_hu * dens
    levels = spine.levels
    out: list[Primitive] = []
    vr = np.random.default_rng([cfg.detail_seed, 43])  # per-vertebra shapes, off the anatomy stream
    for i, lv in enumerate(levels[:-1]):
        j = float(rng.uniform(0.92, 1.08))
        if lv.name == cfg.fracture_level:
            j *= 1.12  # a compressed body is denser (sclerosis)
        out += _vertebra(lv, levels[i + 1], cfg, cortex * j, canc * j, vr)
    out += _osteophytes(spine, cfg, cortex, vr)
    out += _sacrum(spine, cfg, cortex, canc)
    ribs = rib_cage(spine, body, cfg, cortex, rng)
    out += ribs
    if ribs_out is not None:
        ribs_out += ribs
    out += _arms(body, cfg, cortex, canc)
    out += pelvis(spine, cfg, cortex, canc, rng)
    out += _head(spine, cfg, cortex)
    out += _cement(spine, cfg)
    if cfg.spinal_hardware:
        out += _hardware(spine, cfg)
    return out
