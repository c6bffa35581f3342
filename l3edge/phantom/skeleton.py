"""Bones and metal as analytic primitives: vertebrae, ribs, shoulder girdle, arms, pelvis, femurs, skull,
spinal screws and rods, hip prosthesis. Shapes aim at a realistic frontal MIP silhouette, not at exact
anatomy."""

from __future__ import annotations

import numpy as np

from l3edge.phantom.body import BodyShape
from l3edge.phantom.config import PhantomConfig
from l3edge.phantom.levels import Level, Spine
from l3edge.phantom.primitives import Capsule, Ellipsoid, Primitive, Tube, chain, frame, rot_z

METAL_HU = 3000.0
_LUMBAR_TP = {1: 16.0, 2: 23.0, 3: 29.0, 4: 24.0, 5: 20.0}


def _vertebra(
    lv: Level, nxt: Level | None, cfg: PhantomConfig, cortex: float, canc: float, n_lumbar: int
) -> list[Primitive]:
    s = cfg.skeleton_scale
    x, y, w, d, h = lv.x, lv.y, lv.half_width, lv.half_depth, lv.height
    zt, zb, zc = lv.z_top, lv.z_bottom, lv.z_center
    out: list[Primitive] = []
    if nxt is not None:  # intervertebral disc below this body
        xm, ym = 0.5 * (x + nxt.x), 0.5 * (y + nxt.y)
        out.append(Tube(((nxt.z_top, xm, ym, w + 1.5, d + 1.5), (zb, xm, ym, w + 1.5, d + 1.5)), 80.0))
    # Shell (AP walls dimmer than the endplates and lateral margins, as in real MIPs), cancellous core.
    out.append(Tube(((zb, x, y, w, d), (zc, x, y, 0.93 * w, 0.95 * d), (zt, x, y, w, d)), 0.6 * cortex))
    e = min(1.6, 0.12 * h)
    out.append(
        Tube(
            (
                (zb + e, x, y, w - 2, d - 2),
                (zc, x, y, 0.93 * w - 2, 0.95 * d - 2),
                (zt - e, x, y, w - 2, d - 2),
            ),
            canc,
        )
    )
    for z0, z1 in ((zb, zb + e), (zt - e, zt)):
        out.append(Tube(((z0, x, y, w - 0.5, d - 0.5), (z1, x, y, w - 0.5, d - 0.5)), cortex))
    for sg in (-1.0, 1.0):
        out.append(Capsule((x + sg * (w - 1.2), y, zb + 2), (x + sg * (0.93 * w - 1.2), y, zc), 1.2, cortex))
        out.append(Capsule((x + sg * (0.93 * w - 1.2), y, zc), (x + sg * (w - 1.2), y, zt - 2), 1.2, cortex))
    post = 0.85 * cortex
    yb = y + d  # posterior wall of the body
    lumbar, cerv = lv.kind == "L", lv.kind == "C"
    rp = (5.5 if lumbar else 3.0 if cerv else 4.2) * s
    zp = zc + 0.15 * h
    for sg in (-1.0, 1.0):
        xp = x + sg * 0.62 * w
        ped_end = (xp, yb + 10 * s, zp)
        out.append(Capsule((xp, yb - 3, zp), ped_end, rp, 1.05 * cortex))  # pedicle, seen end-on: bright oval
        out.append(Capsule(ped_end, (x + sg * 3 * s, yb + 20 * s, zc - 0.05 * h), 3.5 * s, post))  # lamina
        xa = x + sg * 0.6 * w
        out.append(
            Capsule((xa, yb + 13 * s, zt + 2 * s), (xa, yb + 13 * s, zb - 1 * s), 3.8 * s, post)
        )  # facets
        if lumbar:
            last = lv.index == n_lumbar
            length = (15.0 if last else _LUMBAR_TP.get(lv.index, 22.0)) * s
            r = (7.0 if last else 4.5) * s
            out.append(Capsule((xp, yb + 7 * s, zp - 2), (xp + sg * length, yb + 9 * s, zp + 1 * s), r, post))
        elif lv.kind == "T":
            out.append(
                Capsule((xp, yb + 8 * s, zp), (xp + sg * 20 * s, yb + 22 * s, zp + 3 * s), 4.5 * s, post)
            )
        else:
            out.append(Capsule((xp, yb + 3 * s, zp), (xp + sg * 10 * s, yb + 2 * s, zp), 3.0 * s, post))
    base = (x, yb + 18 * s, zc - 0.1 * h)
    if lumbar:
        tip, r = (x, yb + 45 * s, zc - 8 * s), 5.5 * s
    elif lv.kind == "T":
        tip, r = (x, yb + 40 * s, zc - 28 * s), 3.8 * s
    else:
        tip, r = (x, yb + (38 if lv.name == "C7" else 22) * s, zc - 8 * s), 3.2 * s
    out.append(Capsule(base, tip, r, post))
    return out


