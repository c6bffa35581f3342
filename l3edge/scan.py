"""Reading a scan: dispatch a path to the DICOM (folder or zip archive) or NIfTI reader.

``open_scan`` lists a scan's candidate series (several for a DICOM study holding more than one axial CT
series) without reading pixels; ``Scan.projection(i)`` reads one, once. ``read_projection`` is the
one-call form (the candidate preferred by its headers). This module imports neither pydicom nor nibabel
itself; each reader imports its own library on first use.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from l3edge.errors import InputError
from l3edge.nifti import is_nifti
from l3edge.series import Projection, SeriesInfo
from l3edge.slices import SliceReader, slice_reader
from l3edge.sources import is_zip

Progress = Callable[[int, int], None]


class Scan:
    """One scan opened for reading: its candidate series in preference order, each read at most once.

    ``L3Locator.predict`` takes a Scan as well as a path, and closes it when done.
    """

    def __init__(
        self,
        path: Path,
        labels: tuple[str, ...],
        described: tuple[str, ...],
        read: Callable[[int, int | None, Progress | None], Projection],
        close: Callable[[], None] = lambda: None,
        warnings: tuple[str, ...] = (),
        forced: bool = False,
        header_ms: float = 0.0,
        threads: int | None = None,
    ) -> None:
        self.path = path
        """The input path as given."""
        self.labels = labels
        """Per candidate: its SeriesInstanceUID (with the acquisition, for a split series) or file name."""
        self.described = described
        """Per candidate: slices, thickness, coverage, kernel, phase (what the preference order uses)."""
        self.warnings = warnings
        self.forced = forced
        """A series was forced with ``series_uid``."""
        self.header_ms = header_ms
        """Time spent listing the candidates (header pass)."""
        self.threads = threads
        """Decoding threads (None: every CPU)."""
        self._read = read
        self._close = close
        self._done: dict[int, Projection | InputError] = {}
        self._slices: dict[int, SliceReader | None] = {}

    @property
    def n_candidates(self) -> int:
        return len(self.labels)

    def projection(self, index: int = 0, on_progress: Progress | None = None) -> Projection:
        """Frontal MIP of candidate ``index`` (read on the first call, then kept).

        Raises:
            InputError: that candidate cannot be read (raised again on later calls).
        """
        if index not in self._done:
            try:
                self._done[index] = self._read(index, self.threads, on_progress)
            except InputError as exc:
                self._done[index] = exc
        out = self._done[index]
        if isinstance(out, InputError):
            raise out
        return out

    def slices(self, index: int = 0) -> SliceReader | None:
        """The reader of candidate ``index``'s slices, one per candidate: the QA picture and the export share
        it (and the axial slice it read). None for a projection without a series.

        Raises:
            InputError: that candidate cannot be read.
        """
        if index not in self._slices:
            series = self.projection(index).series
            self._slices[index] = slice_reader(series) if series is not None else None
        return self._slices[index]

    def prefetch(self) -> Scan:
        """Read the preferred candidate now (e.g. while a model loads); its error, if any, is kept."""
        with contextlib.suppress(InputError):
            self.projection(0)
        return self

    def close(self) -> None:
        self._close()

    def __enter__(self) -> Scan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_path(p: Path) -> None:
    if not p.exists():
        what = "is a broken symbolic link" if p.is_symlink() else "does not exist"
        raise InputError(f"{p}: path {what}; give a DICOM folder, a zip of one, or a .nii/.nii.gz file")


def open_scan(path: str | Path, series_uid: str | None = None, threads: int | None = None) -> Scan:
    """Open a CT scan and list its candidate series (no pixels read yet).

    Args:
        path: a folder holding DICOM files (searched recursively), a zip archive of one (read in place), or
            a NIfTI file (.nii / .nii.gz).
        series_uid: consider only this DICOM SeriesInstanceUID.
        threads: decoding threads (None: every CPU).

    Raises:
        InputError: the path does not exist or holds no usable CT scan (one line saying why).
    """
    p = Path(path)
    _check_path(p)
    if p.is_dir() or (not is_nifti(p) and is_zip(p)):
        from l3edge import dicom

        ds = dicom.open_scan(p, series_uid=series_uid)

        def read(i: int, n_threads: int | None, progress: Progress | None) -> Projection:
            return ds.read(i, threads=n_threads, on_progress=progress)

        return Scan(
            p,
            tuple(part.candidate.label for part in ds.parts),
            tuple(part.traits.describe() for part in ds.parts),
            read,
            ds.close,
            ds.warnings,
            forced=series_uid is not None,
            header_ms=ds.header_ms,
            threads=threads,
        )
    if is_nifti(p):
        if series_uid is not None:
            raise InputError(f"{p}: --series applies to DICOM folders, not to a NIfTI file")
        from l3edge import nifti

        def read_nifti(i: int, n_threads: int | None, progress: Progress | None) -> Projection:
            return nifti.read_projection(p, on_progress=progress)

        return Scan(p, (p.name,), ("NIfTI volume",), read_nifti, threads=threads)
    raise InputError(
        f"{p}: is a file but not NIfTI (.nii/.nii.gz) or a zip archive; for DICOM give the folder that "
        "holds the series, not one slice file"
    )


def read_projection(
    path: str | Path,
    series_uid: str | None = None,
    on_progress: Progress | None = None,
    threads: int | None = None,
) -> Projection:
    """Read a CT scan and return its frontal maximum intensity projection in HU.

    Args:
        path: a DICOM folder, a zip archive of one, or a NIfTI file (.nii / .nii.gz). With several
            candidate series the one preferred by its headers is read (``dicom_choice``); use
            ``L3Locator.predict`` to choose by content.
        series_uid: read this DICOM SeriesInstanceUID instead of picking one.
        on_progress: called as ``on_progress(slices_done, slices_total)`` while slices are read.
        threads: decoding threads (None: every CPU).

    Returns:
        The projection, rows superior -> inferior, columns patient right -> left, with its SeriesInfo.

    Raises:
        InputError: the path does not exist or holds no usable CT scan (one line saying why).
    """
    p = Path(path)
    _check_path(p)
    if p.is_dir() or (not is_nifti(p) and is_zip(p)):
        from l3edge import dicom

        return dicom.read_projection(p, series_uid=series_uid, on_progress=on_progress, threads=threads)
    with open_scan(p, series_uid, threads) as scan:
        return scan.projection(0, on_progress)


def read_axial_slice(series: SeriesInfo, row: int) -> np.ndarray:
    """One axial slice of a scan already read (``l3edge.slices.slice_reader(series).read_axial(row)``).

    Args:
        series: ``Projection.series`` of that scan.
        row: MIP row (0 = most superior slice).

    Returns:
        HU float32 [rows, cols]: rows anterior -> posterior, columns patient right -> left.

    Raises:
        InputError: the row is out of range or the file can no longer be read.
    """
    return slice_reader(series).read_axial(row)
