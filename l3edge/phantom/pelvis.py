"""Pelvis and femurs: iliac wings as thin curved shells (a dim interior in a MIP: the two cortical tables are
thin and the ray crosses them obliquely) inside dense rims (crest, arcuate line, iliac pillar), sacroiliac
joints as paired subchondral lines, the lower ilium, pubic and ischial rami, acetabula with a dense roof,
femoral heads (cancellous, a cortical ring), necks, trochanters and shafts, and a hip prosthesis.

The top of the iliac crests is placed by ``crest_frac`` between the L3/L4 and L5/S1 discs counted up from the
sacrum (people range from about L3/L4 to L5/S1), never at a fixed distance from a named lumbar level, so the
crest alone cannot tell the level.
"""

from __future__ import annotations

import numpy as np

from l3edge.phantom.config import PhantomConfig
from l3edge.phantom.levels import Spine
from l3edge.phantom.primitives import Capsule, Ellipsoid, Primitive, chain, frame, rot_z

METAL_HU = 3000.0
ROOF = np.linspace(0.35, 2.8, 6)
"""Angles of the acetabular roof's arc (radians from lateral, in the coronal plane)."""
RING = np.linspace(0, 2 * np.pi, 13)


def crest_top_z(spine: Spine, cfg: PhantomConfig) -> float:
    """z of the top of the iliac crests: ``crest_frac`` of the way from the disc three levels above S1 down
    to the disc just above it."""
    names = [lv.name for lv in spine.levels]
    i_s1 = names.index("S1")
    above = [spine.levels[i_s1 - k] for k in (3, 2, 1)]
    s1 = spine.levels[i_s1]
    z_hi = 0.5 * (above[0].z_bottom + above[1].z_top)
    z_lo = 0.5 * (above[2].z_bottom + s1.z_top)
    return float(z_hi + cfg.crest_frac * (z_lo - z_hi))


def _long_bone(
    p0: tuple[float, float, float], p1: tuple[float, float, float], r: float, cortex: float, canc: float
) -> list[Primitive]:
    return [Capsule(p0, p1, r, 1.1 * cortex, 0.4), Capsule(p0, p1, 0.55 * r, canc * 0.3)]


