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
from PIL import Image

from l3edge.errors import InputError
from l3edge.result import L3Result
from l3edge.series import SeriesInfo

SOFT_TISSUE_HU = (40.0 - 200.0, 40.0 + 200.0)
"""Window of the PNG: W400/L40."""


def scan_name(path: str) -> str:
    """The folder name of a scan's export: its base name without .zip / .nii / .nii.gz, made file-safe."""
    name = PurePath(path.rstrip("/\\")).name or "scan"
    name = re.sub(r"(\.nii(\.gz)?|\.zip)$", "", name, flags=re.IGNORECASE)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip(".") or "scan"


def _own_name(name: str) -> str:
    """A slice file's own name (a base name already); only names a folder cannot hold are replaced."""
    name = PurePath(name).name
    return "slice" if name in ("", ".", "..") else name


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


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def slice_png(hu: np.ndarray, out: Path) -> Path:
    """Save an axial slice (HU, rows anterior -> posterior, columns patient right -> left) as an 8-bit PNG."""
    lo, hi = SOFT_TISSUE_HU
    v = np.clip((np.asarray(hu, dtype=np.float32) - lo) / (hi - lo), 0.0, 1.0)
    img = Image.fromarray((v * 255.0 + 0.5).astype(np.uint8), mode="L")
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
) -> Path | None:
    """Export the chosen slice of ``result`` (None when L3 was not found: nothing is written).

    Args:
        result: a result whose slice fields are set.
        series: ``Projection.series`` of the scan it came from.
        out_dir: the export folder; the slice goes into ``out_dir/<scan name>[/<subfolder>]/``.
        neighbours: also export this many slices on each side (those that exist).
        subfolder: one more folder level (one per series with ``--series all``).
        read_hu: reads one slice in HU for the PNG (default ``l3edge.scan.read_axial_slice``).

    Returns:
        The exported file of the chosen slice.

    Raises:
        InputError: the slice cannot be read again from the scan.
        OSError: the export folder cannot be written.
    """
    if not result.found or result.slice_index is None:
        return None
    if read_hu is None:
        from l3edge.scan import read_axial_slice

        read_hu = read_axial_slice
    row = _row_of(result, series)
    folder = Path(out_dir) / scan_name(result.path)
    if subfolder:
        folder = folder / re.sub(r"[^A-Za-z0-9._-]+", "_", subfolder)
    folder.mkdir(parents=True, exist_ok=True)
    n = len(series.slice_index)
    rows = range(max(0, row - neighbours), min(n, row + neighbours + 1))
    chosen: Path | None = None
    used: set[str] = set()
    for r in sorted(rows, key=lambda r: r != row):  # the chosen slice first
        out = _export_one(series, r, folder, used)
        if r == row:
            chosen = out
            stem = out.name.removesuffix(".gz").removesuffix(".nii").removesuffix(".dcm")
            slice_png(read_hu(series, r), folder / f"{stem}.png")
    assert chosen is not None
    return chosen


def _export_one(series: SeriesInfo, row: int, folder: Path, used: set[str]) -> Path:
    if series.source == "dicom":
        from l3edge.sources import open_source

        src_path = series.slice_files[row]
        source = open_source(src_path, series.archive)
        try:
            data = source.read_all(src_path)
        except OSError as exc:
            what = type(exc).__name__
            raise InputError(f"{src_path}: cannot be read again for the export ({what})") from exc
        finally:
            source.close()
        name = _own_name(src_path.name)
        if name in used:  # two slices of one series with the same file name (in different folders)
            name = f"{row:04d}_{name}"
        used.add(name)
        return _write_atomic(folder / name, lambda tmp: _write_bytes(tmp, data))
    if series.source == "nifti":
        from l3edge import nifti

        k = series.slice_index[row]
        out = folder / f"{scan_name(str(series.path))}_slice{k}.nii.gz"
        return _write_atomic(out, lambda tmp: nifti.write_slice(series.path, k, tmp))
    raise InputError(f"{series.path}: a {series.source} projection has no slice files to export")
