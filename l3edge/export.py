"""Hand the L3 slice on: copy it (and K neighbours) out of the scan for body-composition tools.

Per scan, into ``<export dir>/<scan name>/``:
- DICOM: the original file of the chosen slice, byte for byte under its own name (from a zip archive too),
  its ``K`` neighbours on each side the same way, and ``<file stem>.png``, the slice in a soft-tissue window
  (W400/L40);
- NIfTI: ``<stem>_slice<k>.nii.gz``, the slice as a 2D NIfTI with its affine, neighbours likewise, and a PNG.
Every file is written under a temporary name in the same folder and renamed into place, so an interrupted
export never leaves a partial file. A leaf: takes a result and its series, imports no model code.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from pathlib import Path, PurePath

import numpy as np

from l3edge.errors import InputError
from l3edge.gray import SOFT_TISSUE_HU, to_gray
from l3edge.result import L3Result
from l3edge.series import SeriesInfo
from l3edge.slices import SliceReader, slice_reader


def scan_name(path: str) -> str:
    """The folder name of a scan's export: its base name without .zip / .nii / .nii.gz, made file-safe."""
    name = PurePath(path.rstrip("/\\")).name or "scan"
    name = re.sub(r"(\.nii(\.gz)?|\.zip)$", "", name, flags=re.IGNORECASE)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip(".") or "scan"


def _write_atomic(out: Path, write: Callable[[Path], None]) -> Path:
    """Write ``out`` through ``write(tmp)`` on a temporary name beside it, then rename it into place."""
    suffix = "".join(out.suffixes[-2:]) if out.name.endswith(".nii.gz") else out.suffix
    tmp = out.with_name(f".{out.name}.part-{os.getpid()}{suffix}")
    try:
        write(tmp)
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return out


def slice_png(hu: np.ndarray, out: Path) -> Path:
    """Save an axial slice (HU, rows anterior -> posterior, columns patient right -> left) as an 8-bit PNG."""
    img = to_gray(hu, *SOFT_TISSUE_HU)
    return _write_atomic(out, lambda tmp: img.save(tmp, format="PNG"))


def _row_of(result: L3Result, series: SeriesInfo) -> int:
    try:
        return series.slice_index.index(int(result.slice_index))  # type: ignore[arg-type]
    except ValueError as exc:
        raise InputError(f"{result.path}: slice {result.slice_index} is not in the series read") from exc


def export_slice(
    result: L3Result,
    series: SeriesInfo,
    out_dir: str | os.PathLike[str],
    neighbours: int = 0,
    subfolder: str | None = None,
    read_hu: Callable[[SeriesInfo, int], np.ndarray] | None = None,
    slices: SliceReader | None = None,
) -> Path | None:
    """Export the chosen slice of ``result`` (None when L3 was not found: nothing is written).

    Args:
        result: a result whose slice fields are set.
        series: ``Projection.series`` of the scan it came from.
        out_dir: the export folder; the slice goes into ``out_dir/<scan name>[/<subfolder>]/``.
        neighbours: also export this many slices on each side (those that exist).
        subfolder: one more folder level (one per series with ``--series all``).
        read_hu: reads one slice in HU for the PNG (default: ``slices.read_axial``).
        slices: the reader of ``series``'s slices (default ``l3edge.slices.slice_reader(series)``); pass the
            one the QA picture used, and the chosen slice is not read twice.

    Returns:
        The exported file of the chosen slice.

    Raises:
        InputError: the slice cannot be read again from the scan.
        OSError: the export folder cannot be written.
    """
    if not result.found or result.slice_index is None:
        return None
    reader = slices if slices is not None else slice_reader(series)
    row = _row_of(result, series)
    folder = Path(out_dir) / scan_name(result.path)
    if subfolder:
        folder = folder / re.sub(r"[^A-Za-z0-9._-]+", "_", subfolder)
    folder.mkdir(parents=True, exist_ok=True)
    n = len(series.slice_index)
    rows = range(max(0, row - neighbours), min(n, row + neighbours + 1))
    chosen: Path | None = None
    used: set[str] = set()
    stem = scan_name(str(series.path))
    for r in sorted(rows, key=lambda r: r != row):  # the chosen slice first
        name, write = reader.slice_file(r, stem)
        if name in used:  # two slices of one series with the same file name (in different folders)
            name = f"{r:04d}_{name}"
        used.add(name)
        out = _write_atomic(folder / name, write)
        if r == row:
            chosen = out
            png = out.name.removesuffix(".gz").removesuffix(".nii").removesuffix(".dcm")
            hu = read_hu(series, r) if read_hu is not None else reader.read_axial(r)
            slice_png(hu, folder / f"{png}.png")
    assert chosen is not None
    return chosen
