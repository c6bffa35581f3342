"""Synthetic CT series with real pydicom headers (and NIfTI copies of the same volume) for the reader tests.

A test volume is an int16 HU array ``hu[k, j, i]`` on a canonical LPS grid: k along +z (feet -> head),
j along +y (anterior -> posterior), i along +x (patient right -> left). Its expected frontal MIP is
``expected_mip(hu)``: max over j, rows superior first. ``write_series`` stores it with any axis-aligned
orientation (flipped or transposed rows/columns), so the reader must undo the storage to get that MIP back.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

X0, Y0, SX, SY = -30.0, -40.0, 0.75, 0.8
"""LPS position of voxel (i=0, j=0) and the in-plane spacings along x and y (mm)."""


@dataclass
class SeriesSpec:
    """What ``write_series`` wrote."""

    folder: Path
    uid: str
    files: list[Path]
    """Files in z-ascending slice order."""
    z: np.ndarray
    """z of each slice, ascending."""
    hu: np.ndarray
    sop_uids: list[str] = field(default_factory=list)


def make_volume(nz: int = 10, ny: int = 24, nx: int = 32, seed: int = 0) -> np.ndarray:
    """Random int16 HU volume [nz, ny, nx] (random so that any orientation mistake changes the MIP)."""
    rng = np.random.default_rng(seed)
    return rng.integers(-1024, 2500, size=(nz, ny, nx)).astype(np.int16)


def expected_mip(hu: np.ndarray) -> np.ndarray:
    """Frontal MIP in l3edge's convention: max over y, rows superior first, columns right -> left."""
    return hu.max(axis=1)[::-1].astype(np.float32)


def _axis(d: tuple[float, float, float]) -> tuple[int, int]:
    """(0 for x / 1 for y, sign) of an axis-aligned direction."""
    k = int(np.argmax(np.abs(d[:2])))
    return k, 1 if d[k] > 0 else -1


def stored_slice(
    plane: np.ndarray, row_dir: tuple, col_dir: tuple
) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """Store a canonical plane [ny, nx] with the given axis-aligned direction cosines.

    Returns the pixel array [rows, cols], PixelSpacing (between rows, between columns) and the (x, y) of
    the first pixel.
    """
    ny, nx = plane.shape
    size, step, origin = (nx, ny), (SX, SY), (X0, Y0)
    (ra, rs), (ca, cs) = _axis(row_dir), _axis(col_dir)
    c_idx = np.arange(size[ra]) if rs > 0 else np.arange(size[ra])[::-1]
    r_idx = np.arange(size[ca]) if cs > 0 else np.arange(size[ca])[::-1]
    pix = plane[np.ix_(r_idx, c_idx)] if ra == 0 else plane[np.ix_(c_idx, r_idx)].T
    first = [0.0, 0.0]
    first[ra] = origin[ra] + (0 if rs > 0 else (size[ra] - 1) * step[ra])
    first[ca] = origin[ca] + (0 if cs > 0 else (size[ca] - 1) * step[ca])
    return np.ascontiguousarray(pix), (step[ca], step[ra]), (first[0], first[1])


def write_series(
    folder: Path,
    hu: np.ndarray | None = None,
    *,
    dz: float = 2.5,
    z0: float = -100.0,
    z: list[float] | None = None,
    row_dir: tuple = (1, 0, 0),
    col_dir: tuple = (0, 1, 0),
    iop: tuple | None = None,
    uid: str | None = None,
    modality: str = "CT",
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    sop_class: str = CTImageStorage,
    transfer_syntax: str = ExplicitVRLittleEndian,
    names: str = "shuffled",
    slope: float = 1.0,
    intercept: float = -1024.0,
    patient: tuple[str, str, str] = ("ANON", "ANON", ""),
    seed: int = 0,
    extra: dict | None = None,
) -> SeriesSpec:
    """Write one series into ``folder`` (created). ``names``: shuffled | plain (no extension) | dcm.

    Instance numbers and file names are deliberately shuffled against z so that only positions order them.
    ``iop`` overrides the written ImageOrientationPatient (pixels stay as for row_dir/col_dir): for tilt
    and reformat tests. ``extra`` sets further header keywords on every slice.
    """
    hu = make_volume(seed=seed) if hu is None else hu
    folder.mkdir(parents=True, exist_ok=True)
    uid = uid or generate_uid()
    zs = list(z) if z is not None else [z0 + k * dz for k in range(hu.shape[0])]
    rnd = random.Random(seed)
    numbers = list(range(1, len(zs) + 1))
    rnd.shuffle(numbers)
    tags = [f"{rnd.getrandbits(40):010x}" for _ in zs]
    spec = SeriesSpec(folder=folder, uid=uid, files=[], z=np.asarray(zs), hu=hu)
    for k, zk in enumerate(zs):
        pix, spacing, (fx, fy) = stored_slice(hu[k % hu.shape[0]], row_dir, col_dir)
        stored = np.round((pix.astype(np.float64) - intercept) / slope).astype(np.int16)
        name = {"shuffled": f"IM{tags[k]}", "plain": f"{tags[k]}", "dcm": f"slice_{tags[k]}.dcm"}[names]
        path = folder / name
        sop = generate_uid()
        ds = _dataset(path, stored, sop, uid, sop_class, transfer_syntax)
        ds.Modality = modality
        ds.ImageType = list(image_type)
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = patient
        ds.InstanceNumber = numbers[k]
        ds.ImagePositionPatient = [fx, fy, zk]
        ds.ImageOrientationPatient = list(iop if iop is not None else (*row_dir, *col_dir))
        ds.PixelSpacing = list(spacing)
        ds.SliceThickness = abs(dz)
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        for key, value in (extra or {}).items():
            setattr(ds, key, value)
        _save(ds, path, transfer_syntax)
        spec.files.append(path)
        spec.sop_uids.append(sop)
    return spec


