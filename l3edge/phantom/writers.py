"""Write a phantom as a DICOM series (CT Image Storage) or a NIfTI volume, plus ``truth.json``.

DICOM geometry: ImagePositionPatient is the centre of pixel (row 0, col 0) in LPS; ImageOrientationPatient
[1,0,0,0,1,0] (rows run along +x = patient left, columns along +y = posterior); head first supine.
NIfTI geometry: RAS+ affine (x and y negated from LPS), so the same point has the same z in both formats; the
volume is streamed slice by slice (NIfTI stores the first axis fastest, so each C-order [row, col] slice is
one contiguous block).
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from l3edge.errors import UsageError
from l3edge.phantom.anatomy import Truth, build_anatomy
from l3edge.phantom.config import PhantomConfig
from l3edge.phantom.render import render_slice
from l3edge.phantom.sampling import sample_config

_SYNTAX = {
    "explicit": "1.2.840.10008.1.2.1",
    "implicit": "1.2.840.10008.1.2",
    "rle": "1.2.840.10008.1.2.5",
    "jpeg2000": "1.2.840.10008.1.2.4.90",
    "jpegls": "1.2.840.10008.1.2.4.80",
}
_DICOM_OPTS = {"transfer_syntax", "shuffle_names", "extensionless", "instance_order", "signed"}


def _uid(seed: int, what: str) -> Any:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[f"l3edge-phantom-{seed}-{what}"])


def _name(seed: int, i: int, shuffle: bool, ext: str) -> str:
    if shuffle:
        return hashlib.sha1(f"{seed}-{i}".encode()).hexdigest()[:16].upper() + ext
    return f"IM{i + 1:05d}{ext}"


def _dataset(cfg: PhantomConfig, z: float, inst: int, uids: dict[str, str], signed: bool) -> Any:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    sop = _uid(cfg.seed, f"sop-{inst}")
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uids["study"], uids["series"]
    ds.FrameOfReferenceUID = uids["frame"]
    ds.Modality, ds.ImageType = "CT", ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PatientName, ds.PatientID = "PHANTOM^ANON", f"PHANTOM{cfg.seed:06d}"
    ds.PatientBirthDate, ds.PatientSex, ds.StudyDate, ds.StudyTime = "", "O", "20000101", "120000"
    ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
    ds.Manufacturer, ds.SeriesDescription = "l3edge phantom", f"PHANTOM {cfg.region.upper()}"
    ds.SeriesNumber, ds.InstanceNumber, ds.AcquisitionNumber = 2, inst, 1
    ds.PatientPosition, ds.BodyPartExamined = "HFS", "ABDOMEN"
    ds.KVP, ds.ConvolutionKernel = "120", "B30f"
    half = (cfg.matrix - 1) / 2 * cfg.pixel_spacing_mm
    ds.ImagePositionPatient = [f"{-half:.4f}", f"{-half:.4f}", f"{z:.4f}"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = f"{z:.4f}"
    ds.PixelSpacing = [f"{cfg.pixel_spacing_mm:.6f}", f"{cfg.pixel_spacing_mm:.6f}"]
    ds.SliceThickness = f"{cfg.slice_thickness_mm:g}"
    ds.SpacingBetweenSlices = f"{cfg.slice_spacing_mm:g}"
    ds.Rows = ds.Columns = cfg.matrix
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16 if signed else 12, 15 if signed else 11
    ds.PixelRepresentation = 1 if signed else 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = ("0" if signed else "-1024"), "1", "HU"
    ds.WindowCenter, ds.WindowWidth = "40", "400"
    return ds


def _encapsulate_jpegls(ds: Any, arr: np.ndarray) -> None:
    """JPEG-LS lossless (pydicom has no JPEG-LS encoder without extra plugins; imagecodecs has CharLS).
    JPEG-LS knows no sign: signed values are stored as their 16-bit two's complement bit patterns."""
    import imagecodecs
    from pydicom.encaps import encapsulate

    frame = imagecodecs.jpegls_encode(arr.view(np.uint16) if arr.dtype == np.int16 else arr)
    ds.PixelData = encapsulate([bytes(frame)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = _SYNTAX["jpegls"]


def write_dicom(
    config: PhantomConfig,
    out_dir: Path,
    transfer_syntax: str = "explicit",
    shuffle_names: bool = False,
    extensionless: bool = False,
    instance_order: str = "head",
    signed: bool = False,
) -> list[Path]:
    """Write one file per slice. Unsigned: stored = HU + 1024 (12 bits, clipped to [-1024, 3071] HU); signed:
    stored = HU (int16, padding -2048 outside the field of view)."""
    if transfer_syntax not in _SYNTAX:
        raise UsageError(f"unknown transfer_syntax {transfer_syntax!r}; use one of {', '.join(_SYNTAX)}")
    if instance_order not in ("head", "feet"):
        raise UsageError("instance_order must be 'head' or 'feet'")
    anat = build_anatomy(config)
    uids = {k: _uid(config.seed, k) for k in ("study", "series", "frame")}
    n = anat.slice_z.size
    paths = []
    ext = "" if extensionless else ".dcm"
    for i, z in enumerate(anat.slice_z):
        img = render_slice(anat, float(z), i)
        inst = i + 1 if instance_order == "head" else n - i
        ds = _dataset(config, float(z), inst, uids, signed)
        if signed:
            arr = np.clip(np.rint(img), -2048, 32767).astype(np.int16)
            arr[img == -1024.0] = -2048  # outside the reconstruction circle (render sets exactly -1024)
            ds.PixelPaddingValue = -2048
        else:
            arr = (np.clip(np.rint(img), -1024, 3071) + 1024).astype(np.uint16)
        ds.PixelData = arr.tobytes()
        ds["PixelData"].VR = "OW"
        if transfer_syntax == "implicit":
            ds.file_meta.TransferSyntaxUID = _SYNTAX["implicit"]
        elif transfer_syntax in ("rle", "jpeg2000"):
            ds.compress(_SYNTAX[transfer_syntax], arr)
        elif transfer_syntax == "jpegls":
            _encapsulate_jpegls(ds, arr)
        path = out_dir / _name(config.seed, inst - 1, shuffle_names, ext)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_nifti(config: PhantomConfig, path: Path) -> Path:
    """Stream the volume to ``path`` (.nii or .nii.gz), int16 HU, slices along the third axis z ascending."""
    import nibabel as nib

    anat = build_anatomy(config)
    c, zs = config, anat.slice_z[::-1]  # z ascending (feet -> head)
    half = (c.matrix - 1) / 2 * c.pixel_spacing_mm
    ps = c.pixel_spacing_mm
    # voxel (i = col, j = row, k) -> LPS (-half + i ps, -half + j ps, z_k) -> RAS: negate x and y.
    dz = float(zs[1] - zs[0]) if zs.size > 1 else c.slice_spacing_mm
    affine = np.array(
        [[-ps, 0, 0, half], [0, -ps, 0, half], [0, 0, dz, zs[0]], [0, 0, 0, 1]], dtype=np.float64
    )
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((c.matrix, c.matrix, zs.size))
    hdr.set_data_dtype(np.int16)
    hdr.set_qform(affine, code=1)
    hdr.set_sform(affine, code=1)
    hdr.set_xyzt_units("mm")
    hdr["vox_offset"] = 352
    hdr.set_slope_inter(1.0, 0.0)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(hdr.binaryblock)
        f.write(b"\x00" * 4)
        n = zs.size
        for k, z in enumerate(zs):
            img = render_slice(anat, float(z), n - 1 - k)  # same index (hence noise) as the DICOM slice
            f.write(np.clip(np.rint(img), -1024, 32767).astype("<i2").tobytes())
    return path


def write_phantom(
    out_dir: str | Path, seed: int, fmt: str = "dicom", region: str | None = None, **options: Any
) -> Truth:
    """Write phantom ``seed`` to ``out_dir`` (a DICOM series, or ``phantom.nii.gz`` for ``fmt='nifti'``)
    and its
    ``truth.json``. Options: any PhantomConfig field (e.g. ``matrix=128, pixel_spacing_mm=3.2``) and, for
    DICOM, ``transfer_syntax`` ('explicit', 'implicit', 'rle', 'jpeg2000', 'jpegls'), ``shuffle_names``,
    ``extensionless``, ``instance_order`` ('head' | 'feet'), ``signed``. ``config=`` passes a ready config."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dicom_opts = {k: options.pop(k) for k in list(options) if k in _DICOM_OPTS}
    cfg = options.pop("config", None)
    config = cfg.with_overrides(**options) if cfg is not None else sample_config(seed, region, **options)
    if fmt == "dicom":
        write_dicom(config, out, **dicom_opts)
    elif fmt == "nifti":
        if dicom_opts:
            raise UsageError(f"DICOM-only options for NIfTI output: {', '.join(sorted(dicom_opts))}")
        write_nifti(config, out / "phantom.nii.gz")
    else:
        raise UsageError(f"unknown phantom format {fmt!r}; use 'dicom' or 'nifti'")
    truth = build_anatomy(config).truth()
    (out / "truth.json").write_text(json.dumps(truth.to_dict(), indent=1))
    return truth
