"""Assemble one phantom: levels, outline, primitives in paint order, slice positions and the truth."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from l3edge.phantom.body import body_shape
from l3edge.phantom.config import GENERATOR_VERSION, PhantomConfig
from l3edge.phantom.levels import Spine, build_spine, slice_positions
from l3edge.phantom.primitives import Capsule, Primitive, pose
from l3edge.phantom.skeleton import skeleton
from l3edge.phantom.soft import soft_tissue, table


@dataclass(frozen=True)
class Truth:
    """What is exactly known about a phantom scan (written as truth.json next to it)."""

    seed: int
    region: str
    l3_in_view: bool
    """The L3 body centre lies within the scanned z range (between the first and last slice centres)."""
    l3_z_mm: float | None
    """Patient z of the L3 body centre (None when not in view)."""
    vertebrae: dict[str, dict[str, Any]]
    """Every modelled level (C3..S1) -> z_top, z_bottom, z_center (mm) and in_view (centre within the
    scan)."""
    variants: list[str]
    """Non-default anatomy and confounders (see PhantomConfig.variants)."""
    scan_z_range: tuple[float, float]
    """(z_min, z_max) of the slice centres."""
    slice_spacing_mm: float
    slice_thickness_mm: float
    pixel_spacing_mm: float
    n_slices: int
    matrix: int
    l3_z_true_mm: float = 0.0
    """L3 body centre even when it lies outside the scan."""
    config: dict[str, Any] = field(default_factory=dict)
    """The full PhantomConfig as a dict (reproduces the scan)."""
    generator: str = ""
    """Version of the generator that made the scan (config.GENERATOR_VERSION; empty: before 0.4)."""

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["scan_z_range"] = list(self.scan_z_range)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Truth:
        d = dict(d)
        d["scan_z_range"] = tuple(d["scan_z_range"])
        return cls(**d)


@dataclass(frozen=True)
class Anatomy:
    """A built phantom: primitives in paint order and their z extents (for fast culling)."""

    config: PhantomConfig
    spine: Spine
    primitives: tuple[Primitive, ...]
    z_lo: np.ndarray
    z_hi: np.ndarray
    slice_z: np.ndarray
    """Slice centres, superior first."""
    rib_index: tuple[int, ...] = ()
    """Positions in ``primitives`` of the rib cage's primitives."""

    @property
    def fov_radius_mm(self) -> float:
        return 0.5 * self.config.matrix * self.config.pixel_spacing_mm

    def x_coords(self) -> np.ndarray:
        """Column centres x (patient right -> left); the FOV is centred on x = y = 0."""
        c = self.config
        return (np.arange(c.matrix) - (c.matrix - 1) / 2) * c.pixel_spacing_mm

    def truth(self) -> Truth:
        c = self.config
        z = self.slice_z
        lo, hi = float(z.min()), float(z.max())
        verts = {}
        for lv in self.spine.levels:
            verts[lv.name] = {
                "z_top": round(lv.z_top, 3),
                "z_bottom": round(lv.z_bottom, 3),
                "z_center": round(lv.z_center, 3),
                "in_view": bool(lo <= lv.z_center <= hi),
            }
        l3 = self.spine.by_name("L3").z_center
        inside = bool(lo <= l3 <= hi)
        import dataclasses

        cfg = dataclasses.asdict(c)
        return Truth(
            seed=c.seed,
            region=c.region,
            l3_in_view=inside,
            l3_z_mm=round(l3, 3) if inside else None,
            vertebrae=verts,
            variants=c.variants,
            scan_z_range=(lo, hi),
            slice_spacing_mm=c.slice_spacing_mm,
            slice_thickness_mm=c.slice_thickness_mm,
            pixel_spacing_mm=c.pixel_spacing_mm,
            n_slices=int(z.size),
            matrix=c.matrix,
            l3_z_true_mm=round(l3, 3),
            config=cfg,
            generator=GENERATOR_VERSION,
        )


def build_anatomy(config: PhantomConfig) -> Anatomy:
    """Build every primitive of the phantom described by ``config`` (deterministic)."""
    rng = np.random.default_rng([config.detail_seed, 7])
    spine = build_spine(config)
    body = body_shape(config, spine)
    ribs: list[Primitive] = []
    patient = soft_tissue(spine, body, config, rng) + skeleton(spine, body, config, rng, ribs)
    rib_ids = {id(p) for p in ribs}
    is_rib = [id(p) in rib_ids for p in patient]
    if config.rotation_deg or config.lean_deg:
        l3 = spine.by_name("L3")
        angle, shear = np.radians(config.rotation_deg), float(np.tan(np.radians(config.lean_deg)))
        patient = [pose(p, angle, (l3.x, l3.y), shear, l3.z_center) for p in patient]
    prims: list[Primitive] = table(config, rng) + patient
    zr = np.array([p.z_range for p in prims], dtype=np.float64)
    n0 = len(prims) - len(patient)
    rib_index = tuple(n0 + i for i, r in enumerate(is_rib) if r)
    top = None
    if config.region == "spine" and config.scan_z_range is None:
        top = _below_ribs([prims[i] for i in rib_index], 0.5 * config.matrix * config.pixel_spacing_mm)
    zs = slice_positions(config, spine, top)
    return Anatomy(config, spine, tuple(prims), zr[:, 0], zr[:, 1], zs, rib_index)


def _below_ribs(ribs: list[Primitive], fov_radius: float) -> float | None:
    """Highest z that a lumbar spine CT may start at without a rib in its (circular, centred) field of view:
    3 mm below the lowest point of any rib capsule that reaches into the FOV cylinder; None if none does."""
    lowest = None
    t = np.linspace(0.0, 1.0, 41)[:, None]
    for p in ribs:
        if not isinstance(p, Capsule):
            continue
        pts = np.asarray(p.p0) + t * (np.asarray(p.p1) - np.asarray(p.p0))
        near = np.hypot(pts[:, 0], pts[:, 1]) <= fov_radius + p.r
        if near.any():
            zl = float(pts[near, 2].min()) - p.r
            lowest = zl if lowest is None else min(lowest, zl)
    return None if lowest is None else lowest - 3.0
