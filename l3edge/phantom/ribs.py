"""The rib cage and shoulder girdle: ribs as thin, dense, curved tubes that descend from their vertebra
around the chest wall, the lowest two pairs floating and of varied length (the last pair is a stub or absent
in some people), costal cartilages, sternum, clavicles and scapulae.

A rib is followed along the inside of the body wall (``BodyShape.cavity``) from its head beside the vertebral
body, past the costal angle, round the side and (upper ribs) to the front; its z falls steadily with the arc,
so that in a frontal MIP the posterior part runs down and out from the spine and the lateral part looks steep.
"""

from __future__ import annotations

import numpy as np

from l3edge.phantom.body import BodyShape
from l3edge.phantom.config import PhantomConfig
from l3edge.phantom.levels import Spine
from l3edge.phantom.primitives import Capsule, Ellipsoid, Primitive, Tube, chain, rot_z

# Typical end of each rib on the cavity ellipse (degrees: 90 posterior midline, 0 lateral, < 0 anterior) and
# its total fall (mm), by position counted from the lowest rib (0 = the last rib).
_END_DEG = {0: 40.0, 1: 8.0, 2: -12.0, 3: -28.0, 4: -42.0}
_DROP_MM = {0: 80.0, 1: 125.0, 2: 165.0, 3: 180.0, 4: 185.0}


def _rib_end_and_drop(i: int, from_bottom: int) -> tuple[float, float]:
    if from_bottom in _END_DEG:
        return _END_DEG[from_bottom], _DROP_MM[from_bottom]
    if i == 1:
        return -70.0, 50.0
    if i == 2:
        return -68.0, 100.0
    return -62.0 - 1.5 * min(i, 8), 140.0 + 5.0 * min(i, 8)


def _ribs(
    spine: Spine, body: BodyShape, cfg: PhantomConfig, cortex: float, rng: np.random.Generator
) -> list[Primitive]:
    s, n = cfg.skeleton_scale, cfg.n_ribs
    out: list[Primitive] = []
    wob = np.random.default_rng([cfg.detail_seed, 31])  # width and spacing irregularity
    for i in range(1, n + 1):
        lv = spine.by_name(f"T{i}")
        from_bottom = n - i
        end_deg, drop = _rib_end_and_drop(i, from_bottom)
        length = {0: cfg.rib_last_frac, 1: cfg.rib_second_last_frac}.get(from_bottom, 1.0)
        if length < 0.08:
            continue  # absent last rib pair
        drop *= s * cfg.rib_slope * float(rng.uniform(0.88, 1.12))
        z_head = lv.z_top - 0.35 * lv.height + float(wob.uniform(-2.5, 2.5))
        cx, cy, rx, ry = body.cavity(z_head - 0.4 * drop)
        a = rx * (0.6 if i == 1 else 0.8 if i == 2 else 0.9 if i == 3 else 0.97 if i == 4 else 1.0)
        b = ry * (0.75 if i <= 2 else 1.0)
        r = (4.5 if i == 1 else 4.0) * s * cfg.rib_radius_scale
        hu = cortex * float(rng.uniform(0.95, 1.15))
        for sg in (-1.0, 1.0):
            head = (lv.x + sg * (lv.half_width + 3 * s), lv.y + 4 * s, z_head)
            phi0 = float(np.arccos(np.clip(32 * s / a, 0, 1)))  # the tubercle, close to the back
            phi_end = phi0 + (np.radians(end_deg) - phi0) * length * float(wob.uniform(0.93, 1.07))
            n_seg = max(4, int(round(16 * min(1.0, abs(phi_end - phi0) / 2.2))))
            phis = np.linspace(phi0, phi_end, n_seg)
            t = (phis - phi0) / (phis[-1] - phi0) if phis[-1] != phi0 else np.zeros_like(phis)
            fall = drop * length  # a shorter rib falls by the same slope over less arc
            pts = [head]
            for ti, ph in zip(t, phis, strict=True):
                z = z_head - 4 * s - fall * np.sqrt(0.03 + 0.97 * ti)  # steep behind, flatter at the side
                pts.append((cx + sg * a * np.cos(ph), cy + b * np.sin(ph), z))
            for k, (pa, pb) in enumerate(zip(pts[:-1], pts[1:], strict=True)):
                f = k / max(1, len(pts) - 2)  # anterior rib: thinner, less cortex
                rk = r * (1 - 0.35 * f) * float(wob.uniform(0.85, 1.15))
                out.append(Capsule(pa, pb, rk, hu * (1 - 0.6 * f), 0.3))
            if from_bottom >= 2 and i <= 10 and length >= 1.0:  # costal cartilage to the sternum (faint)
                end = pts[-1]
                cart = 130.0 + 250.0 * cfg.aorta_calcification * float(rng.random())  # calcifies with age
                out.extend(chain([end, (cx + sg * 20 * s, cy - b, end[2] - 10 * s)], 4.5 * s, cart))
    return out


def _girdle(spine: Spine, body: BodyShape, cfg: PhantomConfig, cortex: float) -> list[Primitive]:
    """Sternum, clavicles, scapulae."""
    s, n = cfg.skeleton_scale, cfg.n_ribs
    out: list[Primitive] = []
    t1, tmid = spine.by_name("T1"), spine.by_name(f"T{max(1, n - 3)}")
    cxs, cys, _, rys = body.cavity(t1.z_top - 20 * s)
    out.append(
        Tube(
            (
                (tmid.z_center, cxs, cys - rys + 4, 12 * s, 6 * s),
                (t1.z_top - 25 * s, cxs, cys - rys + 4, 22 * s, 7 * s),
            ),
            0.55 * cortex,
        )
    )
    for sg in (-1.0, 1.0):
        sh = body.shoulder_x(sg)
        pts = [
            (cxs + sg * 18 * s, cys - rys, t1.z_top - 15 * s),
            (cxs + sg * 75 * s, cys - rys + 15, t1.z_top),
            (sh - sg * 15 * s, t1.y + 5, t1.z_top + 12 * s),
        ]
        out.extend(chain(pts, 7 * s, 0.95 * cortex, 0.4))
        # scapula: plate behind the ribs plus its thick lateral border and spine
        t5 = spine.by_name(f"T{min(5, n)}")
        cxb, cyb, rxb, ryb = body.cavity(t5.z_center)
        ang = -sg * np.radians(25)
        ctr = (cxb + sg * 0.6 * rxb, cyb + 0.85 * ryb, t5.z_center + 10 * s)
        out.append(Ellipsoid(ctr, (48 * s, 5 * s, 78 * s), 0.4 * cortex, rot=rot_z(ang)))
        glen = (sh - sg * 10 * s, t1.y + 15, t1.z_top - 5 * s)
        out.extend(
            chain([glen, (ctr[0] + sg * 15 * s, ctr[1] + 5, ctr[2] - 70 * s)], 6 * s, 0.9 * cortex, 0.35)
        )
        out.append(
            Capsule((ctr[0] - sg * 35 * s, ctr[1] + 5, ctr[2] + 55 * s), glen, 5.5 * s, 0.9 * cortex, 0.35)
        )
    return out


def rib_cage(
    spine: Spine, body: BodyShape, cfg: PhantomConfig, cortex: float, rng: np.random.Generator
) -> list[Primitive]:
    """Ribs, cartilages, sternum, clavicles and scapulae."""
    return _ribs(spine, body, cfg, cortex, rng) + _girdle(spine, body, cfg, cortex)
