"""Broken and awkward inputs (issue 6), each with the CLI exit code and a message fragment it must give.

``KINDS`` lists them; ``kind.build(tmp)`` writes the input under ``tmp`` and returns the path to pass (a scan,
or for ``target == "model"`` a model path, used with a good scan). Exit code 0 kinds must work; their
``fragment`` then appears in ``SeriesInfo.warnings`` (or is empty).
"""

from __future__ import annotations

import gzip
import os
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import JPEG2000Lossless, RLELossless, SecondaryCaptureImageStorage

from tests.dicom_factory import make_volume, write_nifti, write_series


@dataclass(frozen=True)
class Hostile:
    """One kind of hostile input."""

    name: str
    build: Callable[[Path], Path]
    exit_code: int
    """CLI exit code: 0 works, 3 scan unreadable/unusable, 4 model invalid."""
    fragment: str
    """Part of the one-line error (exit != 0) or of a SeriesInfo warning (exit 0; '' = no check)."""
    target: str = "scan"
    """``scan`` (the path is a scan) or ``model`` (the path is a model, used with a good scan)."""
    skip: Callable[[], str | None] = lambda: None
    """Returns a reason when this kind cannot be built here."""


def _vol(nz: int = 6) -> np.ndarray:
    return make_volume(nz=nz, ny=24, nx=32)


def _series(tmp: Path, nz: int = 6, **kw: object) -> Path:
    return write_series(tmp / "scan", _vol(nz), **kw).folder  # type: ignore[arg-type]


def _edit(folder: Path, fn: Callable[[pydicom.Dataset], None], which: slice = slice(None)) -> Path:
    """Apply ``fn`` to the datasets of the files in ``folder`` (sorted by name, ``which`` of them)."""
    for f in sorted(folder.iterdir())[which]:
        ds = pydicom.dcmread(f)
        fn(ds)
        ds.save_as(f)
    return folder


def _set(**values: object) -> Callable[[pydicom.Dataset], None]:
    def fn(ds: pydicom.Dataset) -> None:
        for k, v in values.items():
            if v is None:
                delattr(ds, k)
            else:
                setattr(ds, k, v)

    return fn