def _sacrum(spine: Spine, cfg: PhantomConfig, cortex: float, canc: float) -> list[Primitive]:
    s1 = spine.by_name("S1")
    s, x, y, L, z0 = cfg.skeleton_scale, s1.x, s1.y, spine.sacrum_length, s1.z_top

    def knots(shrink: float, lo: float, hi: float) -> tuple[tuple[float, float, float, float, float], ...]:
        prof = [(z0 - L, 45, 8, 7), (z0 - 0.55 * L, 25, 24, 13), (z0 - 30 * s, 5, 46, 16), (z0, 0, 48, 17)]
        ks = [
            (z, x, y + dy * s, max(1.0, rx * s - shrink), max(1.0, ry * s - shrink)) for z, dy, rx, ry in prof
        ]
        zs = [k[0] for k in ks]
        lo, hi = max(lo, zs[0]), min(hi, zs[-1])
        pick = [(lo, *[float(np.interp(lo, zs, [k[i] for k in ks])) for i in range(1, 5)])]
        pick += [k for k in ks if lo < k[0] < hi]
        pick += [(hi, *[float(np.interp(hi, zs, [k[i] for k in ks])) for i in range(1, 5)])]
        return tuple(pick)  # type: ignore[arg-type]

    out: list[Primitive] = []
    if cfg.n_lumbar == 4:  # transitional S1: rudimentary disc below it, broad alae fused to the ilium
        gap = (s1.z_bottom - 1.5, s1.z_bottom + 1.5)
        parts = [(z0 - L, gap[0]), (gap[1], z0)]
        for sg in (-1.0, 1.0):
            out.append(
                Capsule(
                    (x + sg * 18 * s, y + 8 * s, s1.z_center),
                    (x + sg * 52 * s, y + 12 * s, s1.z_center - 6 * s),
                    12 * s,
                    0.8 * cortex,
                )
            )
    else:
        parts = [(z0 - L, z0)]
    for lo, hi in parts:
        out.append(Tube(knots(0.0, lo, hi), 0.52 * cortex))
        out.append(Tube(knots(3.0, lo + 1.5, hi - 1.5), canc))
    return out


def _ribs(
    spine: Spine, body: BodyShape, cfg: PhantomConfig, cortex: float, rng: np.random.Generator
) -> list[Primitive]:
    s, n = cfg.skeleton_scale, cfg.n_ribs
    out: list[Primitive] = []
    for i in range(1, n + 1):
        lv = spine.by_name(f"T{i}")
        from_bottom = n - i  # 0 = last rib
        drop = {0: 50.0, 1: 80.0, 2: 110.0}.get(
            from_bottom, 40.0 if i == 1 else 80.0 if i == 2 else 130.0
        ) * s
        drop *= float(rng.uniform(0.85, 1.15))
        ends: dict[int, float] = {
            0: np.radians(rng.uniform(20, 50)),
            1: np.radians(rng.uniform(-10, 15)),
            2: np.radians(-30),
            3: np.radians(-40),
        }
        phi_end = ends.get(from_bottom, float(np.radians(-55 if i > 2 else -70)))
        cx, cy, rx, ry = body.cavity(lv.z_center - 0.4 * drop)
        a = rx * (0.6 if i == 1 else 0.78 if i == 2 else 0.9 if i == 3 else 0.97 if i == 4 else 1.0)
        b = ry * (0.75 if i <= 2 else 1.0)
        r = (6.0 if i == 1 else 4.8 if i < 5 else 5.8) * s
        hu = cortex * float(rng.uniform(0.8, 0.95))
        wob = np.random.default_rng([cfg.detail_seed, 31, i])  # width irregularity, off the anatomy stream
        for sg in (-1.0, 1.0):
            head = (lv.x + sg * (lv.half_width + 4 * s), lv.y + 4 * s, lv.z_center)
            phi0 = np.arccos(np.clip(45 * s / a, 0, 1))  # the rib's angle, close to the back
            phis = np.linspace(phi0, phi_end, 16)
            t = (phis - phi0) / (phi_end - phi0)
            pts = [head]
            for ti, ph in zip(t, phis, strict=True):
                z = lv.z_center + 5 * s * np.sin(np.pi * min(1.0, 3 * ti)) - drop * ti**0.95
                pts.append((cx + sg * a * np.cos(ph), cy + b * np.sin(ph), z))
            for k, (pa, pb) in enumerate(zip(pts[:-1], pts[1:], strict=True)):
                f = k / (len(pts) - 2)  # anterior rib: thinner, less cortex
                rk = r * (1 - 0.35 * f) * float(wob.uniform(0.85, 1.15))
                out.append(Capsule(pa, pb, rk, 1.1 * hu * (1 - 0.55 * f), 0.45))
            if from_bottom >= 2 and i <= 10:  # costal cartilage to the sternum (faint)
                end = pts[-1]
                out.extend(chain([end, (cx + sg * 20 * s, cy - b, end[2] - 10 * s)], 4.5 * s, 130.0))
    # sternum, clavicles
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


