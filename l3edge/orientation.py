"""In-plane and slice-axis geometry shared by the DICOM and NIfTI readers (pure numpy, no I/O).

Both readers describe a stored 2D slice by the patient-space (LPS) directions of its two array axes:
for DICOM, array axis 0 (rows) runs along the second ImageOrientationPatient triplet (the column direction)
and axis 1 (columns) along the first; for NIfTI, axis 0 and axis 1 are the first two affine columns
(after RAS -> LPS). From these we work out, for any flipped or transposed storage, which array axis is
patient x (right -> left) and which is y (anterior -> posterior), so the MIP and the QA slice come out in
one canonical orientation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAX_TILT_DEG = 3.0
"""Largest angle between the slice normal and the patient z axis that is read (gantry tilt)."""
MAX_INPLANE_DEG = 10.0
"""Largest in-plane rotation (array axes vs patient x/y) that is read as if axis-aligned."""
AXIAL_LIMIT_DEG = 45.0
"""Slice normals further than this from z are sagittal/coronal, not (tilted) axial."""


@dataclass(frozen=True)
class InPlane:
    """How a stored slice maps to the canonical view (rows anterior -> posterior, columns right -> left)."""

    x_axis: int
    """Array axis (0 or 1) that runs along patient x."""
    flip_x: bool
    """True when that axis runs patient left -> right (must be reversed)."""
    flip_y: bool
    """True when the other axis runs posterior -> anterior."""
    rotation_deg: float
    """Angle between the array axes and the patient x/y axes (0 for axis-aligned storage)."""


def unit(v: np.ndarray) -> np.ndarray:
    """Return v / |v| (v assumed non-zero: callers check)."""
    return v / float(np.linalg.norm(v))


def tilt_deg(normal: np.ndarray) -> float:
    """Angle in degrees between a slice normal and the patient z axis (0 for a true axial slice)."""
    c = min(1.0, abs(float(unit(normal)[2])))
    return math.degrees(math.acos(c))


def in_plane(axis0_dir: np.ndarray, axis1_dir: np.ndarray) -> InPlane:
    """Work out which array axis is patient x from the LPS directions of the two array axes."""
    a0 = unit(np.asarray(axis0_dir, dtype=np.float64))
    a1 = unit(np.asarray(axis1_dir, dtype=np.float64))
    if abs(a0[0]) >= abs(a1[0]):
        x_axis, xd, yd = 0, a0, a1
    else:
        x_axis, xd, yd = 1, a1, a0
    c = min(1.0, abs(float(xd[0])) / max(float(np.hypot(xd[0], xd[1])), 1e-12))
    return InPlane(
        x_axis=x_axis, flip_x=bool(xd[0] < 0), flip_y=bool(yd[1] < 0), rotation_deg=math.degrees(math.acos(c))
    )


def mip_row(pixels: np.ndarray, geo: InPlane, use_min: bool = False) -> np.ndarray:
    """Reduce one stored slice to its frontal MIP row: max over the AP axis, columns right -> left.

    ``use_min`` takes the minimum instead (for a negative rescale slope, where min stored = max HU).
    """
    y_axis = 1 - geo.x_axis
    row = pixels.min(axis=y_axis) if use_min else pixels.max(axis=y_axis)
    return row[::-1] if geo.flip_x else row


def canonical_slice(pixels: np.ndarray, geo: InPlane) -> np.ndarray:
    """Re-orient a stored slice to rows anterior -> posterior, columns patient right -> left."""
    out = pixels.T if geo.x_axis == 0 else pixels
    if geo.flip_x:
        out = out[:, ::-1]
    if geo.flip_y:
        out = out[::-1, :]
    return np.ascontiguousarray(out)
