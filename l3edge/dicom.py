"""DICOM folder or zip archive -> candidate series -> frontal MIP, streaming one slice at a time.

Two passes: (1) every file is parsed up to its pixel data (``l3edge.dicom_header``), giving a small header
record per image file; the qualifying axial CT series (``dicom_select``) are split into candidates and
ordered by preference (``dicom_choice``); (2) a candidate's slices are decoded on every core and each
reduced to its MIP row at once (``dicom_decode``), so memory never grows with the volume. A candidate is
read only when asked for: the locator reads them in preference order until the choice is made.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from l3edge.dicom_choice import Candidate, Traits, split_series, traits
from l3edge.dicom_decode import check_decodable, read_pixels, read_rows
from l3edge.dicom_header import quiet, read_header, scan_headers
from l3edge.dicom_select import Stack, qualifying_series, stack_series
from l3edge.errors import InputError
from l3edge.hucheck import check_hu
from l3edge.orientation import canonical_slice, in_plane
from l3edge.series import Projection, SeriesInfo
from l3edge.sources import Source, open_source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Part:
    """A candidate whose slices are ordered and checked (readable)."""

    candidate: Candidate
    stack: Stack
    traits: Traits


class DicomScan:
    """The candidates of one DICOM folder or zip archive, most preferred first; each read on demand."""

    def __init__(
        self,
        path: Path,
        source: Source,
        parts: list[Part],
        warnings: list[str],
        header_ms: float,
        forced: bool,
    ) -> None:
        self.path = path
        self.source = source
        self.parts = parts
        """Readable candidates in preference order (``dicom_choice``)."""
        self.warnings = tuple(warnings)
        """Scan-level warnings (damaged files skipped, a series split, a candidate unusable)."""
        self.header_ms = header_ms
        """Time the header pass took."""
        self.forced = forced
        """The series was forced (``--series UID``)."""

    def read(
        self,
        index: int,
        threads: int | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> Projection:
        """Frontal MIP of candidate ``index``, decoded with ``threads`` threads (None: every CPU).

        Raises:
            InputError: a slice cannot be decoded, or the values are not HU.
        """
        t0 = time.perf_counter()
        part = self.parts[index]
        stack = part.stack
        for ts in sorted({h.transfer_syntax for h in stack.headers}):
            check_decodable(self.path, ts)
        geo = in_plane(stack.col_dir, stack.row_dir)  # array axis 0 runs along the column direction
        rows = read_rows(stack.headers, self.source, geo, threads, on_progress)
        check_hu(self.path, rows.air_samples)
        t1 = time.perf_counter()
        n, ms = len(stack.headers), 1e3 * (t1 - t0)
        log.debug("%s: %s: %d slices read in %.0f ms", self.path, part.candidate.label, n, ms)
        info = SeriesInfo(
            source="dicom",
            path=self.path,
            series_instance_uid=part.candidate.series_uid,
            slice_files=tuple(h.path for h in stack.headers),
            slice_index=stack.slice_index,
            instance_numbers=tuple(h.instance_number for h in stack.headers),
            sop_instance_uids=tuple(h.sop_uid for h in stack.headers),
            warnings=self.warnings + stack.warnings + rows.warnings,
            archive=self.source.archive,
            part=part.candidate.part,
        )
        return Projection(
            mip_hu=rows.mip_hu,
            z_mm=stack.z_mm,
            col_spacing_mm=stack.col_spacing_mm,
            series=info,
            timings_ms={"read_mip": 1e3 * (t1 - t0)},
        )

    def close(self) -> None:
        self.source.close()


def open_scan(path: Path, series_uid: str | None = None) -> DicomScan:
    """Parse every header under ``path`` (a folder or a zip archive) and list the candidate series.

    Raises:
        InputError: nothing usable (no DICOM images, no axial CT series, every candidate unusable), or a
            forced series that is absent or unusable.
    """
    t0 = time.perf_counter()
    source = Source.open(path)
    try:
        headers, n_files, damaged, skipped = scan_headers(source)
        counts = (n_files, len(headers), damaged, skipped)
        log.debug("%s: %d files, %d DICOM images, %d damaged, %d skipped", path, *counts)
        series, warn, n_series = qualifying_series(path, headers, series_uid, n_files, damaged, skipped)
        parts: list[Part] = []
        rejected: list[tuple[Candidate, InputError]] = []
        for uid, hs in series:
            pieces = split_series(hs)
            if len(pieces) > 1:
                what = "acquisitions" if all(str(n).startswith("acq") for n, _ in pieces) else "stacks"
                warn.append(
                    f"series {uid} holds {len(pieces)} {what} that overlap in z; each is read as a "
                    "candidate of its own"
                )
            for name, piece in pieces:
                cand = Candidate(uid, name, tuple(piece))
                try:
                    stack = stack_series(path, piece, [])
                except InputError as exc:
                    rejected.append((cand, exc))
                    continue
                parts.append(Part(cand, stack, traits(stack)))
        if not parts:
            raise rejected[0][1]  # the only (or first) series' own error, as for a single series
        parts.sort(key=lambda p: p.traits.key(p.candidate.label))
        for cand, err in rejected:
            text = str(err).removeprefix(f"{path}: ")
            warn.append(f"candidate series {cand.label} ({len(cand.headers)} slices) is unusable: {text}")
    except BaseException:
        source.close()
        raise
    log.info(
        "%s: %d candidate series out of %d series (%s first)",
        path,
        len(parts),
        n_series,
        parts[0].candidate.label,
    )
    return DicomScan(path, source, parts, warn, 1e3 * (time.perf_counter() - t0), series_uid is not None)


def read_projection(
    path: Path,
    series_uid: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    threads: int | None = None,
) -> Projection:
    """Frontal MIP of the most preferred candidate series under ``path``, chosen by headers only (no model;
    ``L3Locator.predict`` compares candidates by content). See ``l3edge.scan.read_projection``."""
    scan = open_scan(path, series_uid)
    try:
        proj = scan.read(0, threads=threads, on_progress=on_progress)
    finally:
        scan.close()
    if len(scan.parts) > 1 and proj.series is not None:
        from dataclasses import replace

        note = (
            f"{len(scan.parts)} candidate series; read {scan.parts[0].candidate.label}, the one preferred by "
            "its headers (l3edge predict compares them by content)"
        )
        proj = replace(proj, series=replace(proj.series, warnings=(*proj.series.warnings, note)))
    proj.timings_ms["read_mip"] += scan.header_ms
    return proj


def read_slice_hu(path: Path, archive: Path | None = None) -> np.ndarray:
    """One slice file (a zip member when ``archive`` is given) as HU float32, rows anterior -> posterior,
    columns patient right -> left."""
    source = open_source(path, archive)
    try:
        with quiet():
            try:
                h = read_header(path, source)
            except OSError as exc:
                raise InputError(f"{path}: cannot be read ({type(exc).__name__})") from exc
            if h is None or h.iop is None:
                raise InputError(f"{path}: not a DICOM image with ImageOrientationPatient")
            check_decodable(path, h.transfer_syntax)
            geo = in_plane(np.asarray(h.iop[3:]), np.asarray(h.iop[:3]))
            px, _ = read_pixels(h, source)
    finally:
        source.close()
    hu = px.astype(np.float32) * np.float32(h.slope) + np.float32(h.intercept)
    return canonical_slice(hu, geo)