def _long_bone(
    p0: tuple[float, float, float], p1: tuple[float, float, float], r: float, cortex: float, canc: float
) -> list[Primitive]:
    return [Capsule(p0, p1, r, 1.1 * cortex, 0.4), Capsule(p0, p1, 0.55 * r, canc * 0.3)]


def _arms(spine: Spine, body: BodyShape, cfg: PhantomConfig, cortex: float, canc: float) -> list[Primitive]:
    s, t1 = cfg.skeleton_scale, spine.by_name("T1")
    out: list[Primitive] = []
    for sg in (-1.0, 1.0):
        for shoulder, elbow, wrist in body.arm_path(sg):
            hum_head = shoulder
            out.append(Ellipsoid(hum_head, (23 * s, 23 * s, 25 * s), 0.75 * cortex))
            out += _long_bone(hum_head, elbow, 11 * s, 0.95 * cortex, canc)
            off = np.array([0.0, 10.0 * s, 0.0])
            out += _long_bone(
                tuple(np.add(elbow, off)), tuple(np.add(wrist, off)), 7 * s, 0.95 * cortex, canc
            )
            out += _long_bone(tuple(np.subtract(elbow, off)), wrist, 7.5 * s, 0.95 * cortex, canc)
    del t1
    return out


def _pelvis(
    spine: Spine, cfg: PhantomConfig, cortex: float, canc: float, rng: np.random.Generator
) -> list[Primitive]:
    s1 = spine.by_name("S1")
    s = cfg.skeleton_scale
    pw = s * (0.9 + 0.1 * cfg.body_width_scale)
    x, ys, z1 = s1.x, s1.y, s1.z_top
    zf = spine.z_femoral_head
    yf = ys - 25 * s
    fhx = 92 * pw
    rise = float(rng.uniform(38, 66)) * s
    out: list[Primitive] = []
    metal: list[Primitive] = []
    for sg in (-1.0, 1.0):
        side = "left" if sg > 0 else "right"
        joint = (x + sg * 45 * pw, ys + 15 * s, z1 - 35 * s)
        acet = (x + sg * (fhx - 5 * s), yf, zf + 18 * s)
        ang = -sg * np.radians(35)
        tilt = np.radians(float(rng.uniform(15, 25)))  # the crest rises laterally
        u = np.array(
            [sg * np.cos(np.radians(35)) * np.cos(tilt), -np.sin(np.radians(35)) * np.cos(tilt), np.sin(tilt)]
        )
        vert = np.array([0.0, 0.0, 1.0]) - u[2] * u
        ctr = np.array([x + sg * 85 * pw, ys - 5 * s, z1 + rise - 42 * s])
        ra, rc = 68 * pw, 45 * s
        rot = frame(tuple(u), tuple(vert))
        vert = np.asarray([r[2] for r in rot])
        out.append(Ellipsoid(tuple(ctr), (ra, 6 * s, rc), 0.42 * cortex, rot=rot, z_clip=(z1 - 45 * s, 1e9)))
        # lower ilium: a broad body from below the wing down to the acetabulum roof
        low = (0.5 * (ctr[0] + acet[0]) - sg * 8 * s, ys - 10 * s, 0.5 * (z1 - 20 * s + acet[2]))
        out.append(
            Ellipsoid(
                low, (32 * pw, 18 * s, 0.5 * (z1 - 20 * s - acet[2]) + 12 * s), 0.48 * cortex, rot=rot_z(ang)
            )
        )
        rim = [
            tuple(ctr + np.cos(th) * ra * u + np.sin(th) * rc * vert) for th in np.linspace(-0.3, np.pi, 12)
        ]
        out.extend(chain(rim, 4.5 * s, 1.2 * cortex, 0.25))
        inner = [
            tuple(ctr + np.cos(th) * ra * u + np.sin(th) * rc * vert) for th in np.linspace(np.pi, 4.1, 5)
        ]
        out.extend(chain(inner, 3.0 * s, 0.9 * cortex, 0.3))  # medial wing margin (arcuate line)
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
            Ellipsoid(head, (28 * s, 28 * s, 28 * s), 0.7 * cortex, z_clip=(zf + 2 * s, 1e9))
        )  # acetabulum
        neck_end = (x + sg * (fhx + 38 * pw), yf + 5, zf - 30 * s)
        shaft_end = (x + sg * (fhx + 5 * pw), yf - 5, zf - 430 * s)
        out.append(Ellipsoid(head, (23 * s, 23 * s, 23 * s), 0.75 * cortex))
        out.append(Capsule(head, neck_end, 15 * s, 1.0 * cortex, 0.45))
        out.append(
            Ellipsoid(
                (x + sg * (fhx + 50 * pw), yf + 10, zf - 15 * s), (16 * s, 18 * s, 22 * s), 0.7 * cortex
            )
        )
        out.append(
            Ellipsoid((x + sg * (fhx + 15 * s), yf + 15, zf - 60 * s), (9 * s, 9 * s, 12 * s), 0.7 * cortex)
        )
        out += _long_bone(neck_end, shaft_end, 13 * s, cortex, canc)
        if cfg.hip_prosthesis == side:
            metal.append(Ellipsoid(head, (28 * s, 28 * s, 28 * s), METAL_HU, z_clip=(zf - 2 * s, 1e9)))
            metal.append(Ellipsoid(head, (22 * s, 22 * s, 22 * s), METAL_HU + 1000))
            stem_top = (neck_end[0], neck_end[1], neck_end[2] - 5 * s)
            stem_end = (neck_end[0] - sg * 15 * s, neck_end[1], zf - 170 * s)
            metal += [Capsule(head, stem_top, 8 * s, METAL_HU), Capsule(stem_top, stem_end, 7 * s, METAL_HU)]
    return out + metal


