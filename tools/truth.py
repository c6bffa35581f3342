"""Labels from a phantom's truth (``l3edge.phantom.Truth.to_dict()`` / truth.json) and the in-view rule.

Used by tools.data (cache metadata), tools.build_cache and tools.e2e. Pure functions, no I/O.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def vertebra_entries(vertebrae: Any) -> dict[str, dict[str, Any]]:
    """Truth ``vertebrae`` as {level: dict}; accepts a mapping or a list of dicts/objects with a name."""
    if vertebrae is None:
        return {}
    if isinstance(vertebrae, dict):
        items = vertebrae.items()
    else:
        items = []
        for v in vertebrae:
            d = v if isinstance(v, dict) else getattr(v, "to_dict", lambda v=v: vars(v))()
            items.append((d.get("name") or d.get("level") or d.get("label"), d))
    out = {}
    for k, v in items:
        d = v if isinstance(v, dict) else getattr(v, "to_dict", lambda v=v: vars(v))()
        out[str(k).upper()] = dict(d)
    return out


def _get(d: dict[str, Any], *keys: str) -> float | None:
    for k in keys:
        if d.get(k) is not None:
            return float(d[k])
    return None


def vertebra_bounds(vertebrae: Any, level: str) -> tuple[float, float, float] | None:
    """(z_top, z_bottom, z_centre) in mm of ``level`` in a truth ``vertebrae`` entry, None if absent."""
    d = vertebra_entries(vertebrae).get(level.upper())
    if d is None:
        return None
    top = _get(d, "z_top_mm", "z_top", "top_z_mm", "z_superior_mm")
    bottom = _get(d, "z_bottom_mm", "z_bottom", "bottom_z_mm", "z_inferior_mm")
    centre = _get(d, "z_mm", "z_center_mm", "z_centre_mm", "z_center", "z")
    if centre is None and top is not None and bottom is not None:
        centre = 0.5 * (top + bottom)
    if centre is None:
        return None
    return (top if top is not None else math.nan, bottom if bottom is not None else math.nan, centre)


def label_from_truth(truth: dict[str, Any], level: str, z_mm: np.ndarray) -> tuple[float, bool]:
    """(label z, in view) for ``level`` from a phantom truth dict (``l3edge.phantom.Truth.to_dict()``)."""
    if level.upper() == "L3" and "l3_in_view" in truth:
        z = truth.get("l3_z_mm")
        if z is None:
            z = truth.get("l3_z_true_mm")
        return (float(z) if z is not None else math.nan), bool(truth["l3_in_view"])
    entry = vertebra_entries(truth.get("vertebrae")).get(level.upper())
    b = vertebra_bounds(truth.get("vertebrae"), level)
    if b is None or entry is None:
        return math.nan, False
    in_view = entry.get("in_view")
    return b[2], bool(in_view) if in_view is not None else inside_scan(b[2], z_mm)


def truth_slices(truth: dict[str, Any] | None) -> np.ndarray | None:
    """Slice centres (superior first) of the simulated scan, from a phantom truth; None if it lacks them.

    The fast phantom path samples its MIP rows finer than the simulated slices, so errors in slices must be
    counted on these, not on the MIP rows."""
    if not truth:
        return None
    try:
        lo, hi = (float(v) for v in truth["scan_z_range"])
        n, dz = int(truth["n_slices"]), float(truth["slice_spacing_mm"])
    except (KeyError, TypeError, ValueError):
        return None
    if n < 1 or dz <= 0 or abs((hi - lo) - (n - 1) * dz) > 0.01 * dz + 1e-6:
        return None
    return hi - dz * np.arange(n)


def inside_scan(z: float, z_mm: np.ndarray) -> bool:
    """``z`` within the scanned range (half a slice beyond the outer slice centres)."""
    z_mm = np.asarray(z_mm, dtype=np.float64)
    half = abs(z_mm[0] - z_mm[1]) / 2 if z_mm.size > 1 else 0.5
    return bool(z_mm.min() - half <= z <= z_mm.max() + half)
