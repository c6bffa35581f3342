"""NIfTI file -> frontal MIP. The only module importing nibabel (optional: ``pip install "l3edge[nifti]"``).

NIfTI maps voxels to RAS+ (+x towards the patient's right, +y anterior); DICOM and l3edge use LPS (+x
left, +y posterior). We convert with LPS = diag(-1, -1, 1) . RAS, so a physical point gets the same z as
in DICOM.
The slice axis must be the file's third axis and run along z; the in-plane axes may be flipped or swapped.
Slices are read a chunk at a time along the third axis (``dataobj`` slicing), so memory stays small even
for gzipped files (kept open, read forwards once).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from l3edge.errors import InputError
from l3edge.hucheck import check_hu
from l3edge.orientation import MAX_INPLANE_DEG, MAX_TILT_DEG, canonical_slice, in_plane, mip_row, tilt_deg
from l3edge.series import Projection, SeriesInfo

log = logging.getLogger(__name__)

_CHUNK = 16
"""Slices read per dataobj access."""
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
_MAX_VOXELS = 4096 * 4096 * 8192


def is_nifti(path: Path) -> bool:
    """True when the file name says NIfTI (.nii or .nii.gz)."""
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _nibabel() -> ModuleType:
    try:
        import nibabel
    except ImportError as exc:
        raise InputError('reading NIfTI files needs nibabel: pip install "l3edge[nifti]"') from exc
    return nibabel


def _load(path: Path) -> tuple[Any, tuple[int, int, int], np.ndarray]:
    """Open the image; return it, its 3D shape and the voxel -> LPS affine (4x4)."""
    nib = _nibabel()
    try:
        with nib.imageglobals.LoggingOutputSuppressor():  # nibabel prints header fixes to stderr itself
            img = nib.load(str(path), keep_file_open=True)
        shape = tuple(int(s) for s in img.shape)
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as exc:  # nibabel raises many types on damaged files
        raise InputError(
            f"{path}: not a readable NIfTI file ({type(exc).__name__}: "
            f"{str(exc)[:100]}); check the file is complete"
        ) from exc
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise InputError(f"{path}: not a NIfTI-1/2 image ({type(img).__name__})")
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise InputError(f"{path}: NIfTI image is {len(shape)}D {shape}; l3edge needs one 3D CT volume")
    if min(shape) < 1 or shape[0] * shape[1] * shape[2] > _MAX_VOXELS:
        raise InputError(f"{path}: implausible NIfTI shape {shape}; the header is damaged")
    if shape[2] < 2:
        raise InputError(f"{path}: NIfTI volume has a single slice; l3edge needs a 3D CT volume")
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise InputError(f"{path}: NIfTI affine is missing or not finite; the header is damaged")
    m = affine.copy()
    m[:3] = _RAS_TO_LPS @ affine[:3]
    if min(np.linalg.norm(m[:3, i]) for i in range(3)) < 1e-6:
        raise InputError(f"{path}: NIfTI voxel sizes are zero; the header is damaged")
    return img, shape, m


def _geometry(path: Path, m: np.ndarray) -> Any:
    slice_dir = m[:3, 2]
    t = tilt_deg(slice_dir)
    if t > MAX_TILT_DEG:
        raise InputError(
            f"{path}: the NIfTI third axis is {t:.0f} deg from the patient z axis; l3edge needs "
            "axial slices along the third axis (reorient, e.g. with fslreorient2std)"
        )
    geo = in_plane(m[:3, 0], m[:3, 1])
    if geo.rotation_deg > MAX_INPLANE_DEG:
        raise InputError(
            f"{path}: NIfTI in-plane axes are rotated {geo.rotation_deg:.0f} deg from patient "
            "x/y; reorient the volume first"
        )
    return geo


def _chunk(img: Any, path: Path, k0: int, k1: int, ndim4: bool) -> np.ndarray:
    try:
        with _nibabel().imageglobals.LoggingOutputSuppressor():
            block = img.dataobj[:, :, k0:k1, 0] if ndim4 else img.dataobj[:, :, k0:k1]
            block = np.asarray(block)
    except Exception as exc:  # truncated or corrupt data blocks
        raise InputError(
            f"{path}: NIfTI voxel data cannot be read ({type(exc).__name__}); the file is "
            "truncated or damaged"
        ) from exc
    if block.dtype.kind not in "iuf" or block.ndim != 3:
        raise InputError(f"{path}: NIfTI voxel type {block.dtype} is not a grey-level CT volume")
    if block.dtype.kind == "f":
        block = np.nan_to_num(block, nan=-1024.0, posinf=-1024.0, neginf=-1024.0)
    return block


def read_projection(path: Path, on_progress: Callable[[int, int], None] | None = None) -> Projection:
    """Frontal MIP of a NIfTI CT volume (see ``l3edge.scan.read_projection``)."""
    t0 = time.perf_counter()
    img, shape, m = _load(path)
    geo = _geometry(path, m)
    nz = shape[2]
    z = m[2, 2] * np.arange(nz) + m[2, 3]  # LPS z of voxel (0, 0, k)
    ndim4 = len(img.shape) == 4
    rows = np.empty((nz, shape[geo.x_axis]), dtype=np.float32)
    step = max(1, nz // 24)  # about 24 slices give a sparse pixel sample (64 x 64) for the HU check
    grid = max(1, min(shape[0], shape[1]) // 64)
    samples = []
    for k0 in range(0, nz, _CHUNK):
        k1 = min(nz, k0 + _CHUNK)
        block = _chunk(img, path, k0, k1, ndim4)
        for k in range(k0, k1):
            rows[k] = mip_row(block[:, :, k - k0], geo)
            if k % step == 0:
                samples.append(np.asarray(block[::grid, ::grid, k - k0], dtype=np.float32).ravel())
        if on_progress is not None:
            on_progress(k1, nz)
    check_hu(path, np.concatenate(samples))
    order = np.argsort(-z, kind="stable")  # superior first
    zs = z[order]
    if not np.all(np.diff(zs) < 0):
        raise InputError(
            f"{path}: NIfTI slices are not spread along z (slice spacing 0); the header is damaged"
        )
    warn: tuple[str, ...] = ()
    if int(img.header["sform_code"]) == 0 and int(img.header["qform_code"]) == 0:
        warn = ("NIfTI has no qform/sform: orientation assumed from voxel sizes only",)
    info = SeriesInfo(
        source="nifti",
        path=path,
        series_instance_uid=None,
        slice_files=(),
        slice_index=tuple(int(k) for k in order),
        instance_numbers=(None,) * nz,
        sop_instance_uids=(None,) * nz,
        warnings=warn,
    )
    t1 = time.perf_counter()
    log.info("read NIfTI %s: %s voxels, %d slices", path, shape, nz)
    return Projection(
        mip_hu=rows[order],
        z_mm=zs.astype(np.float64),
        col_spacing_mm=float(np.linalg.norm(m[:3, geo.x_axis])),
        series=info,
        timings_ms={"read_mip": 1e3 * (t1 - t0)},
    )


def read_slice_hu(path: Path, k: int) -> np.ndarray:
    """Slice ``k`` along the file's third axis as HU float32, rows anterior -> posterior, columns R -> L."""
    img, shape, m = _load(path)
    geo = _geometry(path, m)
    if not 0 <= k < shape[2]:
        raise InputError(f"{path}: slice {k} is outside the volume (0..{shape[2] - 1})")
    block = _chunk(img, path, k, k + 1, len(img.shape) == 4)
    return canonical_slice(block[:, :, 0].astype(np.float32), geo)


