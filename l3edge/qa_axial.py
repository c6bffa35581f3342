"""Axial thumbnails beside a QA picture, for the review page's axial view (``predict --qa-axial N``).

Off by default: the QA picture already shows the axial slice at the answer. With ``N`` > 0, the slices
at the result's level and the levels found up to :data:`LEVEL_REACH` above and below it (L1 to L5 for L3:
where a correction by a whole vertebra lands), and ``N`` steps each side of each (a step is one slice, or
several on thin-slice scans so that it is at least :data:`MIN_STEP_MM`), are read through the scan's
``SliceReader`` (the one the QA picture and the export share; the answer's slice is read once) and
written as one JPEG strip, ``<name>_axial.jpg``, tiles side by side, superior first, each
:data:`TILE_H_PX` high in the soft-tissue window. The QA geometry (``l3edge.qa``) records under ``axial``
which MIP row, slice index and z each tile is, so that the page can show the tile nearest the line a
reviewer moves. Pixels only, no patient data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from l3edge.gray import SOFT_TISSUE_HU, to_gray
from l3edge.numeric import median
from l3edge.result import L3Result
from l3edge.review import SPINE_ORDER
from l3edge.series import Projection
from l3edge.slices import SliceReader

TILE_H_PX = 112
"""Height of a tile; its width follows the slice's shape."""
MIN_STEP_MM = 2.5
"""Smallest z step between the tiles around a level (thin slices are skipped to keep it)."""
LEVEL_REACH = 2
"""Levels above and below the result's own that get thumbnails too."""
JPEG_QUALITY = 80


@dataclass(frozen=True)
class AxialStrip:
    """The tiles of one scan, superior first."""

    rows: list[int]
    """MIP row of each tile (superior first, as the MIP)."""
    step_mm: float
    """The z step between neighbouring tiles around a level."""
    image: Image.Image
    """The strip: ``len(rows)`` tiles of ``tile_w`` x ``TILE_H_PX`` side by side."""
    tile_w: int


def _step(z: np.ndarray) -> tuple[int, float]:
    """(rows, mm) between neighbouring tiles: one slice, or enough slices to make :data:`MIN_STEP_MM`."""
    pitch = median(np.abs(np.diff(z))) if z.size > 1 else MIN_STEP_MM
    step = max(1, int(np.ceil(MIN_STEP_MM / max(pitch, 1e-6) - 1e-6)))
    return step, step * pitch


def _near_levels(result: L3Result) -> list[float]:
    """z of the result's level and of the levels found within :data:`LEVEL_REACH` of it in the spine."""
    rank = {n: i for i, n in enumerate(SPINE_ORDER)}
    own = rank.get(result.level)
    out = [float(result.z_mm)] if result.z_mm is not None else []
    for name, lv in result.levels.items():
        if own is None or abs(rank.get(name, -99) - own) <= LEVEL_REACH:
            out.append(float(lv.z_mm))
    return out


def tile_rows(projection: Projection, result: L3Result, each: int) -> list[int]:
    """The MIP rows to show: the result's level and the levels near it (their nearest rows) and ``each``
    steps each side, sorted."""
    z = np.asarray(projection.z_mm, dtype=np.float64)
    if each <= 0 or z.size == 0:
        return []
    step = _step(z)[0]
    rows: set[int] = set()
    for level_z in _near_levels(result):
        centre = int(np.argmin(np.abs(z - level_z)))
        rows.update(r for r in range(centre - each * step, centre + each * step + 1, step) if 0 <= r < z.size)
    return sorted(rows)


def _tile(hu: np.ndarray, tile_w: int) -> Image.Image:
    return to_gray(hu, *SOFT_TISSUE_HU).resize((tile_w, TILE_H_PX), Image.Resampling.BILINEAR)


def read_strip(projection: Projection, result: L3Result, slices: SliceReader, each: int) -> AxialStrip | None:
    """The strip of ``result``'s levels (None when nothing is found or the scan has no slices to read).

    Raises:
        InputError: a slice cannot be read.
    """
    rows = tile_rows(projection, result, each)
    if not rows or not slices.has_slices:
        return None
    hu = slices.read_many(rows)  # the QA picture's slice is not read again; the others are not kept
    first = hu[rows[0]]
    tile_w = max(1, round(first.shape[1] * TILE_H_PX / max(first.shape[0], 1)))
    strip = Image.new("L", (tile_w * len(rows), TILE_H_PX))
    for j, r in enumerate(rows):
        strip.paste(_tile(hu.pop(r), tile_w), (j * tile_w, 0))
    return AxialStrip(rows, _step(np.asarray(projection.z_mm, dtype=np.float64))[1], strip, tile_w)


def strip_name(png: Path) -> str:
    """The strip's file name beside the QA picture ``png``."""
    return png.stem + "_axial.jpg"


def write_strip(png: Path, strip: AxialStrip, projection: Projection, index: list[int]) -> dict[str, object]:
    """Save ``strip`` beside the QA picture ``png`` (atomically); returns its entry of the QA geometry:
    ``file``, ``tile_w``, ``tile_h``, ``step_mm`` and per tile (left to right) its MIP ``row``,
    ``slice_index`` and ``z_mm`` (``index``: the z-ascending slice index of each MIP row)."""
    out = png.with_name(strip_name(png))
    tmp = out.with_name(out.name + ".tmp")
    strip.image.save(tmp, format="JPEG", quality=JPEG_QUALITY)
    os.replace(tmp, out)
    return {
        "file": out.name,
        "tile_w": strip.tile_w,
        "tile_h": TILE_H_PX,
        "step_mm": round(strip.step_mm, 3),
        "row": list(strip.rows),
        "slice_index": [int(index[r]) for r in strip.rows],
        "z_mm": [round(float(projection.z_mm[r]), 3) for r in strip.rows],
    }
