"""Analytic solids with an HU value, painted in list order (later ones overwrite earlier ones).

Every primitive answers two questions exactly:
- ``slice_mask(X, Y, z)``: which in-plane points (x, y) of the axial plane at ``z`` lie inside it (full
  render);
- ``shadow_mask(X, Z)``: which points (x, z) of the frontal plane have some y with (x, y, z) inside it, i.e.
  its shadow along the anterior-posterior axis. Fast MIP: the max over y of the painted volume equals the
  max of the values of the primitives whose shadow covers (x, z), as long as no primitive is hidden along a
  whole ray by a later, darker one; the anatomy is built so that this holds.

Coordinates are DICOM patient coordinates in mm (LPS: +x patient left, +y posterior, +z head).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

Bounds = tuple[float, float, float, float]
"""(x_min, x_max, y_min, y_max) or (x_min, x_max, z_min, z_max)."""


@dataclass(frozen=True)
class Box:
    """Axis-aligned box [lo, hi] with a constant HU value."""

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    value: float

    @property
    def z_range(self) -> tuple[float, float]:
        return self.lo[2], self.hi[2]

    def xy_bounds(self, z: float) -> Bounds:
        return self.lo[0], self.hi[0], self.lo[1], self.hi[1]

    def xz_bounds(self) -> Bounds:
        return self.lo[0], self.hi[0], self.lo[2], self.hi[2]

    def slice_mask(self, X: np.ndarray, Y: np.ndarray, z: float) -> np.ndarray:
        return (self.lo[0] <= X) & (self.hi[0] >= X) & (self.lo[1] <= Y) & (self.hi[1] >= Y)

    def shadow_mask(self, X: np.ndarray, Z: np.ndarray) -> np.ndarray:
        return (self.lo[0] <= X) & (self.hi[0] >= X) & (self.lo[2] <= Z) & (self.hi[2] >= Z)


@dataclass(frozen=True)
class Capsule:
    """All points within ``r`` of the segment p0-p1 (bones, rods, rails, vessels), optionally clipped in z.

    ``rim`` > 0 mimics a cortical tube seen in a frontal MIP (bright edges, dimmer centre): the value at a
    point is ``value * (1 - rim * (1 - d2 / r**2))`` with ``d`` its distance to the segment in the frontal
    (x, z) projection, so the max along y is the same profile in both render paths."""

    p0: tuple[float, float, float]
    p1: tuple[float, float, float]
    r: float
    value: float
    rim: float = 0.0

    @property
    def z_range(self) -> tuple[float, float]:
        return min(self.p0[2], self.p1[2]) - self.r, max(self.p0[2], self.p1[2]) + self.r

    def _t_range(self, z: float) -> tuple[float, float]:
        z0, z1 = self.p0[2], self.p1[2]
        if abs(z1 - z0) < 1e-9:
            return 0.0, 1.0
        ta, tb = (z - self.r - z0) / (z1 - z0), (z + self.r - z0) / (z1 - z0)
        return max(0.0, min(ta, tb)), min(1.0, max(ta, tb))

    def xy_bounds(self, z: float) -> Bounds:
        ta, tb = self._t_range(z)
        p0, p1 = np.asarray(self.p0), np.asarray(self.p1)
        a, b = p0 + ta * (p1 - p0), p0 + tb * (p1 - p0)
        r = self.r
        return min(a[0], b[0]) - r, max(a[0], b[0]) + r, min(a[1], b[1]) - r, max(a[1], b[1]) + r

    def xz_bounds(self) -> Bounds:
        r = self.r
        return (min(self.p0[0], self.p1[0]) - r, max(self.p0[0], self.p1[0]) + r, *self.z_range)

    @staticmethod
    def _seg_dist2(u: tuple[Any, ...], a: np.ndarray, d: np.ndarray) -> np.ndarray:
        dd = float(d @ d)
        diff = [ui - ai for ui, ai in zip(u, a, strict=True)]
        if dd < 1e-12:
            return sum(c * c for c in diff)
        t = np.clip(sum(c * di for c, di in zip(diff, d, strict=True)) / dd, 0.0, 1.0)
        return sum((c - t * di) ** 2 for c, di in zip(diff, d, strict=True))

    def slice_mask(self, X: np.ndarray, Y: np.ndarray, z: float) -> np.ndarray:
        a = np.asarray(self.p0, dtype=np.float64)
        d = np.asarray(self.p1, dtype=np.float64) - a
        return self._seg_dist2((X, Y, np.float64(z)), a, d) <= self.r**2

    def rim_values(self, X: np.ndarray, z: float) -> np.ndarray:
        """Values (see ``rim``) at x positions ``X`` in the plane ``z``."""
        a = np.array([self.p0[0], self.p0[2]])
        d = np.array([self.p1[0], self.p1[2]]) - a
        d2 = np.minimum(self._seg_dist2((X, np.float64(z)), a, d) / self.r**2, 1.0)
        return (self.value * (1 - self.rim * (1 - d2))).astype(np.float32)

    def shadow_mask(self, X: np.ndarray, Z: np.ndarray) -> np.ndarray:
        # The shadow of a capsule along y is the 2-D capsule around the projected segment (same radius).
        a = np.array([self.p0[0], self.p0[2]])
        d = np.array([self.p1[0], self.p1[2]]) - a
        return self._seg_dist2((X, Z), a, d) <= self.r**2


@dataclass(frozen=True)
class Ellipsoid:
    """Ellipsoid with semi-axes ``radii`` along the columns of ``rot`` (a rotation), clipped to ``z_clip``."""

    center: tuple[float, float, float]
    radii: tuple[float, float, float]
    value: float
    rot: tuple[tuple[float, float, float], ...] = ((1, 0, 0), (0, 1, 0), (0, 0, 1))
    z_clip: tuple[float, float] = (-1e9, 1e9)
    shear_xz: float = 0.0
    """After the rotation, x moves by ``shear_xz * (z - center z)`` (a leaning body; still an ellipsoid)."""

    @cached_property
    def _mat(self) -> np.ndarray:
        r = np.asarray(self.rot, dtype=np.float64)
        m = r @ np.diag(1.0 / np.asarray(self.radii, dtype=np.float64) ** 2) @ r.T
        if self.shear_xz:
            inv = np.eye(3)
            inv[0, 2] = -self.shear_xz  # inverse of the shear p -> p + k z e_x
            m = inv.T @ m @ inv
        return m

    def _m(self) -> np.ndarray:
        return self._mat

    @cached_property
    def _halfv(self) -> np.ndarray:
        return np.sqrt(np.diag(np.linalg.inv(self._mat)))

    def _half(self) -> np.ndarray:
        return self._halfv

    @property
    def z_range(self) -> tuple[float, float]:
        h = self._half()[2]
        return max(self.center[2] - h, self.z_clip[0]), min(self.center[2] + h, self.z_clip[1])

    def xy_bounds(self, z: float) -> Bounds:
        h = self._half()
        c = self.center
        return c[0] - h[0], c[0] + h[0], c[1] - h[1], c[1] + h[1]

    def xz_bounds(self) -> Bounds:
        h = self._half()
        return (self.center[0] - h[0], self.center[0] + h[0], *self.z_range)

    def slice_mask(self, X: np.ndarray, Y: np.ndarray, z: float) -> np.ndarray:
        if not self.z_clip[0] <= z <= self.z_clip[1]:
            return np.zeros(np.broadcast(X, Y).shape, dtype=bool)
        m = self._m()
        dx, dy, dz = X - self.center[0], Y - self.center[1], z - self.center[2]
        q = m[0, 0] * dx * dx + m[1, 1] * dy * dy + m[2, 2] * dz * dz
        q = q + 2 * (m[0, 1] * dx * dy + m[0, 2] * dx * dz + m[1, 2] * dy * dz)
        return q <= 1.0

    def shadow_mask(self, X: np.ndarray, Z: np.ndarray) -> np.ndarray:
        # Shadow along y of {p: p^T M p <= 1}: the Schur complement of M_yy (minimise the form over y).
        m = self._m()
        s = (
            np.array([[m[0, 0], m[0, 2]], [m[2, 0], m[2, 2]]])
            - np.outer(m[[0, 2], 1], m[1, [0, 2]]) / m[1, 1]
        )
        dx, dz = X - self.center[0], Z - self.center[2]
        q = s[0, 0] * dx * dx + 2 * s[0, 1] * dx * dz + s[1, 1] * dz * dz
        return (q <= 1.0) & (self.z_clip[0] <= Z) & (self.z_clip[1] >= Z)


@dataclass(frozen=True)
class Tube:
    """Elliptic cylinder along z whose centre and radii vary piecewise-linearly between knots (body, organs,
    vertebral bodies, sacrum). Knots are (z, cx, cy, rx, ry), z ascending; outside [z_first, z_last] empty."""

    knots: tuple[tuple[float, float, float, float, float], ...]
    value: float
    angle: float = 0.0
    """Rotation of every cross-section ellipse about z (radians; a patient rotated on the table)."""

    @cached_property
    def _k(self) -> np.ndarray:
        return np.asarray(self.knots, dtype=np.float64)

    def _at(self, z: float | np.ndarray) -> tuple[np.ndarray, ...]:
        k = self._k
        return tuple(np.interp(z, k[:, 0], k[:, i]) for i in range(1, 5))

    def _half(self, rx: np.ndarray, ry: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Half extents along x and y of the rotated ellipse."""
        c, s = np.cos(self.angle), np.sin(self.angle)
        return np.sqrt((rx * c) ** 2 + (ry * s) ** 2), np.sqrt((rx * s) ** 2 + (ry * c) ** 2)

    @property
    def z_range(self) -> tuple[float, float]:
        return self.knots[0][0], self.knots[-1][0]

    def xy_bounds(self, z: float) -> Bounds:
        cx, cy, rx, ry = (float(v) for v in self._at(z))
        hx, hy = (float(v) for v in self._half(np.asarray(rx), np.asarray(ry)))
        return cx - hx, cx + hx, cy - hy, cy + hy

    def xz_bounds(self) -> Bounds:
        k = self._k
        hx, _ = self._half(k[:, 3], k[:, 4])
        return float((k[:, 1] - hx).min()), float((k[:, 1] + hx).max()), *self.z_range

    def slice_mask(self, X: np.ndarray, Y: np.ndarray, z: float) -> np.ndarray:
        z0, z1 = self.z_range
        if not z0 <= z <= z1:
            return np.zeros(np.broadcast(X, Y).shape, dtype=bool)
        cx, cy, rx, ry = (float(v) for v in self._at(z))
        if rx <= 0 or ry <= 0:
            return np.zeros(np.broadcast(X, Y).shape, dtype=bool)
        dx, dy = X - cx, Y - cy
        if self.angle:
            c, s = np.cos(self.angle), np.sin(self.angle)
            dx, dy = dx * c + dy * s, -dx * s + dy * c
        return (dx / rx) ** 2 + (dy / ry) ** 2 <= 1.0

    def shadow_mask(self, X: np.ndarray, Z: np.ndarray) -> np.ndarray:
        z0, z1 = self.z_range
        cx, _cy, rx, ry = self._at(Z)
        hx, _ = self._half(rx, ry)
        return (np.abs(X - cx) <= hx) & (rx > 0) & (z0 <= Z) & (z1 >= Z)