def read_slices_hu(path: Path, ks: list[int], max_gap: int = 16) -> dict[int, np.ndarray]:
    """Slices ``ks`` as :func:`read_slice_hu`, the file opened once and each run of nearby slices (gaps up to
    ``max_gap``) read as one block: a .nii.gz is decompressed from its start for every block read."""
    img, shape, m = _load(path)
    geo = _geometry(path, m)
    want = sorted(set(ks))
    if want and not (want[0] >= 0 and want[-1] < shape[2]):
        raise InputError(f"{path}: slices {want[0]}..{want[-1]} are outside the volume (0..{shape[2] - 1})")
    out: dict[int, np.ndarray] = {}
    i = 0
    while i < len(want):
        j = i
        while j + 1 < len(want) and want[j + 1] - want[j] <= max_gap:
            j += 1
        block = _chunk(img, path, want[i], want[j] + 1, len(img.shape) == 4)
        for k in want[i : j + 1]:
            out[k] = canonical_slice(block[:, :, k - want[i]].astype(np.float32), geo)
        i = j + 1
    return out


def write_slice(path: Path, k: int, out: Path) -> None:
    """Write slice ``k`` (along the file's third axis) of the NIfTI at ``path`` as a 2D NIfTI at ``out``: the
    same voxel values, and the affine of that slice (voxel (i, j) maps to where voxel (i, j, k) was).

    Raises:
        InputError: the source cannot be read or ``k`` is out of range.
        OSError: ``out`` cannot be written.
    """
    nib = _nibabel()
    img, shape, _ = _load(path)
    if not 0 <= k < shape[2]:
        raise InputError(f"{path}: slice {k} is outside the volume (0..{shape[2] - 1})")
    plane = np.asarray(_chunk(img, path, k, k + 1, len(img.shape) == 4)[:, :, 0])
    affine = np.asarray(img.affine, dtype=np.float64).copy()
    affine[:3, 3] = affine[:3, :3] @ np.array([0.0, 0.0, float(k)]) + affine[:3, 3]
    hdr = img.header.copy()
    hdr.set_data_dtype(plane.dtype)
    out_img = type(img)(plane, affine, header=hdr)
    out_img.header.set_slope_inter(1.0, 0.0)  # values are already scaled
    out_img.set_qform(affine, code=max(1, int(img.header["qform_code"])))
    out_img.set_sform(affine, code=max(1, int(img.header["sform_code"])))
    with nib.imageglobals.LoggingOutputSuppressor():
        nib.save(out_img, str(out))
