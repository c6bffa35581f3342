"""Rasterise the phantom: axial HU slices (full path) or the frontal MIP directly (fast path).

Full path: each slice paints every primitive that crosses its z onto the 512x512 (x, y) grid, in order,
averaging ``ceil(thickness / 1.25 mm)`` planes across the slice thickness, then adds spatially correlated
noise and blanks everything outside the circular reconstruction field of view (-1024 HU).
Fast path: paints each primitive's shadow along y onto the (z, x) plane with ``max`` (the MIP of the painted
volume, see primitives.py), blurs rows over the slice thickness and adds the expected maximum of the noise
along a ray. No volume is ever built.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy.ndimage import gaussian_filter, uniform_filter1d

from l3edge.phantom.anatomy import Anatomy, Truth, build_anatomy
from l3edge.phantom.artifacts import apply_artifacts, artifact_fields
from l3edge.phantom.config import PhantomConfig
from l3edge.phantom.primitives import Box, Capsule, Primitive, Tube
from l3edge.phantom.sampling import sample_config
from l3edge.phantom.texture import apply_texture, texture_field
from l3edge.series import Projection

AIR, OUTSIDE_FOV = -1000.0, -1024.0
SMALL_FOV_MM = 150.0
"""The fast path culls primitives outside the circular FOV only below this radius (a spine CT); a larger
FOV holds the trunk, and its column mask is enough."""
NOISE_CORR_PX = 0.8
"""Gaussian correlation length of the noise (pixels)."""
NOISE_MAX_FACTOR = 1.1
"""Mean excess of the MIP over the noise-free MIP, in noise SDs (measured on full renders: ~0.5-1.5 over soft
tissue and table, ~0.9 over bone)."""


def _index_range(lo: float, hi: float, first: float, step: float, n: int) -> tuple[int, int]:
    a = int(np.ceil((lo - first) / step - 1e-9))
    b = int(np.floor((hi - first) / step + 1e-9)) + 1
    return max(0, a), min(n, b)


def paint_plane(anat: Anatomy, z: float) -> np.ndarray:
    """Noise-free HU of the axial plane at ``z``: float32 [rows = y, cols = x] (row 0 anterior, col 0
    right)."""
    c = anat.config
    coords = anat.x_coords()  # the same for x and y: FOV centred on (0, 0)
    step, n = c.pixel_spacing_mm, c.matrix
    out = np.full((n, n), AIR, dtype=np.float32)
    active = np.nonzero((anat.z_lo <= z) & (anat.z_hi >= z))[0]
    for i in active:
        p = anat.primitives[i]
        x0, x1, y0, y1 = p.xy_bounds(z)
        ca, cb = _index_range(x0, x1, coords[0], step, n)
        ra, rb = _index_range(y0, y1, coords[0], step, n)
        if ca >= cb or ra >= rb:
            continue
        m = np.broadcast_to(p.slice_mask(coords[None, ca:cb], coords[ra:rb, None], z), (rb - ra, cb - ca))
        if m.any():
            if isinstance(p, Capsule) and p.rim > 0:
                vals = np.broadcast_to(p.rim_values(coords[None, ca:cb], z), m.shape)
                out[ra:rb, ca:cb][m] = vals[m]
            else:
                out[ra:rb, ca:cb][m] = p.value
    zs = np.array([z])
    out = apply_texture(out, texture_field(anat, coords, zs))
    return apply_artifacts(out, artifact_fields(anat, coords, zs))


def _fov_mask(anat: Anatomy) -> np.ndarray:
    x = anat.x_coords()
    return (x[None, :] ** 2 + x[:, None] ** 2) > anat.fov_radius_mm**2


def render_slice(anat: Anatomy, z: float, index: int = 0) -> np.ndarray:
    """One axial slice in HU (float32 [matrix, matrix]) with thickness averaging, noise and the FOV circle."""
    c = anat.config
    n_sub = max(1, int(np.ceil(c.slice_thickness_mm / 1.25 - 1e-6)))
    offs = (np.arange(n_sub) - (n_sub - 1) / 2) * (c.slice_thickness_mm / n_sub)
    img = np.mean([paint_plane(anat, z + o) for o in offs], axis=0).astype(np.float32)
    if c.noise_sd_hu > 0:
        rng = np.random.default_rng([c.detail_seed, 11, index])
        noise = gaussian_filter(rng.standard_normal(img.shape).astype(np.float32), NOISE_CORR_PX)
        img += noise * np.float32(c.noise_sd_hu * 2 * np.sqrt(np.pi) * NOISE_CORR_PX)
    img[_fov_mask(anat)] = OUTSIDE_FOV
    return img


def _shadow_capsules(caps: list[Capsule], x: np.ndarray, zz: np.ndarray, p: float, mip: np.ndarray) -> None:
    """Max-paint the shadows of many capsules at once: one padded patch per capsule, grouped by patch size."""
    if not caps:
        return
    a = np.array([(c.p0[0], c.p0[2]) for c in caps])
    b = np.array([(c.p1[0], c.p1[2]) for c in caps])
    r = np.array([c.r for c in caps])
    val = np.array([c.value for c in caps], dtype=np.float32)
    rim = np.array([c.rim for c in caps], dtype=np.float32)
    lo, hi = np.minimum(a, b) - r[:, None], np.maximum(a, b) + r[:, None]
    ca = np.ceil((lo[:, 0] - x[0]) / p - 1e-9).astype(int)
    cb = np.floor((hi[:, 0] - x[0]) / p + 1e-9).astype(int) + 1
    ra = np.ceil((zz[0] - hi[:, 1]) / p - 1e-9).astype(int)
    rb = np.floor((zz[0] - lo[:, 1]) / p + 1e-9).astype(int) + 1
    ca, ra = np.maximum(ca, 0), np.maximum(ra, 0)
    cb, rb = np.minimum(cb, x.size), np.minimum(rb, zz.size)
    ok = (cb > ca) & (rb > ra)
    hb = 2 ** np.ceil(np.log2(np.maximum(rb - ra, 1))).astype(int)
    wb = 2 ** np.ceil(np.log2(np.maximum(cb - ca, 1))).astype(int)
    flat = mip.reshape(-1)
    for h, w in set(zip(hb[ok].tolist(), wb[ok].tolist(), strict=True)):
        k = np.nonzero(ok & (hb == h) & (wb == w))[0]
        rows = ra[k, None] + np.arange(h)  # [K, h]
        cols = ca[k, None] + np.arange(w)  # [K, w]
        valid = (rows < rb[k, None])[:, :, None] & (cols < cb[k, None])[:, None, :]
        X = x[np.minimum(cols, x.size - 1)][:, None, :]
        Z = zz[np.minimum(rows, zz.size - 1)][:, :, None]
        d = (b - a)[k]
        dd = np.maximum((d * d).sum(1), 1e-12)[:, None, None]
        ux, uz = X - a[k, 0, None, None], Z - a[k, 1, None, None]
        t = np.clip((ux * d[:, 0, None, None] + uz * d[:, 1, None, None]) / dd, 0.0, 1.0)
        dist2 = (ux - t * d[:, 0, None, None]) ** 2 + (uz - t * d[:, 1, None, None]) ** 2
        m = valid & (dist2 <= (r[k] ** 2)[:, None, None])
        idx = (rows[:, :, None] * x.size + cols[:, None, :])[m]
        # rim: value rises from (1 - rim) * value on the axis to value at the shadow's edge (Capsule.rim)
        q = 1 - rim[k, None, None] * (1 - dist2 / (r[k] ** 2)[:, None, None])
        np.maximum.at(flat, idx, (val[k, None, None] * q)[m].astype(np.float32))


def render_slices(config: PhantomConfig, order: str = "head") -> Iterator[tuple[float, np.ndarray]]:
    """Yield (z_mm, HU slice float32 [matrix, matrix]) for every slice, superior first (``order='feet'``:
    inferior first). Rows run anterior -> posterior (+y), columns patient right -> left (+x). One slice in
    memory at a time."""
    anat = build_anatomy(config)
    idx = range(anat.slice_z.size)
    for i in idx if order == "head" else reversed(idx):
        yield float(anat.slice_z[i]), render_slice(anat, float(anat.slice_z[i]), i)


def project_full(config: PhantomConfig) -> Projection:
    """Frontal MIP of the full rendered series (the reference the fast path is checked against)."""
    zs, rows = [], []
    for z, img in render_slices(config):
        zs.append(z)
        rows.append(img.max(axis=0))
    return Projection(np.asarray(rows, dtype=np.float32), np.asarray(zs), config.pixel_spacing_mm)


def in_fov(prims: list[Primitive] | tuple[Primitive, ...], radius: float) -> list[Primitive]:
    """``prims`` less those wholly outside the FOV cylinder x^2 + y^2 <= radius^2 (conservative: a capsule by
    the distance of its axis from the centre, anything else by its axis-aligned (x, y) extent)."""
    caps = [i for i, q in enumerate(prims) if isinstance(q, Capsule)]
    keep = np.ones(len(prims), dtype=bool)
    if caps:
        a = np.array([prims[i].p0[:2] for i in caps])  # type: ignore[union-attr]
        d = np.array([prims[i].p1[:2] for i in caps]) - a  # type: ignore[union-attr]
        r = np.array([prims[i].r for i in caps])  # type: ignore[union-attr]
        t = np.clip(-(a * d).sum(1) / np.maximum((d * d).sum(1), 1e-12), 0.0, 1.0)
        keep[caps] = np.hypot(*(a + t[:, None] * d).T) <= radius + r
    for i, q in enumerate(prims):
        if isinstance(q, Capsule):
            continue
        if isinstance(q, Tube):
            k = np.asarray(q.knots)
            hx, hy = q._half(k[:, 3], k[:, 4])
            lo, hi = np.stack([k[:, 1] - hx, k[:, 2] - hy], 1), np.stack([k[:, 1] + hx, k[:, 2] + hy], 1)
        elif isinstance(q, Box):
            lo, hi = np.array([q.lo[:2]]), np.array([q.hi[:2]])
        else:
            x0, x1, y0, y1 = q.xy_bounds(0.0)
            lo, hi = np.array([[x0, y0]]), np.array([[x1, y1]])
        near = np.clip(0.0, lo, hi)  # the point of each (x, y) rectangle nearest the FOV centre
        keep[i] = bool((np.hypot(near[:, 0], near[:, 1]) <= radius).any())
    return [q for q, k in zip(prims, keep, strict=True) if k]


def fast_projection(
    seed_or_config: int | PhantomConfig,
    mm_per_px: float = 2.0,
    region: str | None = None,
    **overrides: object,
) -> tuple[Projection, Truth]:
    """Frontal MIP (HU) of a phantom without rendering slices: rows every ``mm_per_px`` from the top slice
    down to the bottom one, columns spanning the FOV at ``mm_per_px`` centred like the slices' columns."""
    if isinstance(seed_or_config, PhantomConfig):
        config = seed_or_config.with_overrides(**overrides) if overrides else seed_or_config
    else:
        config = sample_config(int(seed_or_config), region, **overrides)
    anat = build_anatomy(config)
    c, p = config, float(mm_per_px)
    lo, hi = float(anat.slice_z.min()), float(anat.slice_z.max())
    nz = int(np.floor((hi - lo) / p + 1e-6)) + 1
    z = hi - p * np.arange(nz)
    ncol = max(1, int(round(c.matrix * c.pixel_spacing_mm / p)))
    x = (np.arange(ncol) - (ncol - 1) / 2) * p
    # thickness blur needs rows beyond the scan ends: extend, then crop
    ext = int(np.ceil(c.slice_thickness_mm / p / 2)) + 1
    zz = hi + p * ext - p * np.arange(nz + 2 * ext)
    mip = np.full((zz.size, ncol), AIR, dtype=np.float32)
    # max is order-free: capsules in one vectorised batch, the other primitives one by one; in a small FOV
    # (a lumbar spine CT) primitives wholly outside its circle are not reconstructed
    prims = (
        in_fov(anat.primitives, r_fov) if (r_fov := anat.fov_radius_mm) < SMALL_FOV_MM else anat.primitives
    )
    _shadow_capsules([q for q in prims if isinstance(q, Capsule)], x, zz, p, mip)
    for prim in prims:
        if isinstance(prim, Capsule):
            continue
        x0, x1, z0, z1 = prim.xz_bounds()
        ca, cb = _index_range(x0, x1, x[0], p, ncol)
        ra, rb = _index_range(-z1, -z0, -zz[0], p, zz.size)  # z descending
        if ca >= cb or ra >= rb:
            continue
        m = prim.shadow_mask(x[None, ca:cb], zz[ra:rb, None])
        sub = mip[ra:rb, ca:cb]
        np.maximum(sub, np.where(m, np.float32(prim.value), np.float32(AIR)), out=sub)
    mip = apply_artifacts(apply_texture(mip, texture_field(anat, x, zz)), artifact_fields(anat, x, zz))
    if c.slice_thickness_mm > p:
        mip = uniform_filter1d(mip, size=max(1, int(round(c.slice_thickness_mm / p))), axis=0, mode="nearest")
    mip = mip[ext : ext + nz]
    if c.noise_sd_hu > 0:
        rng = np.random.default_rng([c.detail_seed, 13])
        sd = c.noise_sd_hu * np.sqrt(max(1.0, p / c.pixel_spacing_mm)) ** -1
        mip += np.float32(c.noise_sd_hu * NOISE_MAX_FACTOR) + (
            sd * 0.4 * rng.standard_normal(mip.shape)
        ).astype(np.float32)
    mip[:, np.abs(x) > anat.fov_radius_mm] = OUTSIDE_FOV
    return Projection(mip.astype(np.float32), z, p), anat.truth()