Primitive = Box | Capsule | Ellipsoid | Tube


def chain(
    points: list[tuple[float, float, float]], r: float, value: float, rim: float = 0.0
) -> list[Capsule]:
    """Capsules along a polyline (ribs, crests, rami)."""
    return [Capsule(_p3(a), _p3(b), r, value, rim) for a, b in zip(points[:-1], points[1:], strict=True)]


def _p3(p: Any) -> tuple[float, float, float]:
    return float(p[0]), float(p[1]), float(p[2])


def rot_z(angle_rad: float) -> tuple[tuple[float, float, float], ...]:
    """Rotation about the z axis, as a tuple matrix for Ellipsoid.rot."""
    c, s = float(np.cos(angle_rad)), float(np.sin(angle_rad))
    return ((c, -s, 0.0), (s, c, 0.0), (0.0, 0.0, 1.0))


def rot_zx(az: float, ax: float) -> tuple[tuple[float, float, float], ...]:
    """Rotation about x by ``ax`` then about z by ``az`` (radians)."""
    cz, sz, cx, sx = np.cos(az), np.sin(az), np.cos(ax), np.sin(ax)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    m = rz @ rx
    return (_p3(m[0]), _p3(m[1]), _p3(m[2]))


def frame(
    u: tuple[float, float, float], v: tuple[float, float, float]
) -> tuple[tuple[float, float, float], ...]:
    """Rotation whose columns are ``u`` (normalised), the normal ``n`` (u x v, normalised) and ``n x u``: an
    ellipsoid with radii (a, thickness, c) then lies in the plane spanned by u and v."""
    a = np.asarray(u, dtype=np.float64)
    a /= np.linalg.norm(a)
    n = np.cross(a, np.asarray(v, dtype=np.float64))
    n /= np.linalg.norm(n)
    w = np.cross(n, a)
    m = np.stack([a, n, w], axis=1)
    return (_p3(m[0]), _p3(m[1]), _p3(m[2]))


