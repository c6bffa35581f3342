"""Scanner artefacts as (x, z) fields that commute with the frontal MIP: bright streaks and beam hardening.

Inside the body (``v`` above ``BODY_FLOOR``) a value becomes ``v + add(x, z) + max(v - BONE_FLOOR, 0) *
(gain(x, z) - 1)``; elsewhere it stays. With ``add >= 0`` and ``0 < gain <= 1`` the map is non-decreasing in
``v`` for fixed (x, z), so painting it into every axial plane (full path) and applying it to the painted MIP
(fast path) give the same frontal MIP, as for the bone texture (texture.py).

- Streaks (``streaks``, ``streak_hu``): a few slices carry bright bands across the body, as photon
  starvation and metal or dense contrast leave them; in a frontal MIP each is a bright line a slice thick.
- Beam hardening (``beam_hardening``): bone at the centre of the trunk reads lower than at its sides
  (cupping), strongest in thick patients.
"""

from __future__ import annotations

import numpy as np

from l3edge.phantom.anatomy import Anatomy

BODY_FLOOR = -300.0
BONE_FLOOR = 120.0

Fields = tuple[np.ndarray, np.ndarray]


def artifact_fields(anat: Anatomy, x: np.ndarray, z: np.ndarray) -> Fields | None:
    """(gain, add), float32 [z.size, x.size], or None when the config asks for no artefact."""
    c = anat.config
    if not c.streaks and c.beam_hardening <= 0:
        return None
    X, Z = np.asarray(x, np.float64)[None, :], np.asarray(z, np.float64)[:, None]
    half_w = 150.0 * c.body_width_scale + c.fat_mm
    cx = c.lateral_offset_mm
    gain = np.ones((Z.size, X.size))
    if c.beam_hardening > 0:
        gain = gain - c.beam_hardening * np.exp(-0.5 * ((X - cx) / (0.55 * half_w)) ** 2)
    add = np.zeros((Z.size, X.size))
    rng = np.random.default_rng([c.detail_seed, 53])
    lo, hi = float(anat.slice_z.min()), float(anat.slice_z.max())
    sig = 0.5 * max(c.slice_thickness_mm, 1.0)
    inside = np.abs(X - cx) < half_w
    for _ in range(c.streaks):
        zk = float(rng.uniform(lo, hi))
        amp = c.streak_hu * float(rng.uniform(0.4, 1.0))
        period, phase = float(rng.uniform(25, 90)), float(rng.uniform(0, 2 * np.pi))
        if abs(Z - zk).min() > 4 * sig:
            continue
        across = (0.5 + 0.5 * np.cos(2 * np.pi * X / period + phase)) ** 3 * inside
        add += amp * across * np.exp(-0.5 * ((Z - zk) / sig) ** 2)
    return gain.astype(np.float32), add.astype(np.float32)


def apply_artifacts(v: np.ndarray, fields: Fields | None) -> np.ndarray:
    """``v`` (broadcastable against the fields) with the artefacts applied inside the body."""
    if fields is None:
        return v
    gain, add = fields
    out = v + add + np.maximum(v - np.float32(BONE_FLOOR), 0) * (gain - np.float32(1))
    return np.where(v > np.float32(BODY_FLOOR), out, v).astype(np.float32, copy=False)