def _dataset(
    path: Path, stored: np.ndarray, sop: str, series_uid: str, sop_class: str, ts: str
) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian if ts not in (ImplicitVRLittleEndian,) else ts
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.1", series_uid
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = stored.tobytes()
    return ds


JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.57"
"""Written with imagecodecs (pydicom has no encoder for them without further plugins)."""


def encapsulate_with_imagecodecs(ds: pydicom.Dataset, ts: str) -> None:
    """Compress ``ds``'s pixels to JPEG-LS lossless or JPEG lossless (16-bit patterns, as DICOM stores
    signed values in these codecs) and encapsulate them."""
    import imagecodecs
    from pydicom.encaps import encapsulate

    arr = ds.pixel_array
    bits = arr.view(np.uint16) if arr.dtype == np.int16 else arr
    frame = imagecodecs.jpegls_encode(bits) if ts == JPEG_LS_LOSSLESS else imagecodecs.ljpeg_encode(bits)
    ds.PixelData = encapsulate([bytes(frame)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = ts


def _save(ds: FileDataset, path: Path, ts: str) -> None:
    if ts in (JPEG_LS_LOSSLESS, JPEG_LOSSLESS):
        encapsulate_with_imagecodecs(ds, ts)
    elif ts not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        ds.compress(ts, generate_instance_uid=False)
    ds.save_as(path, enforce_file_format=True)


def write_nifti(
    path: Path, hu: np.ndarray, *, dz: float = 2.5, z0: float = -100.0, layout: str = "lps", ndim: int = 3
) -> Path:
    """Write the same volume as a NIfTI (same physical points as ``write_series`` with default geometry).

    layout: ``lps`` (i along +x LPS, i.e. towards the patient's left), ``ras`` (both in-plane axes
    reversed, as most converters write), ``swap`` (first axis along y), ``zflip`` (third axis head -> feet).
    """
    import nibabel as nib

    nz, ny, nx = hu.shape
    data = np.transpose(hu, (2, 1, 0))  # [i, j, k]
    lps = np.array([[SX, 0, 0, X0], [0, SY, 0, Y0], [0, 0, dz, z0], [0, 0, 0, 1]], dtype=np.float64)
    if layout == "ras":
        data = data[::-1, ::-1, :]
        lps[:, 0] *= -1
        lps[:, 1] *= -1
        lps[:3, 3] += [(nx - 1) * SX, (ny - 1) * SY, 0]
    elif layout == "swap":
        data = np.transpose(data, (1, 0, 2))
        lps[:, [0, 1]] = lps[:, [1, 0]]
    elif layout == "zflip":
        data = data[:, :, ::-1]
        lps[:3, 2] *= -1
        lps[2, 3] = z0 + (nz - 1) * dz
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    arr = np.ascontiguousarray(data)
    if ndim == 4:
        arr = arr[..., None]
    elif ndim == 2:
        arr = arr[:, :, 0]
    img = nib.Nifti1Image(arr, ras)
    img.header.set_qform(ras, code=1)
    img.header.set_sform(ras, code=1)
    nib.save(img, str(path))
    return path


def read_raw(path: Path) -> pydicom.Dataset:
    """Full dataset of one written file (for tests that edit a header)."""
    return pydicom.dcmread(path)
