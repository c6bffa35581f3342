"""Which DICOM series may be read and in what order: pure logic on header records (no pydicom, no I/O).

Qualifying series: among the series found, keep axial CT image series with more than one slice (drop
localizers, other modalities, secondary captures, colour or multi-frame images, sagittal/coronal reformats
and gantry-tilted stacks); ``l3edge.dicom_choice`` picks among them. Order: by position along the slice normal
(ImagePositionPatient . (row_dir x col_dir)), never by file name or InstanceNumber, which exports
often scramble. Spacing comes from those positions, not from SliceThickness (thickness != spacing for
overlapping reconstructions).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from l3edge.errors import InputError
from l3edge.numeric import median
from l3edge.orientation import AXIAL_LIMIT_DEG, MAX_INPLANE_DEG, MAX_TILT_DEG, in_plane, tilt_deg

log = logging.getLogger(__name__)

MAX_PIXELS = 8192 * 8192
"""Largest slice matrix read; bigger headers are damaged or not CT."""
DUPLICATE_MM = 0.01
"""Slices closer than this along the normal are the same position."""
GAP_WARN = 1.5
"""A step above this many median spacings is a gap (warning) ..."""
GAP_MAX = 3.05
"""... and above this many the series is unusable."""
STEP_MIN = 0.25
"""A step below this fraction of the median spacing makes the spacing too uneven to trust."""
_SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage and its multi-frame variants
_SOFT = ("modality", "secondary capture", "localizer")  # reasons that --series may override


@dataclass(frozen=True)
class Header:
    """What l3edge keeps from one DICOM image file's header: geometry and pixel format, no patient data."""

    path: Path
    series_uid: str
    sop_uid: str | None
    instance_number: int | None
    modality: str
    sop_class: str
    image_type: tuple[str, ...]
    iop: tuple[float, ...] | None
    """ImageOrientationPatient: row direction (x, y, z) then column direction."""
    ipp: tuple[float, ...] | None
    """ImagePositionPatient: LPS position of the first pixel's centre."""
    spacing: tuple[float, ...] | None
    """PixelSpacing: (between rows, between columns) in mm."""
    rows: int
    cols: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    samples: int
    photometric: str
    frames: int
    slope: float
    intercept: float
    transfer_syntax: str
    pixel_offset: int | None
    """Byte offset of uncompressed little-endian pixel values, or of the encapsulated items, in the file
    (None: decode the whole dataset with pydicom)."""
    pixel_length: int | None
    """Length of the pixel data element in bytes (None when unknown or encapsulated)."""
    encapsulated: bool = False
    """Compressed frames (``pixel_offset`` is then where the encapsulated items start)."""
    acquisition_number: int | None = None
    series_number: int | None = None
    kernel: str = ""
    """ConvolutionKernel (values joined with a backslash)."""
    series_description: str = ""
    """SeriesDescription: used only to recognise the contrast phase and kernel, never logged."""
    slice_thickness: float | None = None
    contrast_agent: bool = False
    """ContrastBolusAgent is present and not empty."""


@dataclass(frozen=True)
class Stack:
    """The chosen series in MIP row order (superior -> inferior) with its geometry."""

    headers: tuple[Header, ...]
    z_mm: np.ndarray
    slice_index: tuple[int, ...]
    row_dir: np.ndarray
    col_dir: np.ndarray
    col_spacing_mm: float
    warnings: tuple[str, ...]


def _reasons(hs: list[Header]) -> tuple[str | None, bool]:
    """Why a series is not a usable axial CT series (None if it is), and whether it is derived."""
    first = hs[0]
    modality = Counter(h.modality for h in hs).most_common(1)[0][0]
    if modality != "CT":
        return f"modality {modality or 'missing'}", False
    if any(h.sop_class.startswith(_SC_CLASS) for h in hs):
        return "secondary capture", False
    if any("LOCALIZER" in h.image_type for h in hs):
        return "localizer", False
    if first.samples != 1 or not first.photometric.startswith("MONOCHROME"):
        return f"colour image ({first.photometric}, {first.samples} samples per pixel)", False
    if first.bits_allocated not in (8, 16, 32):
        return f"{first.bits_allocated}-bit pixels", False
    if any(h.frames > 1 for h in hs):
        return "multi-frame image", False
    if len(hs) < 2:
        return "single slice", False
    iop = next((h.iop for h in hs if h.iop is not None), None)
    if iop is not None:
        normal = np.cross(iop[:3], iop[3:])
        if np.linalg.norm(normal) > 1e-6:
            t = tilt_deg(normal)
            if t > AXIAL_LIMIT_DEG:
                return "sagittal/coronal reformat", False
            if t > MAX_TILT_DEG:
                return f"gantry tilt {t:.1f} deg", False
    derived = "DERIVED" in first.image_type and "SECONDARY" in first.image_type
    return None, derived