def empty_folder(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


def no_dicom(tmp: Path) -> Path:
    d = tmp / "docs"
    d.mkdir()
    (d / "readme.txt").write_text("hello")
    (d / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    (d / "DICM_but_short").write_bytes(b"DICM")
    return d


def zero_byte(tmp: Path) -> Path:
    d = tmp / "zero"
    d.mkdir()
    (d / "IM0001").write_bytes(b"")
    return d


def zero_byte_among_good(tmp: Path) -> Path:
    d = _series(tmp)
    (d / "IM_EMPTY").write_bytes(b"")
    return d


def single_slice(tmp: Path) -> Path:
    return _series(tmp, nz=1)


def localizer_only(tmp: Path) -> Path:
    return _series(tmp, nz=3, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))


def secondary_capture(tmp: Path) -> Path:
    return _series(tmp, sop_class=SecondaryCaptureImageStorage, image_type=("DERIVED", "SECONDARY"))


def two_equal_series(tmp: Path) -> Path:
    write_series(tmp / "study" / "a", _vol(8), seed=1)
    write_series(tmp / "study" / "b", _vol(8), seed=2)
    return tmp / "study"


def duplicated_slices(tmp: Path) -> Path:
    d = _series(tmp, nz=8)
    first = sorted(d.iterdir())[0]
    (d / "copy_of_first").write_bytes(first.read_bytes())
    return d


def small_gap(tmp: Path) -> Path:
    return _series(tmp, nz=8, z=[0, 2, 4, 6, 10, 12, 14, 16])


def large_gap(tmp: Path) -> Path:
    return _series(tmp, nz=8, z=[0, 2, 4, 6, 30, 32, 34, 36])


def uneven_spacing(tmp: Path) -> Path:
    return _series(tmp, nz=8, z=[0, 2, 4, 4.3, 6, 8, 10, 12])


def gantry_tilt(tmp: Path) -> Path:
    c, s = np.cos(np.radians(15)), np.sin(np.radians(15))
    return _series(tmp, iop=(1, 0, 0, 0, c, -s))


def sagittal(tmp: Path) -> Path:
    return _series(tmp, iop=(0, 1, 0, 0, 0, -1))


def coronal(tmp: Path) -> Path:
    return _series(tmp, iop=(1, 0, 0, 0, 0, -1))


def mixed_orientation(tmp: Path) -> Path:
    return _edit(_series(tmp), _set(ImageOrientationPatient=[-1, 0, 0, 0, 1, 0]), slice(0, 2))


def mixed_matrix(tmp: Path) -> Path:
    d = _series(tmp)
    write_series(
        d,
        make_volume(nz=2, ny=16, nx=16),
        uid=pydicom.dcmread(next(d.iterdir())).SeriesInstanceUID,
        z=[100.0, 102.0],
        seed=9,
    )
    return d


def missing_position(tmp: Path) -> Path:
    return _edit(_series(tmp), _set(ImagePositionPatient=None), slice(0, 1))


def missing_spacing(tmp: Path) -> Path:
    return _edit(_series(tmp), _set(PixelSpacing=None))


def multi_frame(tmp: Path) -> Path:
    return _edit(_series(tmp), _set(NumberOfFrames=2))


def mr_only(tmp: Path) -> Path:
    return _series(tmp, modality="MR")


def pet_only(tmp: Path) -> Path:
    return _series(tmp, modality="PT")


def one_bit(tmp: Path) -> Path:
    def fn(ds: pydicom.Dataset) -> None:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
        ds.PixelData = bytes(ds.Rows * ds.Columns // 8)

    return _edit(_series(tmp), fn)


def rgb(tmp: Path) -> Path:
    def fn(ds: pydicom.Dataset) -> None:
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = bytes(ds.Rows * ds.Columns * 3)

    return _edit(_series(tmp), fn)


def enormous_matrix(tmp: Path) -> Path:
    return _edit(_series(tmp), _set(Rows=60000, Columns=60000))


def short_pixel_data(tmp: Path) -> Path:
    def fn(ds: pydicom.Dataset) -> None:
        ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]

    return _edit(_series(tmp), fn, slice(0, 1))


def truncated_file(tmp: Path) -> Path:
    d = _series(tmp)
    f = sorted(d.iterdir())[2]
    f.write_bytes(f.read_bytes()[:-500])
    return d


def truncated_headers(tmp: Path) -> Path:
    d = _series(tmp)
    for f in d.iterdir():
        f.write_bytes(f.read_bytes()[:300])
    return d


def corrupt_jpeg2000(tmp: Path) -> Path:
    d = write_series(tmp / "scan", make_volume(nz=4, ny=32, nx=40), transfer_syntax=JPEG2000Lossless).folder

    def fn(ds: pydicom.Dataset) -> None:
        data = bytearray(ds.PixelData)
        start = data.find(b"\xff\x4f\xff\x51")  # J2K SOC + SIZ markers of the first fragment
        data[start : start + 40] = b"\x13" * 40
        ds.PixelData = bytes(data)

    return _edit(d, fn, slice(1, 2))


def unsupported_syntax(tmp: Path) -> Path:
    d = _series(tmp, transfer_syntax=RLELossless)

    def fn(ds: pydicom.Dataset) -> None:
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 video: no decoder

    return _edit(d, fn)


def unreadable_files(tmp: Path) -> Path:
    d = _series(tmp)
    for f in d.iterdir():
        f.chmod(0)
    return d


def _root_reason() -> str | None:
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return "running as root: file permissions do not stop root from reading"
    return None


def symlink_loop(tmp: Path) -> Path:
    d = _series(tmp)
    (d / "loop").symlink_to(d, target_is_directory=True)
    (d / "self").symlink_to(d / "self")
    (d / "dangling").symlink_to(tmp / "nowhere")
    return d


def fifo_in_folder(tmp: Path) -> Path:
    d = _series(tmp)
    os.mkfifo(d / "pipe")
    return d


def _no_fifo() -> str | None:
    return None if hasattr(os, "mkfifo") else "no FIFOs on this platform"


def nonexistent(tmp: Path) -> Path:
    return tmp / "no" / "such" / "scan"


def single_dicom_file(tmp: Path) -> Path:
    return sorted(_series(tmp).iterdir())[0]


def too_short_for_l3(tmp: Path) -> Path:
    return _series(tmp, nz=3, dz=2.0)


def nifti_broken_header(tmp: Path) -> Path:
    p = write_nifti(tmp / "ct.nii", _vol())
    data = bytearray(p.read_bytes())
    data[40:48] = struct.pack("<4h", 3, -5, 24, 6)  # dim: a negative size
    p.write_bytes(bytes(data))
    return p


def nifti_bad_magic(tmp: Path) -> Path:
    p = write_nifti(tmp / "ct.nii", _vol())
    data = bytearray(p.read_bytes())
    data[344:348] = b"xyz\0"
    p.write_bytes(bytes(data))
    return p


def nifti_truncated_gz(tmp: Path) -> Path:
    p = write_nifti(tmp / "ct.nii.gz", _vol())
    raw = gzip.decompress(p.read_bytes())
    p.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    return p


def nifti_4d(tmp: Path) -> Path:
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((16, 16, 4, 3), np.int16), np.eye(4)), tmp / "ct4d.nii.gz")
    return tmp / "ct4d.nii.gz"


