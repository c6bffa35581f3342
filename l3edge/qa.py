"""QA picture: the frontal MIP with every level found and the predicted one, beside the axial slice there.

Pixels only: no patient data is drawn. Beside each picture ``<name>.png`` goes ``<name>.json``, its
geometry (:func:`geometry`): where the MIP sits in the picture, the patient z of the picture's top and its
height in mm, and per MIP row (superior first) the slice's z, slice index and SOPInstanceUID, so that the
review page can map a click on the picture to a slice (about 80 bytes a slice, most of it the UIDs).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from l3edge.gray import SOFT_TISSUE_HU, to_gray
from l3edge.numeric import median
from l3edge.result import L3Result
from l3edge.series import Projection

if TYPE_CHECKING:
    from l3edge.qa_axial import AxialStrip

GEOMETRY_FORMAT = 1
NOTE_H_PX = 18
"""Height of the note strip above the MIP."""

MIP_WINDOW_HU = (-200.0, 1500.0)
"""HU range of the MIP picture (as in the shared reference MIPs)."""
PANEL_GAP_PX = 8
"""Gap between the MIP and the axial slice."""
MIN_HEIGHT_PX = 384
MAX_SIDE_PX = 1024
LINE_RGB = (255, 40, 40)
TICK_RGB = (80, 200, 255)
REVIEW_RGB = (255, 30, 30)


def qa_filename(path: str) -> str:
    """File name for the QA picture of ``path``: its base name plus a short hash of the full path (unique)."""
    stem = Path(path).name or "scan"
    stem = re.sub(r"\.nii(\.gz)?$", "", stem)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem)[:60] or "scan"
    digest = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:8]
    return f"{stem}-{digest}.png"


def _layout(projection: Projection) -> tuple[float, float, float, int, int]:
    """(scale, z of the picture's top in mm, height in mm, MIP height px, MIP width px) of the MIP panel."""
    z = np.asarray(projection.z_mm, dtype=np.float64)
    n_rows, n_cols = projection.mip_hu.shape
    col = float(projection.col_spacing_mm)
    pitch = median(np.abs(np.diff(z))) if z.size > 1 else col
    z_top = float(z[0]) + pitch / 2
    # Square pixels: the picture's rows are resampled to the column spacing, then scaled so that short scans
    # are at least MIN_HEIGHT_PX tall (unless that makes them wider than MAX_SIDE_PX) and long ones fit.
    height_mm = n_rows * pitch
    h0, w0 = max(height_mm / col, 1.0), float(n_cols)
    scale = max(1.0, MIN_HEIGHT_PX / h0)  # enlarge short scans...
    scale = min(scale, max(1.0, MAX_SIDE_PX / w0))  # ...but not beyond MAX_SIDE_PX wide
    scale = min(scale, 2 * MAX_SIDE_PX / h0)  # and shrink very long scans
    return scale, z_top, height_mm, max(1, round(h0 * scale)), max(1, round(w0 * scale))


def render_qa(projection: Projection, result: L3Result, axial_hu: np.ndarray | None = None) -> Image.Image:
    """The QA picture as an RGB image.

    The MIP with a tick beside the spine for every level found (T12 ... S1; the result's level as a line
    across), "review" in red when the result asks for it, and the axial slice at the level beside it.

    Args:
        projection: the scan's frontal MIP (rows superior -> inferior).
        result: the result for this scan (its ``z_mm`` None: not found; the MIP is shown with a note).
        axial_hu: the axial slice at the result's level in HU (None: MIP only).
    """
    z_mm, level = result.z_mm, result.level
    scale, z_top, height_mm, mip_h, mip_w = _layout(projection)
    mip = to_gray(projection.mip_hu, *MIP_WINDOW_HU).resize((mip_w, mip_h), Image.Resampling.BILINEAR)
    panels = [mip.convert("RGB")]
    if z_mm is not None and axial_hu is not None:
        ax = to_gray(axial_hu, *SOFT_TISSUE_HU)
        ax_h = max(mip_h, MIN_HEIGHT_PX)
        ax_w = max(1, round(ax.width * ax_h / max(ax.height, 1)))
        panels.append(ax.resize((ax_w, ax_h), Image.Resampling.BILINEAR).convert("RGB"))
    gap = PANEL_GAP_PX
    note_h = NOTE_H_PX
    width = sum(p.width for p in panels) + gap * (len(panels) - 1)
    canvas = Image.new("RGB", (width, max(p.height for p in panels) + note_h), "black")
    x = 0
    for p in panels:
        canvas.paste(p, (x, note_h))
        x += p.width + gap
    draw = ImageDraw.Draw(canvas)

    def y_of(zz: float) -> float:
        return note_h + (z_top - zz) / height_mm * mip_h

    for name, lv in result.levels.items():  # ticks at the left edge, names beside them
        if name == level:
            continue
        y = y_of(float(lv.z_mm))
        draw.line([(0, y), (14, y)], fill=TICK_RGB, width=2)
        draw.text((17, y - 6), name, fill=TICK_RGB)
    if z_mm is not None:
        y = y_of(z_mm)
        draw.line([(0, y), (mip_w - 1, y)], fill=LINE_RGB, width=max(1, round(scale)))
        draw.text((17, y - 14), level, fill=LINE_RGB)
        note = f"{level} at z = {z_mm:.1f} mm, confidence {result.confidence:.2f}"
    else:
        note = f"{level} not found in this scan"
    draw.text((4, 3), note, fill=(255, 255, 255))
    if result.review:
        draw.text((max(4, width - 60), 3), "REVIEW", fill=REVIEW_RGB)
    return canvas


def write_qa(
    qa_dir: Path,
    path: str,
    projection: Projection,
    result: L3Result,
    axial_hu: np.ndarray | None = None,
    strip: AxialStrip | None = None,
) -> Path:
    """Render the QA picture of the scan at ``path`` and save it as a PNG in ``qa_dir``, its geometry beside
    it (``.json``), and the axial thumbnails ``strip`` (``l3edge.qa_axial``) when given; returns the PNG."""
    qa_dir.mkdir(parents=True, exist_ok=True)
    out = qa_dir / qa_filename(path)
    picture = render_qa(projection, result, axial_hu)
    geo = geometry(projection, picture.size)
    if strip is not None:
        from l3edge.qa_axial import write_strip

        geo["axial"] = write_strip(out, strip, projection, geo["slice_index"])  # type: ignore[arg-type]
    side = geometry_path(out)
    tmp_json = side.with_name(side.name + ".tmp")
    tmp_json.write_text(json.dumps(geo), encoding="utf-8")
    os.replace(tmp_json, side)
    tmp = out.with_name(out.name + ".tmp")
    picture.save(tmp, format="PNG")
    os.replace(tmp, out)
    return out


def geometry_path(png: Path) -> Path:
    """The geometry file beside a QA picture."""
    return png.with_suffix(".json")


def geometry(projection: Projection, size: tuple[int, int]) -> dict[str, object]:
    """Where the MIP of ``projection`` sits in its QA picture of ``size`` (width, height) px, and its rows.

    A picture row ``y`` (px from the top of the picture) is at patient z
    ``z_top_mm - (y - mip.y) / mip.h * height_mm``; row ``i`` of the MIP is the slice ``slice_index[i]``
    at ``z_mm[i]`` (superior first, as the MIP). ``axial_view``: where the axial slice sits in the picture
    (absent when the picture has none); ``axial`` (added by :func:`write_qa` with thumbnails): see
    ``l3edge.qa_axial.write_strip``.
    """
    _, z_top, height_mm, mip_h, mip_w = _layout(projection)
    series = projection.series
    n = projection.n_slices
    if series is not None and len(series.slice_index) == n:
        index = [int(k) for k in series.slice_index]
        uids = list(series.sop_instance_uids)
    else:  # in memory: rows are superior -> inferior, the z-ascending index counts from the last row
        index, uids = [n - 1 - i for i in range(n)], [None] * n
    out: dict[str, object] = {
        "format": GEOMETRY_FORMAT,
        "width": int(size[0]),
        "height": int(size[1]),
        "mip": {"x": 0, "y": NOTE_H_PX, "w": mip_w, "h": mip_h},
        "z_top_mm": round(z_top, 3),
        "height_mm": round(height_mm, 3),
        "z_mm": [round(float(v), 3) for v in projection.z_mm],
        "slice_index": index,
        "sop_instance_uid": uids,
    }
    x_ax = mip_w + PANEL_GAP_PX
    if size[0] > x_ax:  # the axial slice's panel, right of the MIP, as tall as the picture below the note
        view = {"x": x_ax, "y": NOTE_H_PX, "w": int(size[0]) - x_ax, "h": int(size[1]) - NOTE_H_PX}
        out["axial_view"] = view
    return out