def pose(prim: Primitive, angle: float, pivot: tuple[float, float], shear: float, z0: float) -> Primitive:
    """``prim`` turned by ``angle`` (radians) about the z axis through ``pivot`` (x, y), then sheared as
    x += ``shear`` * (z - ``z0``): the patient rotated on the table and leaning. z never changes, so the
    levels' z in the truth stay exact. Boxes (the table) stay where they are."""
    c, s = float(np.cos(angle)), float(np.sin(angle))
    px, py = pivot

    def move(p: tuple[float, float, float]) -> tuple[float, float, float]:
        dx, dy = p[0] - px, p[1] - py
        x, y = px + c * dx - s * dy, py + s * dx + c * dy
        return x + shear * (p[2] - z0), y, p[2]

    if isinstance(prim, Capsule):
        return Capsule(move(prim.p0), move(prim.p1), prim.r, prim.value, prim.rim)
    if isinstance(prim, Ellipsoid):
        rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.asarray(prim.rot, dtype=np.float64)
        return Ellipsoid(
            move(prim.center),
            prim.radii,
            prim.value,
            (_p3(rz[0]), _p3(rz[1]), _p3(rz[2])),
            prim.z_clip,
            prim.shear_xz + shear,
        )
    if isinstance(prim, Tube):
        knots = tuple((k[0], *move((k[1], k[2], k[0]))[:2], k[3], k[4]) for k in prim.knots)
        return Tube(knots, prim.value, prim.angle + angle)  # type: ignore[arg-type]
    return prim
