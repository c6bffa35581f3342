"""Decoding on every core: each codec gives pydicom's pixels, parallel equals serial, a zip reads like its
folder, decoder warnings reach the scan's warnings, values that are not HU are refused."""

from __future__ import annotations

import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import pixel_array
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)

from l3edge import dicom_decode
from l3edge.dicom_header import read_header
from l3edge.errors import InputError
from l3edge.hucheck import air_level, check_hu
from l3edge.orientation import in_plane
from l3edge.scan import open_scan, read_axial_slice, read_projection
from l3edge.sources import Source
from tests.dicom_factory import JPEG_LOSSLESS, JPEG_LS_LOSSLESS, expected_mip, make_volume, write_series

LOSSLESS = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless, JPEG2000Lossless]
LOSSLESS += [JPEG_LS_LOSSLESS, JPEG_LOSSLESS]
LAYOUTS = {
    # stored = HU: negative values, signed 16-bit
    "signed": dict(intercept=0.0),
    # stored = HU + 1024 in 12 unsigned bits (the commonest CT layout)
    "unsigned12": dict(intercept=-1024.0, extra={"PixelRepresentation": 0, "BitsStored": 12, "HighBit": 11}),
}
PETCT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real_dev" / "petct_two_series_l3"


def _no_pydicom(*a: object, **k: object) -> None:
    raise AssertionError("the fast path fell back to pydicom")


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("ts", LOSSLESS)
def test_each_codec_gives_pydicoms_pixels(
    tmp_path: Path, ts: str, layout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = write_series(
        tmp_path / "s", make_volume(nz=3, ny=32, nx=40), transfer_syntax=ts, **LAYOUTS[layout]
    )
    monkeypatch.setattr(dicom_decode, "_decode_pydicom", _no_pydicom)  # imagecodecs or numpy, nothing else
    for f in spec.files:
        h = read_header(f)
        assert h is not None and h.encapsulated == (
            ts not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
        )
        px, notes = dicom_decode.read_pixels(h)
        ref = pixel_array(str(f))
        assert px.dtype == ref.dtype and notes == []
        np.testing.assert_array_equal(px, ref)
    np.testing.assert_array_equal(read_projection(tmp_path / "s").mip_hu, expected_mip(spec.hu))


@pytest.mark.parametrize("ts", [JPEG2000Lossless, JPEG_LS_LOSSLESS, RLELossless, ExplicitVRLittleEndian])
def test_parallel_decode_equals_serial(tmp_path: Path, ts: str) -> None:
    spec = write_series(tmp_path / "s", make_volume(nz=30, ny=32, nx=40), transfer_syntax=ts, intercept=0.0)
    scan = open_scan(tmp_path / "s")
    from l3edge.dicom import open_scan as open_dicom

    ds = open_dicom(tmp_path / "s")
    stack = ds.parts[0].stack
    geo = in_plane(stack.col_dir, stack.row_dir)
    serial = dicom_decode.read_rows(stack.headers, ds.source, geo, threads=1)
    for threads in (2, 5):
        parallel = dicom_decode.read_rows(stack.headers, ds.source, geo, threads=threads)
        np.testing.assert_array_equal(parallel.mip_hu, serial.mip_hu)
        np.testing.assert_array_equal(parallel.air_samples, serial.air_samples)
    np.testing.assert_array_equal(serial.mip_hu, expected_mip(spec.hu))
    scan.close()
    ds.close()


@pytest.mark.skipif(not PETCT.is_dir(), reason=f"{PETCT} not present (only in the project's workplace)")
def test_real_jpeg2000_parallel_equals_pydicom() -> None:
    one = read_projection(PETCT, threads=2)
    files = one.series.slice_files
    for row in (0, 37, len(files) - 1):  # pydicom's own decode of a few slices (20 ms each)
        ds = pydicom.dcmread(files[row])
        hu = pixel_array(ds).astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(one.mip_hu[row], hu.max(axis=0).astype(np.float32))


def _zip(folder: Path, out: Path, compression: int) -> Path:
    with zipfile.ZipFile(out, "w", compression=compression) as z:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                z.write(f, Path("STUDY") / f.relative_to(folder))
    return out


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, JPEG2000Lossless])
def test_zip_reads_like_its_folder(tmp_path: Path, ts: str, compression: int) -> None:
    spec = write_series(tmp_path / "study" / "ct", make_volume(nz=8, ny=32, nx=40), transfer_syntax=ts)
    (tmp_path / "study" / "notes.txt").write_text("not dicom")
    archive = _zip(tmp_path / "study", tmp_path / "study.zip", compression)
    shutil.rmtree(tmp_path / "study" / "ct")  # nothing unpacked: the folder is gone
    zp = read_projection(archive)
    np.testing.assert_array_equal(zp.mip_hu, expected_mip(spec.hu))
    np.testing.assert_allclose(zp.z_mm, spec.z[::-1])
    assert zp.series.archive == archive and zp.series.sop_instance_uids == tuple(reversed(spec.sop_uids))
    assert all(archive in f.parents for f in zp.series.slice_files)
    np.testing.assert_array_equal(read_axial_slice(zp.series, 2), spec.hu[-3].astype(np.float32))
    named = tmp_path / "study.bin"  # a zip is recognised by its bytes, not its name
    shutil.copy(archive, named)
    np.testing.assert_array_equal(read_projection(named).mip_hu, zp.mip_hu)


