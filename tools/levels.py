"""Vertebral level labels of cached scans, for multi-level training and evaluation.

Naming convention (the model's, documented in the README and model card): thoracic levels are counted up
from the lowest rib-bearing vertebra, which is "T12" whatever its number from the top (with 11 or 13 rib
pairs too); lumbar levels are the rib-free vertebrae counted down from it (L1 ... L5, an L6 when there are
six); S1 is the first sacral segment. Phantom truth names thoracic levels from the top (T1 = first rib
pair), so ``rib_relative`` renames them; real labels (CSV, MIP collections) are taken as given.

A level is *known* for a scan when its presence or absence is known: every level of a phantom (truth gives
the whole column, so an L5 missing from a four-lumbar spine is known absent), only the labelled ones for real
scans (``levels_known`` in the cache metadata, or the scan's own ``level``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from tools.data import CachedScan

MODEL_LEVELS = ("T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5", "S1")
"""The levels the bundled multi-level model places, superior first."""


def rib_relative(vertebrae: dict[str, Any]) -> dict[str, Any]:
    """Truth ``vertebrae`` (names from the top) renamed so that the lowest rib-bearing vertebra is "T12"."""
    thoracic = [int(m.group(1)) for k in vertebrae if (m := re.fullmatch(r"T(\d+)", k))]
    if not thoracic:
        return dict(vertebrae)
    shift = 12 - max(thoracic)
    out: dict[str, Any] = {}
    for k, v in vertebrae.items():
        m = re.fullmatch(r"T(\d+)", k)
        if m:
            i = int(m.group(1)) + shift
            if i >= 1:
                out[f"T{i}"] = v
        else:
            out[k] = v
    return out


@dataclass(frozen=True)
class LevelLabels:
    """Per-level labels of one cached scan, in ``levels`` order."""

    levels: tuple[str, ...]
    rows: np.ndarray
    """float [L]: the level's centre row in the cached image (NaN when absent or unknown)."""
    known: np.ndarray
    """bool [L]: presence or absence of the level is known."""
    in_view: np.ndarray
    """bool [L]: the level's centre lies inside the scanned range."""
    body_z: np.ndarray
    """float [L, 2]: (top, bottom) z of the vertebral body, mm (NaN when unknown)."""


def _inside(z: float, z_slices: np.ndarray) -> bool:
    half = abs(z_slices[0] - z_slices[1]) / 2 if z_slices.size > 1 else 0.5
    return bool(z_slices.min() - half <= z <= z_slices.max() + half)


def _num(v: Any) -> float:
    return float(v) if v is not None else math.nan


def level_labels(scan: CachedScan, levels: tuple[str, ...] = MODEL_LEVELS) -> LevelLabels:
    """The labels of ``levels`` in ``scan`` (see the module docstring)."""
    meta = scan.meta
    verts = rib_relative(meta.get("vertebrae") or {})
    phantom = str(meta.get("source", "")).startswith("phantom")
    known_names = set(rib_relative({k: 0 for k in meta.get("levels_known") or []}))
    if not known_names:
        known_names = set(verts) | set(levels) if phantom else {str(meta.get("level", "L3"))}
    n = len(levels)
    rows, body = np.full(n, np.nan), np.full((n, 2), np.nan)
    known, in_view = np.zeros(n, bool), np.zeros(n, bool)
    for i, name in enumerate(levels):
        known[i] = name in known_names or (phantom and name in levels)
        v = verts.get(name)
        if v is not None and v.get("z_mm") is not None:
            z = float(v["z_mm"])
            rows[i] = float(scan.grid.z_to_row(z))
            in_view[i] = _inside(z, scan.z_slices)
            body[i] = [_num(v.get("z_top_mm")), _num(v.get("z_bottom_mm"))]
        elif name == meta.get("level", "L3") and math.isfinite(scan.label_z_mm):
            rows[i] = scan.label_row
            in_view[i] = scan.in_view
    return LevelLabels(tuple(levels), rows, known, in_view, body)


def vertebra_rows(scan: CachedScan) -> np.ndarray:
    """Centre rows of every vertebral body of the scan's truth (C3 ... S1, any count), sorted; what a
    level-agnostic refiner is trained to find."""
    rows = [
        float(scan.grid.z_to_row(float(v["z_mm"])))
        for v in (scan.meta.get("vertebrae") or {}).values()
        if v.get("z_mm") is not None
    ]
    return np.sort(np.asarray(rows, dtype=np.float64))
