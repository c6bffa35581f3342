"""Bone texture: a deterministic multiplicative field a(x, z) applied to every value above the floor.

The map ``v -> FLOOR + (v - FLOOR) * (1 + a(x, z))`` is non-decreasing in ``v`` for fixed (x, z) (``1 + a``
stays positive), so it commutes with the max along y: painting it into the axial planes (full path) and
applying it to the painted MIP (fast path) give the same frontal MIP. ``a`` samples a periodic band-limited
noise tile (trabecular grain and low-frequency mottling, seeded by ``detail_seed``) and adds darker spots at
the sacral foramina. It depends on (x, z) only, which is all a frontal MIP can show.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.ndimage import map_coordinates

from l3edge.phantom.anatomy import Anatomy

TEXTURE_FLOOR_HU = 120.0
"""Values at or below this are left alone (soft tissue, fat, air)."""
_TILE_PX, _TILE_MM = 128, 3.0
"""The noise tile: 128 x 128 samples every 3 mm (384 mm, repeated periodically)."""


@lru_cache(maxsize=64)
def _tile(seed: int) -> np.ndarray:
    """Band-limited random field (fine trabecular grain + coarse mottling), unit-free, sd ~0.16."""
    rng = np.random.default_rng([seed, 29])
    spec = np.fft.rfft2(rng.standard_normal((_TILE_PX, _TILE_PX)).astype(np.float32))
    fy, fx = np.fft.fftfreq(_TILE_PX)[:, None], np.fft.rfftfreq(_TILE_PX)[None, :]
    k2 = (2 * np.pi**2) * (fx * fx + fy * fy)  # periodic Gaussian filters (sd in px) in the Fourier domain
    fine = np.fft.irfft2(spec * np.exp(-k2 * 1.1**2), s=(_TILE_PX, _TILE_PX))
    coarse = np.fft.irfft2(spec * np.exp(-k2 * 6.0**2), s=(_TILE_PX, _TILE_PX))
    t = (0.11 * fine / fine.std() + 0.035 * coarse / coarse.std()).astype(np.float32)
    t.setflags(write=False)
    return t


def texture_field(anat: Anatomy, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``a(x, z)``, float32 [z.size, x.size], in [-0.75, 0.6]."""
    c = anat.config
    X, Z = np.asarray(x, np.float64)[None, :], np.asarray(z, np.float64)[:, None]
    ci = np.broadcast_to(X / _TILE_MM, (Z.size, X.size))
    ri = np.broadcast_to(Z / _TILE_MM, (Z.size, X.size))
    a = map_coordinates(_tile(c.detail_seed), [ri.ravel(), ci.ravel()], order=1, mode="grid-wrap")
    a = np.clip(a.reshape(Z.size, X.size).astype(np.float64), -0.5, 0.5)
    # sacral foramina: four pairs of dark spots converging downwards
    s1, s = anat.spine.by_name("S1"), c.skeleton_scale
    step = anat.spine.sacrum_length / 5.0
    for k in range(4):
        zk = s1.z_top - (0.9 + k) * step
        if not (Z.min() - 15 <= zk <= Z.max() + 15):
            continue
        sig = (5.5 - 0.6 * k) * s
        for sg in (-1.0, 1.0):
            xk = s1.x + sg * (28.0 - 3.5 * k) * s
            a -= 0.65 * np.exp(-((X - xk) ** 2 + (Z - zk) ** 2) / (2 * sig * sig))
    return np.clip(a, -0.75, 0.6).astype(np.float32)


def apply_texture(v: np.ndarray, a: np.ndarray) -> np.ndarray:
    """In place where possible: ``v`` above the floor scaled by ``1 + a`` (broadcast), the rest unchanged."""
    f = np.float32(TEXTURE_FLOOR_HU)
    return np.where(v > f, f + (v - f) * (1 + a), v).astype(np.float32, copy=False)