def test_broken_zip_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "study.zip"
    bad.write_bytes(b"PK\x03\x04" + bytes(300))
    with pytest.raises(InputError, match="not a readable zip archive"):
        read_projection(bad)


def _warn_then(real):  # noqa: ANN001, ANN202
    def decode(*a, **k):  # noqa: ANN002, ANN003, ANN202
        warnings.warn("J2K stream damaged: tile 3 truncated", UserWarning, stacklevel=1)
        return real(*a, **k)

    return decode


def test_decoder_warning_becomes_a_scan_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import imagecodecs

    write_series(tmp_path / "s", make_volume(nz=6, ny=32, nx=40), transfer_syntax=JPEG2000Lossless)
    monkeypatch.setattr(imagecodecs, "jpeg2k_decode", _warn_then(imagecodecs.jpeg2k_decode))
    for threads in (1, 3):  # warnings raised in worker threads are kept too
        proj = read_projection(tmp_path / "s", threads=threads)
        (w,) = proj.series.warnings
        assert w.startswith("6 slices: J2K stream damaged: tile 3 truncated (first: ")


def _jpeg_baseline_series(folder: Path, truncate: int | None) -> Path:
    """An 8-bit JPEG baseline series (stored = (HU + 1024) / 16); slice ``truncate`` loses the second half of
    its entropy-coded data (as a transfer cut short would)."""
    import imagecodecs
    from pydicom.encaps import encapsulate

    vol = np.full((5, 64, 64), -1000, np.int16)
    vol[:, 16:48, 8:56] = np.random.default_rng(0).integers(-100, 300, (32, 48))
    spec = write_series(folder, vol)
    for k, f in enumerate(spec.files):
        ds = pydicom.dcmread(f)
        px = (ds.pixel_array.astype(np.int32) // 16).astype(np.uint8)  # stored = HU + 1024
        frame = imagecodecs.jpeg8_encode(px, level=95)
        if k == truncate:
            sos = frame.find(b"\xff\xda")
            frame = frame[: sos + (len(frame) - sos) // 2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.RescaleSlope, ds.RescaleIntercept = 16, -1024
        ds.PixelData = encapsulate([bytes(frame)])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.save_as(f)
    return folder


def test_truncated_jpeg_frame_decodes_with_a_warning(tmp_path: Path) -> None:
    ok = read_projection(_jpeg_baseline_series(tmp_path / "ok", None))
    assert ok.series.warnings == ()
    proj = read_projection(_jpeg_baseline_series(tmp_path / "cut", 2))
    (w,) = proj.series.warnings
    assert w.startswith("1 slice: compressed frame ends without its end marker")


def _body_volume(offset: float = 0.0, air: bool = True) -> np.ndarray:
    vol = np.full((6, 40, 48), -1000 if air else 40, np.float64)
    vol[:, 8:32, 6:42] = 40
    vol[:, 14:20, 20:28] = 700  # a vertebra
    return (vol + offset).astype(np.int16)


def test_values_that_are_not_hu_are_refused(tmp_path: Path) -> None:
    good = write_series(tmp_path / "good", _body_volume(), intercept=0.0).folder
    assert read_projection(good).n_slices == 6
    offset = write_series(tmp_path / "offset", _body_volume(1000.0), intercept=0.0).folder
    with pytest.raises(InputError, match="not Hounsfield units: air reads about 0 HU"):
        read_projection(offset)
    tight = write_series(tmp_path / "tight", _body_volume(air=False), intercept=0.0).folder
    assert read_projection(tight).n_slices == 6  # no air at all, but soft tissue reads as HU: accepted


def test_air_level_ignores_padding() -> None:
    values = np.concatenate([np.full(500, -3024.0), np.full(300, -1000.0), np.full(5000, 40.0)])
    assert air_level(values) == pytest.approx((-1000.0, 40.0))
    assert air_level(np.full(10, 40.0)) is None  # too few pixels to judge
    check_hu("x", values)
    with pytest.raises(InputError):
        check_hu("x", values + 1000.0)


def test_headers_of_a_zip_member_and_a_folder_file_agree(tmp_path: Path) -> None:
    spec = write_series(tmp_path / "s", make_volume(nz=2), transfer_syntax=RLELossless)
    archive = _zip(tmp_path / "s", tmp_path / "s.zip", zipfile.ZIP_DEFLATED)
    src = Source.open(archive)
    files, skipped = src.files()
    assert skipped == 0 and len(files) == 2
    member = next(f for f in files if f.name == spec.files[0].name)
    hz, hf = read_header(member, src), read_header(spec.files[0])
    assert hz is not None and hf is not None
    assert (hz.pixel_offset, hz.encapsulated, hz.sop_uid) == (hf.pixel_offset, hf.encapsulated, hf.sop_uid)
    np.testing.assert_array_equal(dicom_decode.read_pixels(hz, src)[0], dicom_decode.read_pixels(hf)[0])
    src.close()


@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, RLELossless])
def test_unused_high_bits_are_masked_as_pydicom_does(tmp_path: Path, ts: str) -> None:
    spec = write_series(tmp_path / "s", make_volume(nz=3, ny=32, nx=40), **LAYOUTS["unsigned12"])
    for f in spec.files[:2]:  # garbage in the 4 unused high bits of some pixels (allowed by the standard)
        ds = pydicom.dcmread(f)
        px = ds.pixel_array.copy()
        px[::3, ::5] |= 0xF000
        if ts == RLELossless:
            ds.BitsStored = 16  # so that the encoder keeps the high bits; then declare 12 again
            ds.compress(RLELossless, px, generate_instance_uid=False)
            ds.BitsStored = 12
        else:
            ds.PixelData = px.tobytes()
        ds.save_as(f)
    expect = np.stack([pixel_array(str(f)) for f in spec.files])  # pydicom masks to BitsStored
    assert expect.max() < 4096
    proj = read_projection(tmp_path / "s")
    np.testing.assert_array_equal(proj.mip_hu, expected_mip(spec.hu))


