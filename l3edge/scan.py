"""Reading a scan: dispatch a path to the DICOM or NIfTI reader. Both return a ``Projection``.

This module imports neither pydicom nor nibabel itself; each reader imports its own library on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from l3edge.errors import InputError
from l3edge.nifti import is_nifti
from l3edge.series import Projection, SeriesInfo


def read_projection(
    path: str | Path, series_uid: str | None = None, on_progress: Callable[[int, int], None] | None = None
) -> Projection:
    """Read a CT scan and return its frontal maximum intensity projection in HU.

    Args:
        path: a folder holding DICOM files (searched recursively; the axial CT series with the most
            slices is read) or a NIfTI file (.nii / .nii.gz).
        series_uid: read this DICOM SeriesInstanceUID instead of picking one.
        on_progress: called as ``on_progress(slices_done, slices_total)`` while slices are read.

    Returns:
        The projection, rows superior -> inferior, columns patient right -> left, with its SeriesInfo.

    Raises:
        InputError: the path does not exist or holds no usable CT scan (one line saying why).
    """
    p = Path(path)
    if not p.exists():
        what = "is a broken symbolic link" if p.is_symlink() else "does not exist"
        raise InputError(f"{p}: path {what}; give a DICOM folder or a .nii/.nii.gz file")
    if p.is_dir():
        from l3edge import dicom

        return dicom.read_projection(p, series_uid=series_uid, on_progress=on_progress)
    if is_nifti(p):
        if series_uid is not None:
            raise InputError(f"{p}: --series applies to DICOM folders, not to a NIfTI file")
        from l3edge import nifti

        return nifti.read_projection(p, on_progress=on_progress)
    raise InputError(
        f"{p}: is a file but not NIfTI (.nii/.nii.gz); for DICOM give the folder that holds "
        "the series, not one slice file"
    )


def read_axial_slice(series: SeriesInfo, row: int) -> np.ndarray:
    """One axial slice of a scan already read, for the QA picture.

    Args:
        series: ``Projection.series`` of that scan.
        row: MIP row (0 = most superior slice).

    Returns:
        HU float32 [rows, cols]: rows anterior -> posterior, columns patient right -> left.

    Raises:
        InputError: the row is out of range or the file can no longer be read.
    """
    n = len(series.slice_index)
    if not 0 <= row < n:
        raise InputError(f"{series.path}: row {row} is outside the scan's {n} slices")
    if series.source == "dicom":
        from l3edge import dicom

        return dicom.read_slice_hu(series.slice_files[row])
    if series.source == "nifti":
        from l3edge import nifti

        return nifti.read_slice_hu(series.path, series.slice_index[row])
    raise InputError(f"{series.path}: no slices to read for a {series.source} projection")