def nifti_2d(tmp: Path) -> Path:
    return write_nifti(tmp / "ct2d.nii", _vol(), ndim=2)


def text_named_nifti(tmp: Path) -> Path:
    (tmp / "notes.nii").write_text("not an image")
    return tmp / "notes.nii"


def _zip(folder: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(folder.iterdir()):
            z.write(f, f"DICOM/{f.name}")
    return out


def zip_corrupt(tmp: Path) -> Path:
    (tmp / "study.zip").write_bytes(b"PK\x03\x04" + bytes(range(256)) * 3)  # a zip's start, then nothing
    return tmp / "study.zip"


def zip_without_dicom(tmp: Path) -> Path:
    with zipfile.ZipFile(tmp / "docs.zip", "w") as z:
        z.writestr("report.txt", "no images here")
    return tmp / "docs.zip"


def zip_damaged_member(tmp: Path) -> Path:
    out = _zip(_series(tmp), tmp / "study.zip")
    with zipfile.ZipFile(out) as z:
        info = z.infolist()[2]
    data = bytearray(out.read_bytes())
    end = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size
    for i in range(end - 200, end - 20):  # the deflate stream of one member is damaged
        data[i] ^= 0x5A
    out.write_bytes(bytes(data))
    return out


def hu_offset(tmp: Path) -> Path:
    vol = np.full((6, 24, 32), -1000, np.int16)
    vol[:, 6:18, 4:28] = 40
    vol[:, 10:14, 14:18] = 700
    return write_series(tmp / "scan", vol + 1000, intercept=0.0).folder  # HU + 1000 stored, intercept 0


def overlapping_acquisitions(tmp: Path) -> Path:
    uid = "1.2.826.0.1.3680043.8.498.77"
    write_series(tmp / "scan" / "a", _vol(10), z=[2.5 * k for k in range(10)], uid=uid, seed=1,
                 extra={"AcquisitionNumber": 1})  # fmt: skip
    write_series(tmp / "scan" / "b", _vol(10), z=[11.0 + 2.5 * k for k in range(10)], uid=uid, seed=2,
                 extra={"AcquisitionNumber": 2})  # fmt: skip
    return tmp / "scan"


def truncated_jpeg_frame(tmp: Path) -> Path:
    import imagecodecs
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    vol = np.full((6, 64, 64), -1000, np.int16)
    vol[:, 16:48, 8:56] = np.random.default_rng(0).integers(-100, 300, (32, 48))
    d = write_series(tmp / "scan", vol).folder
    for k, f in enumerate(sorted(d.iterdir())):
        ds = pydicom.dcmread(f)
        frame = imagecodecs.jpeg8_encode((ds.pixel_array.astype(np.int32) // 16).astype(np.uint8), level=95)
        if k == 3:  # the transfer of this slice was cut short
            sos = frame.find(b"\xff\xda")
            frame = frame[: sos + (len(frame) - sos) // 2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.RescaleSlope, ds.RescaleIntercept = 16, -1024
        ds.PixelData = encapsulate([bytes(frame)])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.save_as(f)
    return d


def model_not_ir(tmp: Path) -> Path:
    (tmp / "model.xml").write_text("this is not an OpenVINO IR")
    (tmp / "model.bin").write_bytes(b"\0" * 16)
    return tmp / "model.xml"


def model_onnx_path(tmp: Path) -> Path:
    (tmp / "model.onnx").write_bytes(b"\x08\x07")
    return tmp / "model.onnx"


def model_without_metadata(tmp: Path) -> Path:
    from tests.tiny_model import save_tiny_model

    return save_tiny_model(tmp / "nometa.xml", metadata=None)


KINDS: tuple[Hostile, ...] = (
    Hostile("empty_folder", empty_folder, 3, "the folder is empty"),
    Hostile("no_dicom_files", no_dicom, 3, "no DICOM image files found"),
    Hostile("zero_byte_file", zero_byte, 3, "no DICOM image files found"),
    Hostile("zero_byte_among_good", zero_byte_among_good, 0, ""),
    Hostile("single_slice", single_slice, 3, "single slice"),
    Hostile("localizer_only", localizer_only, 3, "localizer"),
    Hostile("secondary_capture", secondary_capture, 3, "secondary capture"),
    Hostile("mr_only", mr_only, 3, "modality MR"),
    Hostile("pet_only", pet_only, 3, "modality PT"),
    Hostile("two_equal_ct_series", two_equal_series, 0, "2 candidate series"),
    Hostile("duplicated_slices", duplicated_slices, 0, "repeat the position"),
    Hostile("small_gap", small_gap, 0, "missing slices"),
    Hostile("large_gap", large_gap, 3, "series is unusable: a gap of 24.0 mm"),
    Hostile("uneven_spacing", uneven_spacing, 3, "wildly uneven"),
    Hostile("gantry_tilt", gantry_tilt, 3, "gantry tilt 15.0 deg"),
    Hostile("sagittal_reformat", sagittal, 3, "sagittal/coronal"),
    Hostile("coronal_reformat", coronal, 3, "sagittal/coronal"),
    Hostile("mixed_orientation", mixed_orientation, 3, "different orientations"),
    Hostile("mixed_matrix_sizes", mixed_matrix, 3, "mixed matrix sizes"),
    Hostile("missing_image_position", missing_position, 3, "no valid ImagePositionPatient"),
    Hostile("missing_pixel_spacing", missing_spacing, 3, "no valid PixelSpacing"),
    Hostile("multi_frame", multi_frame, 3, "multi-frame"),
    Hostile("one_bit_pixels", one_bit, 3, "1-bit pixels"),
    Hostile("rgb_pixels", rgb, 3, "colour image"),
    Hostile("enormous_rows_columns", enormous_matrix, 3, "implausible slice matrix 60000x60000"),
    Hostile("pixel_data_short", short_pixel_data, 3, "shorter than Rows x Columns"),
    Hostile("truncated_file", truncated_file, 3, "truncated"),
    Hostile("truncated_headers", truncated_headers, 3, "no DICOM image files found"),
    Hostile("corrupt_jpeg2000", corrupt_jpeg2000, 3, "cannot decode JPEG 2000"),
    Hostile("unsupported_transfer_syntax", unsupported_syntax, 3, "MPEG2"),
    Hostile("unreadable_files", unreadable_files, 3, "no DICOM image files found", skip=_root_reason),
    Hostile("symlink_loop", symlink_loop, 0, ""),
    Hostile("fifo_in_folder", fifo_in_folder, 0, "", skip=_no_fifo),
    Hostile("nonexistent_path", nonexistent, 3, "does not exist"),
    Hostile("single_dicom_file", single_dicom_file, 3, "give the folder"),
    Hostile("too_short_for_l3", too_short_for_l3, 0, ""),
    Hostile("nifti_broken_header", nifti_broken_header, 3, "the header is damaged"),
    Hostile("nifti_bad_magic", nifti_bad_magic, 3, "not a readable NIfTI"),
    Hostile("nifti_truncated", nifti_truncated_gz, 3, "NIfTI"),
    Hostile("nifti_4d", nifti_4d, 3, "4D"),
    Hostile("nifti_2d", nifti_2d, 3, "2D"),
    Hostile("text_named_nii", text_named_nifti, 3, "not a readable NIfTI"),
    Hostile("zip_corrupt", zip_corrupt, 3, "not a readable zip archive"),
    Hostile("zip_without_dicom", zip_without_dicom, 3, "no DICOM image files found"),
    Hostile("zip_damaged_member", zip_damaged_member, 0, "damaged DICOM files were skipped"),
    Hostile("hu_offset_by_1000", hu_offset, 3, "not Hounsfield units"),
    Hostile("overlapping_acquisitions", overlapping_acquisitions, 0, "acquisitions that overlap in z"),
    Hostile("truncated_jpeg_frame", truncated_jpeg_frame, 0, "ends without its end marker"),
    Hostile("model_not_ir", model_not_ir, 4, "not an OpenVINO IR", target="model"),
    Hostile("model_onnx", model_onnx_path, 4, "not an OpenVINO IR", target="model"),
    Hostile("model_without_metadata", model_without_metadata, 4, "no l3edge metadata", target="model"),
)