def _headers_both_ways(files: list[Path], monkeypatch: pytest.MonkeyPatch) -> tuple[list, list]:
    from l3edge import dicom_header

    fast = [read_header(f) for f in files]
    with monkeypatch.context() as m:  # pydicom's own value conversion for every element
        m.setattr(dicom_header, "_get", lambda ds, keyword: ds.get(keyword))
        slow = [read_header(f) for f in files]
    return fast, slow


@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless])
def test_raw_header_values_equal_pydicoms(tmp_path: Path, ts: str, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = {"ConvolutionKernel": ["Br40d", "3"], "SeriesDescription": "ABD PV 3mm ", "AcquisitionNumber": 2}
    spec = write_series(tmp_path / "s", make_volume(nz=3, ny=32, nx=40), transfer_syntax=ts, extra=extra)
    fast, slow = _headers_both_ways(spec.files, monkeypatch)
    assert fast == slow and fast[0].kernel == "Br40d\\3" and fast[0].acquisition_number == 2
    assert fast[0].series_description == "ABD PV 3mm" and fast[0].spacing == (0.8, 0.75)


@pytest.mark.skipif(not PETCT.is_dir(), reason=f"{PETCT} not present (only in the project's workplace)")
def test_raw_header_values_equal_pydicoms_on_real_files(monkeypatch: pytest.MonkeyPatch) -> None:
    files = sorted(PETCT.iterdir())[::25]
    fast, slow = _headers_both_ways(files, monkeypatch)
    assert fast == slow and all(h is not None and h.rows == 512 for h in fast)
