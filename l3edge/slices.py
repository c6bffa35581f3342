"""The slices of a scan already read, for the side outputs: the QA picture's axial slice and the export.

``slice_reader(series)`` is the one place that looks at what kind of scan a ``SeriesInfo`` came from; QA and
export both ask the reader it returns, and share it, so the axial slice at the answer is read once:

- :class:`DicomSlices`: each row is a DICOM file (a zip member too), exported byte for byte;
- :class:`NiftiSlices`: each row is a slice along the file's third axis, exported as a 2D NIfTI;
- :class:`NoSlices`: an in-memory projection (a phantom's, a training cache's): nothing to read or export.

Each reader imports its own library (pydicom, nibabel) on first use.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path, PurePath

import numpy as np

from l3edge.errors import InputError
from l3edge.series import SeriesInfo

WriteFn = Callable[[Path], None]
"""Writes one exported slice file at the path it is given."""


class SliceReader:
    """Rows of one series (MIP row order, 0 = most superior); see the module docstring."""

    has_series_choice = False
    """Its scans are DICOM studies, where the result says which series was read and why."""
    has_slices = True
    """Its rows have slices behind them to read (False: an in-memory projection)."""

    def __init__(self, series: SeriesInfo) -> None:
        self.series = series
        self._axial: dict[int, np.ndarray] = {}

    @property
    def n_rows(self) -> int:
        return len(self.series.slice_index)

    def read_axial(self, row: int, keep: bool = True) -> np.ndarray:
        """The axial slice of MIP row ``row`` (read once, then kept; ``keep=False``: not kept when it was
        not already, for reads of many slices such as the QA axial thumbnails).

        Returns:
            HU float32 [rows, cols]: rows anterior -> posterior, columns patient right -> left.

        Raises:
            InputError: the row is out of range or the file can no longer be read.
        """
        self._check_row(row)
        if row in self._axial:
            return self._axial[row]
        hu = self._read(row)
        if keep:
            self._axial[row] = hu
        return hu

    def _check_row(self, row: int) -> None:
        if not 0 <= row < self.n_rows:
            raise InputError(f"{self.series.path}: row {row} is outside the scan's {self.n_rows} slices")

    def read_many(self, rows: list[int]) -> dict[int, np.ndarray]:
        """The axial slices of ``rows`` (as :meth:`read_axial`; those not already kept are not kept).

        Raises:
            InputError: as :meth:`read_axial`.
        """
        return {r: self.read_axial(r, keep=False) for r in rows}

    def axial_for_qa(self, row: int) -> np.ndarray | None:
        """The slice for the QA picture, or None where the scan has none to show (no warning then).

        Raises:
            InputError: as :meth:`read_axial`.
        """
        return self.read_axial(row)

    def slice_file(self, row: int, stem: str) -> tuple[str, WriteFn]:
        """The export of row ``row``: its file name and a function that writes it (``stem``: the scan's
        export name, for formats whose slices have no file name of their own).

        Raises:
            InputError: the slice cannot be read again.
        """
        raise InputError(
            f"{self.series.path}: a {self.series.source} projection has no slice files to export"
        )

    def _read(self, row: int) -> np.ndarray:
        raise InputError(f"{self.series.path}: no slices to read for a {self.series.source} projection")


class DicomSlices(SliceReader):
    """One DICOM file per row."""

    has_series_choice = True

    def _read(self, row: int) -> np.ndarray:
        from l3edge import dicom

        return dicom.read_slice_hu(self.series.slice_files[row], self.series.archive)

    def slice_file(self, row: int, stem: str) -> tuple[str, WriteFn]:
        from l3edge.sources import open_source

        src_path = self.series.slice_files[row]
        source = open_source(src_path, self.series.archive)
        try:
            data = source.read_all(src_path)
        except OSError as exc:
            what = type(exc).__name__
            raise InputError(f"{src_path}: cannot be read again for the export ({what})") from exc
        finally:
            source.close()
        name = PurePath(src_path.name).name  # the file's own name
        return ("slice" if name in ("", ".", "..") else name), lambda tmp: _write_bytes(tmp, data)


class NiftiSlices(SliceReader):
    """One slice along the NIfTI file's third axis per row."""

    def _read(self, row: int) -> np.ndarray:
        from l3edge import nifti

        return nifti.read_slice_hu(self.series.path, self.series.slice_index[row])

    def read_many(self, rows: list[int]) -> dict[int, np.ndarray]:
        from l3edge import nifti

        for r in rows:
            self._check_row(r)
        todo = [r for r in rows if r not in self._axial]
        by_k = nifti.read_slices_hu(self.series.path, [self.series.slice_index[r] for r in todo])
        got = {r: by_k[self.series.slice_index[r]] for r in todo}
        return {r: self._axial[r] if r in self._axial else got[r] for r in rows}

    def slice_file(self, row: int, stem: str) -> tuple[str, WriteFn]:
        from l3edge import nifti

        k = self.series.slice_index[row]
        return f"{stem}_slice{k}.nii.gz", lambda tmp: nifti.write_slice(self.series.path, k, tmp)


class NoSlices(SliceReader):
    """An in-memory projection: its rows have no slices behind them."""

    has_slices = False

    def __init__(self, series: SeriesInfo, quiet: bool = False) -> None:
        super().__init__(series)
        self.quiet = quiet
        """The QA picture shows the MIP alone without a warning (a phantom's projection)."""

    def axial_for_qa(self, row: int) -> np.ndarray | None:
        return None if self.quiet else self.read_axial(row)


def slice_reader(series: SeriesInfo) -> SliceReader:
    """The reader of ``series``'s slices, by the reader that made it (``SeriesInfo.source``)."""
    if series.source == "dicom":
        return DicomSlices(series)
    if series.source == "nifti":
        return NiftiSlices(series)
    return NoSlices(series, quiet=series.source == "phantom")


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
