"""The great abdominal vessels with their phase-dependent enhancement: aorta and iliac arteries, inferior vena
cava, renal arteries and veins, the superior mesenteric artery and vein, the splenic and portal veins.

In a frontal MIP the aorta lies over the left half of the vertebral bodies (``aorta_offset_mm``), the cava
over their right edge, and the renal and mesenteric vessels cross the spine at L1-L2 (the left renal vein in
front of the aorta): with contrast they fill the dark disc gaps that counting relies on, as in real venous
phases.
"""

from __future__ import annotations

import numpy as np

from l3edge.phantom.config import PhantomConfig
from l3edge.phantom.levels import Spine
from l3edge.phantom.primitives import Capsule, Primitive, chain

Point = tuple[float, float, float]

UNENHANCED_HU = 40.0
# (artery, vein, kidney cortex) HU ranges by phase, before ``contrast_scale``
_PHASE_HU = {
    "arterial": ((200.0, 380.0), (60.0, 110.0), (170.0, 250.0)),
    "portal": ((140.0, 230.0), (130.0, 200.0), (150.0, 220.0)),
    "delayed": ((100.0, 150.0), (100.0, 145.0), (120.0, 170.0)),
}


def phase_hu(cfg: PhantomConfig, rng: np.random.Generator) -> tuple[float, float, float]:
    """(artery, vein, kidney) HU for the config's contrast (unenhanced blood ~40 HU, kidneys ~30 HU)."""
    if not cfg.iv_contrast:
        return UNENHANCED_HU, UNENHANCED_HU, 30.0
    ranges = _PHASE_HU.get(cfg.contrast_phase, _PHASE_HU["portal"])
    k = cfg.contrast_scale
    return tuple(UNENHANCED_HU + (float(rng.uniform(*r)) - UNENHANCED_HU) * k for r in ranges)  # type: ignore[return-value]


def great_vessels(
    spine: Spine,
    cfg: PhantomConfig,
    hu: tuple[float, float, float],
    kidneys: list[Point],
    liver_hilum: Point,
    spleen: Point,
) -> tuple[list[Primitive], list[Point]]:
    """The vessels' primitives and the aorta's centre line (for calcified plaques)."""
    lv, s = spine.by_name, cfg.skeleton_scale
    art, vein, _ = hu
    zf = spine.z_femoral_head
    tl_lv = [v for v in spine.levels if v.kind in "TL" and v.z_center <= lv("T4").z_center]
    l4 = lv(f"L{min(4, cfg.n_lumbar)}")
    tl = lv(f"T{cfg.n_ribs}")
    off = cfg.aorta_offset_mm * s
    ao = [(v.x + off, v.y - v.half_depth - 13 * s, v.z_center) for v in tl_lv if v.z_center >= l4.z_center]
    out: list[Primitive] = [*chain(ao, 11 * s, art)]
    ivc = [
        (v.x - (16 + 0.5 * cfg.aorta_offset_mm) * s, v.y - v.half_depth - 10 * s, v.z_center)
        for v in tl_lv
        if l4.z_center - 20 <= v.z_center <= tl.z_center
    ]
    out += chain(ivc, 11 * s, vein)
    if not ao:
        return out, ao
    for sg in (-1.0, 1.0):
        out.append(Capsule(ao[-1], (ao[-1][0] + sg * 85 * s, ao[-1][1] - 10, zf + 10), 5 * s, art))
    l1, l2 = lv("L1"), lv("L2")
    y_ao = ao[0][1]
    z_ao = np.array([p[2] for p in ao])

    def on_aorta(z: float) -> Point:
        i = int(np.argmin(np.abs(z_ao - z)))
        return ao[i][0], ao[i][1], z

    def on_cava(z: float) -> Point:
        if not ivc:
            return l1.x - 20 * s, y_ao, z
        i = int(np.argmin(np.abs(np.array([p[2] for p in ivc]) - z)))
        return ivc[i][0], ivc[i][1], z

    for kc in kidneys:
        sg = 1.0 if kc[0] > l1.x else -1.0
        hil = (kc[0] - sg * 14 * s, kc[1] - 4 * s, kc[2] + 5 * s)
        za = hil[2] + 8 * s
        out.append(Capsule(on_aorta(za), hil, 3.2 * s, art))  # renal artery
        vz = hil[2] + 3 * s
        if sg > 0:  # left renal vein: in front of the aorta to the cava, across the spine
            mid = (on_aorta(vz)[0], y_ao - 14 * s, vz)
            out += chain([hil, mid, on_cava(vz)], 4.5 * s, vein)
        else:
            out.append(Capsule(hil, on_cava(vz), 5.0 * s, vein))
    # superior mesenteric artery and vein down the front of the spine; splenic and portal veins above
    sma0 = on_aorta(l1.z_top)
    sma = [sma0, (sma0[0] - 3 * s, y_ao - 25 * s, l2.z_center), (sma0[0] - 8 * s, y_ao - 35 * s, l4.z_center)]
    out += chain(sma, 3.5 * s, art)
    smv = [(p[0] - 12 * s, p[1] - 2 * s, p[2]) for p in sma]
    out += chain(smv, 5.0 * s, vein)
    conf = (smv[0][0], smv[0][1], l1.z_top + 5 * s)
    out += chain([smv[0], conf, liver_hilum], 6.0 * s, vein)  # portal vein up to the liver
    out += chain([conf, (l1.x + 20 * s, y_ao - 5 * s, l1.z_top + 12 * s), spleen], 4.5 * s, vein)
    return out, ao