def qualifying_series(
    folder: Path, headers: list[Header], series_uid: str | None, n_files: int, damaged: int, skipped: int
) -> tuple[list[tuple[str, list[Header]]], list[str], int]:
    """The axial CT series that may hold L3 (every usable one, or the one forced by ``series_uid``).

    Returns (uid, headers) per series in UID order, warnings so far, and the number of series found.

    Raises:
        InputError: no image files, the forced series is absent or unusable, or no usable series.
    """
    groups: dict[str, list[Header]] = {}
    for h in headers:
        groups.setdefault(h.series_uid, []).append(h)
    warn: list[str] = []
    if damaged:
        warn.append(f"{damaged} damaged DICOM files were skipped")
    if not groups:
        extra = f", {damaged} with damaged DICOM headers" if damaged else ""
        extra += f", {skipped} unreadable entries" if skipped else ""
        what = "the folder is empty" if n_files == 0 and not skipped else f"{n_files} files looked at{extra}"
        raise InputError(f"{folder}: no DICOM image files found ({what}); give the folder of a CT series")
    judged = {uid: _reasons(hs) for uid, hs in groups.items()}
    if series_uid is not None:
        if series_uid not in groups:
            raise InputError(
                f"{folder}: no series with SeriesInstanceUID {series_uid} among the "
                f"{len(groups)} series found; leave out --series to pick one automatically"
            )
        reason, _ = judged[series_uid]
        if reason is not None and not reason.startswith(_SOFT):
            raise InputError(
                f"{folder}: series {series_uid} is not usable: {reason}; l3edge needs axial "
                "CT slices perpendicular to the patient z axis"
            )
        if reason is not None:
            warn.append(f"series forced with --series although it is a {reason}")
        return [(series_uid, groups[series_uid])], warn, len(groups)
    usable = [uid for uid, (r, derived) in judged.items() if r is None and not derived]
    if not usable:
        usable = [uid for uid, (r, _) in judged.items() if r is None]
        if usable:
            warn.append("only derived (DERIVED\\SECONDARY) axial CT series found; using them")
    if not usable:
        counts = Counter(r for r, _ in judged.values())
        if len(groups) == 1:
            ((uid, hs),) = groups.items()
            raise InputError(
                f"{folder}: the only DICOM series ({len(hs)} files) is not usable: "
                f"{judged[uid][0]}; l3edge needs an axial CT series of 2 or more slices"
            )
        summary = ", ".join(f"{n} {r}" for r, n in sorted(counts.items(), key=lambda kv: str(kv[0])))
        raise InputError(
            f"{folder}: none of the {len(groups)} DICOM series is a usable axial CT series "
            f"({summary}); l3edge needs an axial CT series of 2 or more slices"
        )
    return [(uid, groups[uid]) for uid in sorted(usable)], warn, len(groups)


def _check_uniform(folder: Path, hs: list[Header]) -> None:
    n = len(hs)
    for label, attr in (
        ("ImagePositionPatient", "ipp"),
        ("ImageOrientationPatient", "iop"),
        ("PixelSpacing", "spacing"),
    ):
        missing = sum(getattr(h, attr) is None for h in hs)
        if missing:
            raise InputError(
                f"{folder}: {missing} of {n} slices have no valid {label}; the series cannot be "
                "placed in patient space"
            )
    sizes = Counter((h.rows, h.cols) for h in hs)
    if len(sizes) > 1:
        desc = ", ".join(f"{r}x{c} in {k}" for (r, c), k in sizes.most_common())
        raise InputError(f"{folder}: slices have mixed matrix sizes ({desc}); give a series of one size")
    formats = Counter((h.bits_allocated, h.samples, h.photometric.startswith("MONOCHROME")) for h in hs)
    if len(formats) > 1:
        raise InputError(
            f"{folder}: slices have mixed pixel formats (bits allocated, samples per pixel, "
            "photometric interpretation); the series is damaged or mixes several exports"
        )
    r, c = hs[0].rows, hs[0].cols
    if r < 1 or c < 1 or r * c > MAX_PIXELS:
        raise InputError(
            f"{folder}: implausible slice matrix {r}x{c} in the DICOM header; the files are damaged"
        )
    ref_iop, ref_sp = np.asarray(hs[0].iop), np.asarray(hs[0].spacing)
    if any(np.abs(np.asarray(h.iop) - ref_iop).max() > 1e-3 for h in hs):
        raise InputError(f"{folder}: slices have different orientations; give a series of parallel slices")
    if any(np.abs(np.asarray(h.spacing) - ref_sp).max() > 1e-3 for h in hs):
        raise InputError(f"{folder}: slices have different PixelSpacing; give a series of one pixel size")
    if not (ref_sp > 0).all():
        raise InputError(f"{folder}: PixelSpacing {tuple(ref_sp)} is not positive; the header is damaged")


