"""The patient's outline: trunk cross-section along z (by vertebral landmarks), the cavity inside the body
wall, legs, neck and the arms' path. The back rests on the table: trunk centre y = table top - AP radius."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from l3edge.phantom.config import PhantomConfig
from l3edge.phantom.levels import Spine

Knot = tuple[float, float, float, float, float]


@dataclass(frozen=True)
class BodyShape:
    """Trunk profile knots (z ascending): (z, cx, cy, rx, ry) of the skin, plus what the arms need."""

    knots: tuple[Knot, ...]
    cfg: PhantomConfig
    spine: Spine

    def trunk(self, z: float) -> tuple[float, float, float, float]:
        k = np.asarray(self.knots)
        return tuple(float(np.interp(z, k[:, 0], k[:, i])) for i in range(1, 5))  # type: ignore[return-value]

    def cavity(self, z: float) -> tuple[float, float, float, float]:
        """Inside of the muscular body wall (rib cage / abdominal cavity)."""
        cx, cy, rx, ry = self.trunk(z)
        wall = self.cfg.fat_mm + 14.0
        return cx, cy - 4.0, max(20.0, rx - wall), max(20.0, ry - wall - 4)

    def shoulder_x(self, sg: float) -> float:
        t1 = self.spine.by_name("T1")
        cx, _, rx, _ = self.trunk(t1.z_center - 30)
        return cx + sg * (rx + 8.0 * self.cfg.skeleton_scale)

    def arm_path(self, sg: float) -> list[tuple[tuple[float, float, float], ...]]:
        """(shoulder, elbow, wrist) centres of each arm (one per side)."""
        s, t1 = self.cfg.skeleton_scale, self.spine.by_name("T1")
        sh = (self.shoulder_x(sg), t1.y - 5.0, t1.z_top - 8.0 * s)
        if self.cfg.arms == "up":
            elbow = (sh[0] - sg * 10 * s, sh[1] - 30, sh[2] + 290 * s)
            wrist = (sh[0] - sg * 70 * s, sh[1] - 40, sh[2] + 520 * s)
        else:
            z_el = sh[2] - 300 * s
            _, cy, rx, ry = self.trunk(z_el)
            arm_x = self.cfg.lateral_offset_mm + sg * (rx + 40 * s)
            elbow = (arm_x, cy + 0.2 * ry, z_el)
            _, cy2, rx2, ry2 = self.trunk(z_el - 250 * s)
            wrist = (self.cfg.lateral_offset_mm + sg * (rx2 + 30 * s), cy2 - 0.1 * ry2, z_el - 250 * s)
        return [(sh, elbow, wrist)]


def body_shape(cfg: PhantomConfig, spine: Spine) -> BodyShape:
    """Trunk knots from the neck to below the pubis, scaled by the config's build."""
    lv = spine.by_name
    n = cfg.n_ribs
    ws, ds = cfg.body_width_scale, cfg.body_depth_scale
    fat = cfg.fat_mm
    zf = spine.z_femoral_head
    mid_t = lv(f"T{max(1, n // 2 + 1)}").z_center
    # (z, half width, half depth) of the lean trunk; fat is added around it.
    prof = [
        (zf - 60, 150, 95),
        (zf + 10, 160, 100),
        (lv("S1").z_top, 145, 100),
        (lv("L3").z_center, 135, 100),
        (lv(f"T{n}").z_center, 148, 105),
        (mid_t, 152, 108),
        (lv("T3").z_center, 135, 100),
        (lv("T1").z_top, 110, 85),
        (lv("C7").z_top, 60, 55),
        (lv("C3").z_top + 30, 55, 55),
    ]
    knots = []
    for z, rx, ry in sorted(prof):
        rx_, ry_ = rx * ws + fat, ry * ds + fat
        if z > lv("T1").z_top:  # the neck does not carry the full trunk fat
            rx_, ry_ = rx * (0.7 + 0.3 * ws) + 0.4 * fat, ry * (0.7 + 0.3 * ds) + 0.4 * fat
        knots.append((float(z), cfg.lateral_offset_mm, cfg.table_top_y_mm - ry_, rx_, ry_))
    return BodyShape(tuple(knots), cfg, spine)