def pelvis(
    spine: Spine, cfg: PhantomConfig, cortex: float, canc: float, rng: np.random.Generator
) -> list[Primitive]:
    s1 = spine.by_name("S1")
    s = cfg.skeleton_scale
    pw = s * cfg.pelvis_width * (0.9 + 0.1 * cfg.body_width_scale)
    x, ys, z1 = s1.x, s1.y, s1.z_top
    zf = spine.z_femoral_head
    yf = ys - 25 * s
    fhx = 92 * pw
    crest = crest_top_z(spine, cfg)
    out: list[Primitive] = []
    metal: list[Primitive] = []
    wing_hu = cortex * float(rng.uniform(0.3, 0.6))  # thin shell: much dimmer than its rims in a real MIP
    for sg in (-1.0, 1.0):
        side = "left" if sg > 0 else "right"
        joint = (x + sg * 45 * pw, ys + 15 * s, z1 - 35 * s)
        acet = (x + sg * (fhx - 5 * s), yf, zf + 18 * s)
        ang = -sg * np.radians(35)
        tilt = np.radians(float(rng.uniform(15, 25)))  # the crest rises laterally
        u = np.array(
            [sg * np.cos(np.radians(35)) * np.cos(tilt), -np.sin(np.radians(35)) * np.cos(tilt), np.sin(tilt)]
        )
        rot = frame(tuple(u), tuple(np.array([0.0, 0.0, 1.0]) - u[2] * u))
        vert = np.asarray([r[2] for r in rot])
        ra, rc = 68 * pw, float(rng.uniform(40, 50)) * s
        top = crest + (0.5 + 0.5 * sg) * cfg.crest_asym_mm  # left side (+x) higher by crest_asym_mm
        ctr_z = top - float(np.hypot(ra * u[2], rc * vert[2]))
        ctr = np.array([x + sg * 85 * pw, ys - 5 * s, ctr_z])
        zc_clip = min(z1 - 45 * s, ctr_z - 0.5 * rc)
        out.append(Ellipsoid(tuple(ctr), (ra, 6 * s, rc), wing_hu, rot=rot, z_clip=(zc_clip, 1e9)))
        # lower ilium: a broad body from below the wing down to the acetabulum roof
        z_low_top = min(z1 - 20 * s, ctr_z)
        low = (0.5 * (ctr[0] + acet[0]) - sg * 8 * s, ys - 10 * s, 0.5 * (z_low_top + acet[2]))
        out.append(
            Ellipsoid(
                low,
                (32 * pw, 18 * s, 0.5 * (z_low_top - acet[2]) + 12 * s),
                1.3 * wing_hu,
                rot=rot_z(ang),
            )
        )
        rim = [
            tuple(ctr + np.cos(th) * ra * u + np.sin(th) * rc * vert) for th in np.linspace(-0.3, np.pi, 12)
        ]
        out.extend(chain(rim, 3.5 * s, 1.25 * cortex, 0.15))  # the crest: dense cortex seen edge-on
        inner = [
            tuple(ctr + np.cos(th) * ra * u + np.sin(th) * rc * vert) for th in np.linspace(np.pi, 4.1, 5)
        ]
        out.extend(chain(inner, 3.0 * s, 1.0 * cortex, 0.3))  # medial wing margin (arcuate line)
        # sacroiliac joint: subchondral bone on the sacral and the iliac side, a dimmer joint line between
        for dx, hu in ((-4.0, 0.95), (4.0, 1.05)):
            a = (x + sg * (40 * pw + dx * s), ys + 10 * s, z1 - 5 * s)
            b = (joint[0] + sg * dx * s, joint[1], joint[2])
            out.append(Capsule(a, b, 2.4 * s, hu * cortex, 0.2))
        asis = tuple(ctr + ra * u)
        out.extend(
            chain([asis, (acet[0] + sg * 20 * s, yf - 20 * s, z1 - 35 * s), acet], 6 * s, 0.9 * cortex, 0.35)
        )
        sup = (x + sg * (fhx - 22 * s), yf - 15 * s, zf + 6 * s)
        out.extend(chain([joint, (x + sg * 60 * pw, yf + 5, zf + 38 * s), sup], 5 * s, 1.0 * cortex, 0.3))
        pub_top, pub_bot = (
            (x + sg * 9 * s, yf - 58 * s, zf - 15 * s),
            (x + sg * 9 * s, yf - 55 * s, zf - 48 * s),
        )
        tuber = (x + sg * 55 * pw, yf + 10 * s, zf - 62 * s)
        out.append(Capsule(sup, pub_top, 7 * s, 0.9 * cortex, 0.35))
        out.append(Capsule(pub_top, pub_bot, 8 * s, 0.9 * cortex, 0.35))
        out.append(Capsule(pub_bot, tuber, 6 * s, 0.9 * cortex, 0.35))
        out.append(
            Capsule(tuber, (x + sg * (fhx - 12 * s), yf + 15 * s, zf - 8 * s), 9 * s, 0.9 * cortex, 0.35)
        )
        head = (x + sg * fhx, yf, zf)
        out.append(
            Ellipsoid(head, (28 * s, 28 * s, 28 * s), 0.55 * cortex, z_clip=(zf + 2 * s, 1e9))
        )  # acetabulum, its roof (sourcil) a dense arc
        roof = [(head[0] + 27 * s * np.cos(t), yf, zf + 27 * s * np.sin(t)) for t in ROOF]
        out.extend(chain(roof, 2.5 * s, 1.05 * cortex))
        neck_end = (x + sg * (fhx + 38 * pw), yf + 5, zf - 30 * s)
        shaft_end = (x + sg * (fhx + 5 * pw), yf - 5, zf - float(rng.uniform(250, 430)) * s)
        out.append(Ellipsoid(head, (23 * s, 23 * s, 23 * s), 0.5 * cortex))  # cancellous head, cortical rim
        ring = [(head[0] + 22 * s * np.cos(t), yf, zf + 22 * s * np.sin(t)) for t in RING]
        out.extend(chain(ring, 1.8 * s, 0.85 * cortex))
        out.append(Capsule(head, neck_end, 14 * s, 0.85 * cortex, 0.55))
        out.append(
            Ellipsoid(
                (x + sg * (fhx + 50 * pw), yf + 10, zf - 15 * s), (16 * s, 18 * s, 22 * s), 0.55 * cortex
            )
        )
        out.append(
            Ellipsoid((x + sg * (fhx + 15 * s), yf + 15, zf - 60 * s), (9 * s, 9 * s, 12 * s), 0.6 * cortex)
        )
        out += _long_bone(neck_end, shaft_end, 13 * s, 0.85 * cortex, canc)
        if cfg.hip_prosthesis == side:
            metal.append(Ellipsoid(head, (28 * s, 28 * s, 28 * s), METAL_HU, z_clip=(zf - 2 * s, 1e9)))
            metal.append(Ellipsoid(head, (22 * s, 22 * s, 22 * s), METAL_HU + 1000))
            stem_top = (neck_end[0], neck_end[1], neck_end[2] - 5 * s)
            stem_end = (neck_end[0] - sg * 15 * s, neck_end[1], zf - 170 * s)
            metal += [Capsule(head, stem_top, 8 * s, METAL_HU), Capsule(stem_top, stem_end, 7 * s, METAL_HU)]
    return out + metal