def stack_series(folder: Path, hs: list[Header], warn: list[str]) -> Stack:
    """Order the chosen series' slices superior -> inferior and check its geometry.

    Raises:
        InputError: missing or inconsistent geometry, tilt, large gaps or wildly uneven spacing.
    """
    _check_uniform(folder, hs)
    iop = np.asarray(hs[0].iop, dtype=np.float64)
    ref_spacing = np.asarray(hs[0].spacing, dtype=np.float64)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    if np.linalg.norm(normal) < 1e-3:
        raise InputError(f"{folder}: ImageOrientationPatient has parallel row and column directions")
    normal = normal / np.linalg.norm(normal)
    tilt = tilt_deg(normal)
    if tilt > MAX_TILT_DEG:
        kind = "sagittal/coronal" if tilt > AXIAL_LIMIT_DEG else f"tilted by {tilt:.1f} deg (gantry tilt)"
        raise InputError(
            f"{folder}: slices are {kind}, not axial; resample the series to axial slices "
            "perpendicular to the patient z axis"
        )
    geo = in_plane(col_dir, row_dir)
    if geo.rotation_deg > MAX_INPLANE_DEG:
        raise InputError(
            f"{folder}: images are rotated {geo.rotation_deg:.0f} deg in plane; l3edge needs "
            "rows/columns along the patient's left-right and front-back axes"
        )
    if tilt > 0.5:
        warn.append(f"gantry tilt of {tilt:.1f} deg ignored")
    pos = np.array([h.ipp for h in hs], dtype=np.float64)  # all present: checked above
    d = pos @ normal
    # Superior first: z descending. Along +normal z grows when normal.z > 0, so sort by -d then.
    key = -d if normal[2] > 0 else d
    order = sorted(range(len(hs)), key=lambda i: (key[i], str(hs[i].path)))
    kept = [order[0]]
    for i in order[1:]:
        if abs(d[i] - d[kept[-1]]) >= DUPLICATE_MM:
            kept.append(i)
    if len(kept) < len(order):
        warn.append(f"{len(order) - len(kept)} slices repeat the position of another slice and were dropped")
    if len(kept) < 2:
        raise InputError(f"{folder}: all {len(hs)} slices are at one position; the series is unusable")
    steps = np.abs(np.diff(d[kept]))
    med = median(steps)
    z = pos[kept, 2]
    worst = int(np.argmax(steps))
    if steps[worst] > GAP_MAX * med:
        raise InputError(
            f"{folder}: series is unusable: a gap of {steps[worst]:.1f} mm between z={z[worst]:.1f} "
            f"and z={z[worst + 1]:.1f} mm is over 3x the median slice spacing ({med:.2f} mm); "
            "export the complete series"
        )
    if steps.min() < STEP_MIN * med:
        raise InputError(
            f"{folder}: series is unusable: slice spacing is wildly uneven ({steps.min():.2f} to "
            f"{steps.max():.2f} mm); export a series with regular spacing"
        )
    for g in np.flatnonzero(steps > GAP_WARN * med):
        warn.append(
            f"gap of {steps[g]:.1f} mm (about {round(steps[g] / med) - 1} missing slices) between "
            f"z={z[g]:.1f} and z={z[g + 1]:.1f} mm"
        )
    if not np.all(np.diff(z) < 0):
        raise InputError(f"{folder}: slice z positions are not monotonic; the series is unusable")
    # slice_index counts in z-ascending order (feet -> head); rows are z-descending.
    n = len(kept)
    for w in warn:
        log.info("%s: %s", folder, w)
    return Stack(
        headers=tuple(hs[i] for i in kept),
        z_mm=z,
        slice_index=tuple(range(n - 1, -1, -1)),
        row_dir=row_dir,
        col_dir=col_dir,
        col_spacing_mm=float(ref_spacing[1] if geo.x_axis == 1 else ref_spacing[0]),
        warnings=tuple(warn),
    )