def _head(spine: Spine, body: BodyShape, cfg: PhantomConfig, cortex: float) -> list[Primitive]:
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


def _hardware(spine: Spine, cfg: PhantomConfig) -> list[Primitive]:
    s = cfg.skeleton_scale
    out: list[Primitive] = []
    names = [
        f"L{k}" for k in range(cfg.hardware_top, cfg.hardware_top + cfg.hardware_levels) if k <= cfg.n_lumbar
    ]
    for sg in (-1.0, 1.0):
        heads = []
        for nm in names:
            lv = spine.by_name(nm)
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


def skeleton(spine: Spine, body: BodyShape, cfg: PhantomConfig, rng: np.random.Generator) -> list[Primitive]:
    """All bone and metal primitives, painted after the soft tissue."""
    dens = min(cfg.bone_density, 1.15)
    cortex = cfg.cortical_hu * (0.55 + 0.45 * dens)
    canc = cfg.cancellous_hu * dens
    levels = spine.levels
    out: list[Primitive] = []
    for i, lv in enumerate(levels[:-1]):
        j = float(rng.uniform(0.92, 1.08))
        out += _vertebra(lv, levels[i + 1], cfg, cortex * j, canc * j, cfg.n_lumbar)
    out += _sacrum(spine, cfg, cortex, canc)
    out += _ribs(spine, body, cfg, cortex, rng)
    out += _arms(spine, body, cfg, cortex, canc)
    out += _pelvis(spine, cfg, cortex, canc, rng)
    out += _head(spine, body, cfg, cortex)
    if cfg.spinal_hardware:
        out += _hardware(spine, cfg)
    return out
