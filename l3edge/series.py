"""Data passed from the readers (DICOM, NIfTI, phantom fast path) to the projection and model stages.

Geometry conventions, used everywhere in l3edge:
- z is the patient's superior axis in mm (DICOM patient coordinates, LPS: +x patient left, +y posterior,
  +z head). NIfTI (RAS+) is converted so that the same physical point gets the same z from both formats.
- Slices and MIP rows are ordered superior -> inferior (z descending): row 0 is the head end.
- MIP columns run from the patient's right to the patient's left (radiological frontal view, +x), and the MIP
  takes the maximum over the anterior-posterior (y) axis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class SeriesInfo:
    """What was read, in MIP row order (superior -> inferior). No patient data is kept here."""

    source: str
    """``dicom`` or ``nifti`` (``phantom`` for the in-memory fast path)."""
    path: Path
    """The input path as given (folder or NIfTI file)."""
    series_instance_uid: str | None
    """DICOM SeriesInstanceUID of the chosen series (None for NIfTI)."""
    slice_files: tuple[Path, ...]
    """DICOM file of each row (empty for NIfTI)."""
    slice_index: tuple[int, ...]
    """Per row: 0-based index of that slice in z-ascending order (feet -> head) for DICOM; for NIfTI the index
    along the file's slice (third) axis."""
    instance_numbers: tuple[int | None, ...]
    """Per row: DICOM InstanceNumber (None where absent or NIfTI)."""
    sop_instance_uids: tuple[str | None, ...]
    """Per row: DICOM SOPInstanceUID (None for NIfTI)."""
    warnings: tuple[str, ...] = ()
    """Non-fatal problems found while reading (gaps, duplicates, other series ignored)."""
    archive: Path | None = None
    """The zip archive ``slice_files`` are members of (each named ``<archive>/<member>``); None for files."""
    part: str | None = None
    """Which part of a series split by acquisition (``acquisition 2``, ``part 1``); None for a whole one."""


@dataclass(frozen=True)
class Projection:
    """A frontal maximum intensity projection in HU with its geometry."""

    mip_hu: np.ndarray
    """float32 [n_slices, n_cols]; row i is the max over the AP axis of slice i (superior first)."""
    z_mm: np.ndarray
    """float64 [n_slices]; patient z of each row, strictly decreasing."""
    col_spacing_mm: float
    """Spacing of the MIP columns (the in-plane pixel spacing along patient x)."""
    series: SeriesInfo | None = None
    """Where the rows came from (None for an in-memory projection)."""
    timings_ms: dict[str, float] = field(default_factory=dict)
    """Time spent reading and projecting, by stage."""

    @property
    def n_slices(self) -> int:
        return int(self.mip_hu.shape[0])
